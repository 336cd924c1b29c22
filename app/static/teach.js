// Teach flow: name a model, add classes, drop/paste/snap pictures into each, train on this server
// (POST /v1/catalogs/{c}/train), follow the job, show held-out results in plain words, try it.
// Talks only to this server's /v1 API. The new model appears in the page's model list
// (app.js listens for "imgclass:model-taught").
import { askForKey } from "./auth.js";
import { problemMessage, readProblem } from "./problems.js";
import { ACCEPTED_TEXT, sniffFile } from "./sniff.js";
import { pct } from "./format.js";

const NAME_RE = /^[a-z0-9][a-z0-9_-]{0,63}$/;
const UPLOAD_BATCH = 8;
// The job this tab started, kept across a reload (the job itself lives on the server).
const JOB_KEY = "imgclass.teach.job";
const $ = (sel, root = document) => root.querySelector(sel);

function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v !== false && v !== undefined && v !== null) node.setAttribute(k, v === true ? "" : v);
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

const state = { classes: [], active: null, nextId: 1, busy: false, skipped: [] };
let root;
let ui;

function classCard(cls) {
  const count = h("span", { class: "teach-count", "aria-live": "polite" }, "0 pictures");
  const thumbs = h("ul", { class: "teach-thumbs" });
  // Files that are not pictures: listed with the reason, never counted nor sent.
  const issueList = h("ul", { class: "teach-issues-list" });
  const issueCount = h("span", { class: "teach-issues-count" });
  const issues = h("div", { class: "teach-issues", "aria-live": "polite", hidden: true },
    h("div", { class: "teach-issues-head" }, issueCount, h("button", {
      type: "button", class: "btn btn-ghost btn-small teach-issues-dismiss",
      "aria-label": "Dismiss the list of files left out", onclick: () => dismissIssues(cls),
    }, "Dismiss")),
    issueList,
    h("p", { class: "teach-issues-note" }, `Accepted: ${ACCEPTED_TEXT}.`));
  const picker = h("input", { type: "file", accept: "image/*", multiple: true, class: "visually-hidden", tabindex: "-1" });
  const name = h("input", {
    class: "teach-class-name", type: "text", value: cls.label, "aria-label": "Class name",
    // Short enough for the narrowest card (about 110 px of text beside "Remove" on a desktop).
    placeholder: "Class name", title: "Class name, e.g. Santa", maxlength: "60",
    // Names typed after the pictures were added must enable Train too (refresh), not only
    // names typed first.
    oninput: (e) => { cls.label = e.target.value; refresh(); },
  });
  const add = h("button", { type: "button", class: "btn btn-small teach-add", onclick: () => picker.click() }, "Add pictures");
  const remove = h("button", {
    type: "button", class: "btn btn-ghost btn-small teach-remove", "aria-label": "Remove this class",
    onclick: () => removeClass(cls),
  }, "Remove");
  const card = h("li", { class: "teach-class", tabindex: "-1" },
    h("div", { class: "teach-class-head" }, name, remove),
    h("div", { class: "teach-drop", onclick: () => picker.click() },
      // Touch screens cannot drop or paste (as the page's own drop zone says "Choose photos").
      h("span", { class: "only-fine" }, "Drop, paste or "), h("span", { class: "only-touch" }, "Tap to "),
      h("span", { class: "linkish" }, "choose"), h("span", {}, " pictures of this class")),
    thumbs,
    issues,
    h("div", { class: "teach-class-foot" }, count, add),
    picker);
  picker.addEventListener("change", () => { addFiles(cls, picker.files); picker.value = ""; });
  card.addEventListener("focusin", () => { state.active = cls; });
  card.addEventListener("pointerdown", () => { state.active = cls; });
  card.addEventListener("dragover", (e) => { e.preventDefault(); e.stopPropagation(); card.classList.add("is-over"); });
  card.addEventListener("dragleave", () => card.classList.remove("is-over"));
  card.addEventListener("drop", (e) => {
    e.preventDefault();
    e.stopPropagation(); // the page's own drop handler classifies; this one teaches
    card.classList.remove("is-over");
    state.active = cls;
    addFiles(cls, e.dataTransfer.files);
  });
  Object.assign(cls, { card, thumbs, issues, issueList, issueCount, count, nameInput: name, remove, add });
  return card;
}

