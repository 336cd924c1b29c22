// What a teach job said, in the words of the person teaching: its held-out results and
// warnings (a list, not one run-on sentence), the pictures the server refused, and failures
// that named the page's internal example catalog.
import { bdi, isolate } from "./bidi.js";
import { h } from "./dom.js";
import { pct, rate } from "./format.js";

const FEW = /^class (['"])(.*)\1 has only (\d+) examples?; (\d+)\+ per class give steadier results\.?$/;

const sentence = (s) => {
  const t = String(s).trim();
  return t ? t.charAt(0).toUpperCase() + t.slice(1) + (/[.!?]$/.test(t) ? "" : ".") : t;
};

// The job's warnings, one line each; "class 'a' has only 6 examples; 10+ per class give
// steadier results" once per class becomes one line naming them all.
export function mergeWarnings(warnings) {
  const few = [];
  let per = 10;
  const out = [];
  for (const w of warnings || []) {
    const m = FEW.exec(String(w).trim());
    if (m) {
      few.push(`“${m[2]}” (${m[3]})`);
      per = Number(m[4]);
    } else {
      out.push(sentence(w));
    }
  }
  if (few.length) {
    const which = few.length === 1 ? `Class ${few[0]} has` : `Classes ${few.join(", ")} have`;
    out.unshift(`${which} fewer than ${per} pictures; ${per} or more per class give steadier results.`);
  }
  return out;
}

// "a.png (damaged or truncated), b.png (too small: 4×4 pixels)"
// At most the first ten are named: 200 refused files made an error as long as the page.
const SHOWN = 10;
const capped = (items) => items.length <= SHOWN
  ? items.join(", ")
  : `${items.slice(0, SHOWN).join(", ")} and ${items.length - SHOWN} more`;
export const refusedText = (files) => capped(files.map((f) => `${f.name} (${f.reason})`));

// Classes left with fewer than two pictures the server took -> a problem in the person's
// terms ("Class “junk” has no usable pictures: a.png (truncated), ..."), or null.
export function unusableClasses(classes, refusedOf) {
  const lines = [];
  for (const cls of classes) {
    const usable = cls.files.length;
    if (usable >= 2) continue;
    const refused = refusedOf(cls);
    const label = cls.label.trim();
    const have = usable ? `only 1 usable picture (2 are needed)` : "no usable pictures";
    lines.push(`Class “${label}” has ${have}` + (refused.length ? `: the server refused ${refusedText(refused)}.` : "."));
  }
  if (!lines.length) return null;
  return { own: true, title: "Not enough usable pictures", detail: `${lines.join(" ")} Add other pictures of ${lines.length === 1 ? "that class" : "those classes"} and train again.` };
}

// A failed job or request, said without the page's example catalog ("'teach-x' has 1
// labelled class(es)...") and with the pictures the server refused, if any.
export function teachProblem(problem, refused) {
  if (problem && problem.own) return problem; // the page's own words already
  const p = { ...(problem || { status: 0 }) };
  const slug = String(p.type || "").split("/").pop();
  if (slug === "not-enough-examples") {
    p.title = "Not enough pictures to teach";
    p.detail = "Teaching needs at least two classes with two or more different pictures each (copies of one picture count once).";
  } else if (typeof p.detail === "string") {
    p.detail = p.detail.replace(/(?:catalog )?'teach-[a-z0-9_-]+'/g, "the example pictures");
  }
  if (refused.length && p.status !== 0 && p.status !== 401) {
    p.detail = `${p.detail || p.title || ""} The server refused ${refusedText(refused)}.`.trim();
  }
  return p;
}

export function renderResults(container, job, refused, onTry) {
  const r = job.result;
  const m = r.metrics;
  const n = m.n_samples;
  const right = Math.round(m.accuracy * n);
  const how = m.split === "holdout"
    ? "pictures set aside before training"
    : "pictures: each was judged by a model trained without it (cross-validation)";
  const table = h("table", { class: "teach-confusion", "aria-describedby": "teach-caption" },
    h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "true \\ said"), ...m.labels.map((l) => h("th", { scope: "col" }, l)))),
    h("tbody", {}, ...m.confusion.map((row, i) => h("tr", {},
      h("th", { scope: "row" }, m.labels[i]),
      ...row.map((v, j) => h("td", { class: i === j ? "diag" : v ? "off" : "" }, String(v)))))));
  const warnings = mergeWarnings(job.warnings);
  // Labels and file names in these sentences (the page's and the server's) are isolated.
  const names = [...m.labels, ...refused.flatMap((f) => [f.label, f.name])];
  if (refused.length) {
    const k = refused.length;
    warnings.push(`Left out ${k} picture${k === 1 ? "" : "s"} the server could not use: ${capped(refused.map((f) => `${f.name} (${f.label}: ${f.reason})`))}.`);
  }
  container.replaceChildren(
    h("h3", { class: "teach-results-title" }, `${r.model} v${r.version} is ready`),
    h("p", { class: "teach-headline" }, `Right on ${right} of ${n} (${rate(m.accuracy)}) held-out ${how}.`),
    h("ul", { class: "teach-summary" }, ...r.summary.map((s) => h("li", {}, ...isolate(`${s}.`, m.labels)))),
    ...(m.threshold != null && m.positive_label != null
      ? [h("p", { class: "teach-decision" }, "A yes/no model: it says “", bdi(m.positive_label),
        `” when that score reaches ${pct(m.threshold)}, else “`, bdi(m.labels.find((l) => l !== m.positive_label)), "”.")]
      : []),
    ...(warnings.length
      ? [h("ul", { class: "teach-warn", "aria-label": "Warnings" }, ...warnings.map((w) => h("li", {}, ...isolate(w, names))))]
      : []),
    h("p", { class: "teach-caption", id: "teach-caption" }, "Confusion matrix: rows are the true class, columns what the model said."),
    h("div", { class: "teach-table-wrap" }, table),
    h("button", { type: "button", class: "btn btn-primary teach-try", onclick: () => onTry(r.model) }, `Try ${r.model}`),
  );
}