function addClass(label = "") {
  const cls = { id: state.nextId++, label, files: [], rejected: [], checking: 0 };
  state.classes.push(cls);
  ui.classes.append(classCard(cls));
  refresh();
  return cls;
}

function removeClass(cls) {
  for (const f of cls.files) URL.revokeObjectURL(f.url);
  state.classes = state.classes.filter((c) => c !== cls);
  cls.card.remove();
  refresh();
}

// Each file is checked by its first bytes, as the server checks it (sniff.js): a PDF named
// .png or a text file is listed at once as not an image and is neither counted nor sent. A file
// that looks like an image is counted and sent; the server still decodes it and reports the
// ones it cannot read after training. One this browser cannot show (a TIFF, a damaged file)
// gets a "no preview" tile instead of a broken image.
async function addFiles(cls, list) {
  const files = Array.from(list || []);
  if (!files.length) return;
  cls.checking += files.length;
  refresh();
  const checked = await Promise.all(files.map((file) => sniffFile(file)));
  cls.checking -= files.length;
  if (!state.classes.includes(cls)) return; // removed meanwhile
  files.forEach((file, i) => {
    const { format, reason } = checked[i];
    const name = file.name || "a pasted file";
    if (!format) {
      cls.rejected.push(name);
      cls.issueList.append(h("li", { class: "teach-issue" }, h("strong", {}, name), `: ${reason}`));
      return;
    }
    const url = URL.createObjectURL(file);
    cls.files.push({ file, url });
    const img = h("img", { src: url, alt: "", loading: "lazy", decoding: "async", title: name });
    const li = h("li", {}, img);
    img.addEventListener("error", () => {
      li.replaceChildren(h("span", {
        class: "teach-no-preview",
        title: `${name}: no preview in this browser; the server checks it when training`,
      }, format));
    }, { once: true });
    cls.thumbs.append(li);
  });
  if (cls.rejected.length) {
    const out = cls.rejected.length;
    cls.issueCount.textContent = `${out} file${out === 1 ? "" : "s"} left out (not images)`;
    cls.issues.hidden = false;
  }
  refresh();
}

// The list of files left out is only a notice (nothing of it is kept or sent): dismissing it
// empties it until the next file that is not an image.
function dismissIssues(cls) {
  cls.rejected = [];
  cls.issueList.replaceChildren();
  cls.issues.hidden = true;
  cls.card.focus();
}

function refresh() {
  state.classes.forEach((cls, i) => {
    // Each class's controls get a name of their own: a screen reader listed "Class name",
    // "Remove this class" and "Add pictures" once per class, all alike.
    const which = `class ${i + 1}${cls.label.trim() ? ` (${cls.label.trim()})` : ""}`;
    cls.nameInput.setAttribute("aria-label", `Name of class ${i + 1}`);
    cls.remove.setAttribute("aria-label", `Remove ${which}`);
    cls.add.setAttribute("aria-label", `Add pictures to ${which}`);
  });
  for (const cls of state.classes) {
    const n = cls.files.length;
    // What will be sent; the files left out are counted in their own list below the pictures.
    cls.count.textContent = `${n} picture${n === 1 ? "" : "s"}` + (cls.checking ? " · checking…" : "");
  }
  const ready = state.classes.filter((c) => c.files.length >= 2 && c.label.trim()).length;
  const unnamed = state.classes.filter((c) => c.files.length >= 2 && !c.label.trim()).length;
  // The advice only while a class that would be sent (as train() picks them) has fewer than ten.
  const few = state.classes.some((c) => c.files.length && c.label.trim() && c.files.length < 10);
  ui.hint.textContent = ready >= 2
    ? `${ready} classes ready.${few ? " Ten or more pictures per class give steadier results." : ""}`
    : ready + unnamed >= 2
      ? `Name ${unnamed === 1 ? "the class" : "the classes"} that ${unnamed === 1 ? "has" : "have"} pictures but no name.`
      : "Add at least two classes with two or more pictures each.";
  ui.train.disabled = state.busy || ready < 2;
}

function setProgress(fraction, text) {
  ui.progress.hidden = false;
  ui.bar.style.width = `${Math.round(fraction * 100)}%`;
  ui.progress.setAttribute("aria-valuenow", String(Math.round(fraction * 100)));
  ui.phase.textContent = text;
}

function showError(problem) {
  const msg = problemMessage(problem);
  // A 401's own text tells API clients which header to send; the page has a field for the key.
  const ownWords = problem.status === 401;
  ui.error.hidden = false;
  ui.error.replaceChildren(
    h("strong", {}, ownWords ? msg.title : problem.title || msg.title),
    h("p", {}, ownWords ? msg.text : problem.detail || msg.text),
  );
  if (ownWords) {
    ui.error.scrollIntoView({ block: "nearest" }); // the field is in the sticky bar, in view
    askForKey();
  }
}

async function api(url, options = {}) {
  let r;
  try {
    r = await fetch(url, options);
  } catch {
    throw { status: 0 };
  }
  if (!r.ok) throw await readProblem(r);
  return r.status === 204 ? null : r.json();
}

function slug(text) {
  return text.trim().toLowerCase().replace(/[^a-z0-9_-]+/g, "-").replace(/^-+|-+$/g, "").slice(0, 64);
}

async function train() {
  const model = ui.name.value.trim();
  ui.error.hidden = true;
  ui.results.hidden = true;
  if (!NAME_RE.test(model)) {
    const problem = { title: model ? "Choose another model name" : "Give the model a name", detail: "Use lowercase letters, digits, '-' or '_' (up to 64), starting with a letter or digit." };
    showError(problem);
    // Said at the field too: focusing it scrolls the box under Train out of sight on a phone.
    ui.nameNote.textContent = `${problem.title}. ${problem.detail}`;
    ui.nameNote.hidden = false;
    ui.name.setAttribute("aria-invalid", "true");
    ui.name.focus();
    return;
  }
  const classes = state.classes.filter((c) => c.files.length && c.label.trim());
  const labels = classes.map((c) => c.label.trim());
  if (new Set(labels).size !== labels.length) {
    showError({ title: "Two classes have the same name", detail: "Give every class its own name." });
    return;
  }
  state.busy = true;
  refresh();
  let catalog = slug(`teach-${model}`);
  const backbone = ui.backbone.value;
  // The example catalog is made for this job: if the job never starts (the name is refused,
  // a limit is reached, an upload fails), it is deleted again instead of left behind.
  let created = false;
  let started = false;
  try {
    setProgress(0, "Preparing the example catalog…");
    // The page keeps one catalog of examples per taught model: teaching again starts it fresh.
    // Only a catalog this page made for this model (its description says so) is replaced; any
    // other catalog of that name (made through the API, or for a model whose long name was cut
    // to the same 64 characters) is left alone and the examples go to a free name beside it.
    // Looked up in the list first: a DELETE answered 404 is logged by the browser as a console
    // error on every first teach of a name.
    const description = `examples for ${model}`;
    const { catalogs } = await api("/v1/catalogs", { cache: "no-store" });
    const known = new Map(catalogs.map((c) => [c.name, c]));
    const base = catalog;
    for (let n = 2; known.has(catalog) && known.get(catalog).description !== description; n++) {
      catalog = base.slice(0, 64 - `-${n}`.length) + `-${n}`;
    }
    if (known.has(catalog)) {
      await api(`/v1/catalogs/${catalog}`, { method: "DELETE" }).catch((p) => { if (p.status !== 404) throw p; });
    }
    await api("/v1/catalogs", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ name: catalog, model: backbone, description }),
    });
    created = true;
    const total = classes.reduce((n, c) => n + c.files.length, 0);
    let sent = 0;
    const skipped = [];
    const upload = (files, label) => {
      const form = new FormData();
      for (const f of files) form.append("file", f.file, f.file.name || "picture");
      form.append("label", label);
      return api(`/v1/catalogs/${catalog}/items`, { method: "POST", body: form });
    };
    for (const cls of classes) {
      const label = cls.label.trim();
      for (let i = 0; i < cls.files.length; i += UPLOAD_BATCH) {
        const chunk = cls.files.slice(i, i + UPLOAD_BATCH);
        try {
          await upload(chunk, label);
        } catch (p) {
          if (![413, 415, 422].includes(p.status)) throw p;
          // One bad picture refuses its batch: send them one by one, skip and list the bad ones.
          for (const f of chunk) {
            try {
              await upload([f], label);
            } catch (q) {
              if (![413, 415, 422].includes(q.status)) throw q;
              skipped.push(`${f.file.name || "a picture"} (${label}): ${q.detail || q.title || "refused"}`);
            }
          }
        }
        sent += chunk.length;
        setProgress(0.5 * (sent / total), `Uploading pictures: ${sent} of ${total}`);
      }
    }
    state.skipped = skipped;
    const job = await api(`/v1/catalogs/${catalog}/train`, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ model }),
    });
    started = true;
    await follow(job, 0.5);
  } catch (problem) {
    ui.progress.hidden = true;
    showError(problem || { status: 0 });
    if (created && !started) {
      await api(`/v1/catalogs/${catalog}`, { method: "DELETE" }).catch(() => {});
    }
  } finally {
    state.busy = false;
    refresh();
  }
}

// Poll a job to its end and show its results; its progress fills the bar from `start` on.
async function follow(job, start) {
  remember(job.url);
  let done = job;
  while (done.status === "queued" || done.status === "running") {
    setProgress(start + (1 - start) * done.progress, `Training ${done.model}: ${done.phase}…`);
    await new Promise((res) => setTimeout(res, 250));
    done = await api(done.url, { cache: "no-store" });
  }
  remember(null);
  if (done.status !== "succeeded") throw done.error || { title: `Training ${done.status}` };
  setProgress(1, `Trained ${done.result.model} v${done.result.version}.`);
  showResults(done);
}

function remember(url) {
  try {
    if (url) sessionStorage.setItem(JOB_KEY, url);
    else sessionStorage.removeItem(JOB_KEY);
  } catch { /* storage off: a reload just loses sight of the job */ }
}

// After a reload: pick up the job this tab started (still training, or finished meanwhile).
async function resume() {
  let url = null;
  try { url = sessionStorage.getItem(JOB_KEY); } catch { return; }
  if (!url || !/^\/v1\/jobs\/[A-Za-z0-9]+$/.test(url)) return;
  state.busy = true;
  refresh();
  try {
    const job = await api(url, { cache: "no-store" });
    ui.name.value = job.model;
    await follow(job, 0);
  } catch (problem) {
    remember(null);
    ui.progress.hidden = true;
    if (problem && problem.status !== 404) showError(problem);
  } finally {
    state.busy = false;
    refresh();
  }
}

function showResults(job) {
  const r = job.result;
  state.backbone = r.backbone; // after a reload the form shows what the job was built on
  if ([...ui.backbone.options].some((o) => o.value === r.backbone)) ui.backbone.value = r.backbone;
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
  ui.results.replaceChildren(
    h("h3", { class: "teach-results-title" }, `${r.model} v${r.version} is ready`),
    h("p", { class: "teach-headline" }, `Right on ${right} of ${n} (${(m.accuracy * 100).toFixed(0)}%) held-out ${how}.`),
    h("ul", { class: "teach-summary" }, ...r.summary.map((s) => h("li", {}, `${s}.`))),
    ...(m.threshold != null && m.positive_label != null
      ? [h("p", { class: "teach-decision" }, `A yes/no model: it says “${m.positive_label}” when that score reaches ${pct(m.threshold)}, else “${m.labels.find((l) => l !== m.positive_label)}”.`)]
      : []),
    ...(job.warnings.length ? [h("p", { class: "teach-warn" }, job.warnings.join("; "))] : []),
    ...(state.skipped.length
      ? [h("p", { class: "teach-warn" }, `Skipped ${state.skipped.length} picture(s) the server could not read: ${state.skipped.join("; ")}`)]
      : []),
    h("p", { class: "teach-caption", id: "teach-caption" }, "Confusion matrix: rows are the true class, columns what the model said."),
    h("div", { class: "teach-table-wrap" }, table),
    h("button", { type: "button", class: "btn btn-primary teach-try", onclick: () => tryIt(r.model) }, `Try ${r.model}`),
  );
  ui.results.hidden = false;
  ui.results.scrollIntoView({ behavior: "smooth", block: "nearest" });
}

function tryIt(model) {
  document.dispatchEvent(new CustomEvent("imgclass:model-taught", { detail: { model } }));
  const target = $("#dropzone");
  if (target) {
    target.scrollIntoView({ behavior: "smooth", block: "center" });
    target.focus({ preventScroll: true });
  }
}

async function loadBackbones() {
  try {
    const body = await api("/v1/models", { cache: "no-store" });
    const usable = (body.models || []).filter((m) => m.outputs && m.outputs.embedding && !m.backbone);
    ui.backbone.replaceChildren(...usable.map((m) => h("option", { value: m.name }, m.name)));
    const want = usable.find((m) => m.name === (state.backbone || "imagenet"));
    if (want) ui.backbone.value = want.name;
    if (!usable.length) window.setTimeout(loadBackbones, 2000);
  } catch {
    window.setTimeout(loadBackbones, 3000);
  }
}

function build() {
  root = document.getElementById("teach");
  if (!root) return;
  ui = {};
  ui.name = h("input", { id: "teach-name", type: "text", placeholder: "e.g. my-shoes", autocomplete: "off", spellcheck: "false", maxlength: "64" });
  ui.nameNote = h("span", { class: "field-note", id: "teach-name-note", hidden: true });
  ui.name.setAttribute("aria-describedby", "teach-name-note");
  ui.backbone = h("select", { id: "teach-backbone" });
  ui.classes = h("ol", { class: "teach-classes" });
  ui.hint = h("p", { class: "teach-hint", "aria-live": "polite" });
  ui.train = h("button", { type: "button", class: "btn btn-primary", id: "teach-train", onclick: train }, "Train");
  ui.bar = h("div", { class: "teach-bar-fill" });
  ui.phase = h("p", { class: "teach-phase", "aria-live": "polite" });
  ui.progress = h("div", { class: "teach-progress", role: "progressbar", "aria-valuemin": "0", "aria-valuemax": "100", hidden: true },
    h("div", { class: "teach-bar" }, ui.bar), ui.phase);
  ui.error = h("div", { class: "teach-error", role: "alert", hidden: true });
  ui.results = h("section", { class: "teach-results", "aria-live": "polite", hidden: true });
  root.append(
    h("div", { class: "teach-head" },
      h("h2", { class: "section-title" }, "Teach a new model"),
      h("p", { class: "teach-lede" }, "Give examples of each kind of picture; this server learns to tell them apart in seconds.")),
    h("div", { class: "teach-fields" },
      h("label", { class: "field-label", for: "teach-name" }, "Model name", ui.name, ui.nameNote),
      h("label", { class: "field-label", for: "teach-backbone" }, "Built on", h("div", { class: "select-wrap" }, ui.backbone))),
    ui.classes,
    h("div", { class: "teach-actions" },
      h("button", { type: "button", class: "btn btn-ghost", onclick: () => addClass("").nameInput.focus() }, "Add a class"),
      ui.train),
    ui.hint, ui.progress, ui.error, ui.results);
  addClass("");
  addClass("");
  ui.name.addEventListener("input", () => {
    ui.nameNote.hidden = true;
    ui.name.removeAttribute("aria-invalid");
    refresh();
  });
  // A paste while a class is active (clicked or focused) goes to that class, not to the classifier.
  document.addEventListener("paste", (e) => {
    if (!state.active || !root.contains(document.activeElement) && !root.matches(":hover")) return;
    const files = Array.from(e.clipboardData ? e.clipboardData.files : []);
    if (!files.length) return;
    e.preventDefault();
    e.stopImmediatePropagation();
    addFiles(state.active, files);
  }, true);
  loadBackbones();
  resume();
}

if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", build);
else build();
