// The model card: description, labels, accuracy with its data set, provider.

import { setText } from "./dom.js";
import { isBinary, nfInt, pct, plainDataset, primaryMetrics, providerName, rate } from "./format.js";

const FILTER_FROM = 20; // a label list this long gets a filter field

// The container is a live region: the same words again (each retry, each poll while models
// load) are not written again.
export function renderModelPlaceholder(container, text) {
  delete container.dataset.shown;
  const shown = container.children.length === 1 && container.firstElementChild.matches("p.muted");
  if (shown && container.firstElementChild.textContent === text) return;
  const p = document.createElement("p");
  p.className = "muted";
  p.textContent = text;
  container.replaceChildren(p);
}

function stat(value, label, title) {
  const div = document.createElement("div");
  div.className = "stat";
  if (title) div.title = title;
  const v = document.createElement("span");
  v.className = "stat-value";
  v.textContent = value;
  const l = document.createElement("span");
  l.className = "stat-label";
  l.textContent = label;
  div.append(v, l);
  return div;
}

// Drawn again only for another model or version (the list is asked again every 1.5 s while
// models load, and the card is a live region).
export function renderModelInfo(container, model) {
  const key = `${model.name}@${model.version}`;
  if (container.dataset.shown === key) return;
  container.dataset.shown = key;
  const frag = document.createDocumentFragment();
  let evaluation = null;
  let description = null;
  if (model.description) {
    description = document.createElement("p");
    description.className = "model-desc";
    description.textContent = model.description;
    frag.append(description);
  }
  const stats = document.createElement("div");
  stats.className = "stats";
  const m = primaryMetrics(model);
  // A yes/no model shows precision and recall instead of accuracy: where positives are rare
  // (Santa is about 1 in 200 of its test drawings), accuracy stays near 100% even when most
  // positives are missed. Accuracy stays in the stats' tooltip; the two labels in the list below.
  const binary = m && isBinary(model) && (m.precision != null || m.recall != null);
  if (!binary) {
    stats.append(stat(nfInt.format(model.num_classes), model.num_classes === 1 ? "label" : "labels"));
  }
  // An accuracy always comes with how many pictures it was measured on ("85% on 20").
  const on = m && m.n_samples ? ` on ${nfInt.format(m.n_samples)} ${m.n_samples === 1 ? "picture" : "pictures"}` : "";
  if (m && m.accuracy != null && !binary) {
    stats.append(stat(rate(m.accuracy), `accuracy${on}`));
  }
  if (binary) {
    // A taught yes/no model's precision/recall average both classes of the most probable
    // label; what its served decision did at the threshold is in extra.decision_* (round 42).
    const x = m.extra || {};
    const [precision, recall, accuracy] = [
      x.decision_precision ?? m.precision, x.decision_recall ?? m.recall, x.decision_accuracy ?? m.accuracy];
    const acc = accuracy != null ? `accuracy ${rate(accuracy)}${on}` : undefined;
    if (precision != null) stats.append(stat(rate(precision), "precision", acc));
    if (recall != null) stats.append(stat(rate(recall), "recall", acc));
  }
  const inp = model.input || {};
  if (inp.width) {
    stats.append(stat(`${inp.width}×${inp.height}`, inp.color === "gray" ? "gray input" : "RGB input"));
  }
  frag.append(stats);
  if (m) {
    const ev = document.createElement("p");
    ev.className = "model-eval";
    ev.textContent = `Measured on ${plainDataset(m.dataset)} (${m.split}, n = ${nfInt.format(m.n_samples)})`
      + (m.threshold != null ? `, decision threshold ${pct(m.threshold)}` : "")
      + ".";
    frag.append(ev);
    evaluation = ev;
  } else {
    const ev = document.createElement("p");
    ev.className = "model-eval";
    ev.textContent = "No evaluation recorded for this model.";
    frag.append(ev);
  }
  frag.append(labelList(model));
  const foot = document.createElement("p");
  foot.className = "model-foot";
  foot.textContent = `Runs on ${providerName(model.provider)}`
    + (model.default_catalog ? ` · similar images from “${model.default_catalog}”` : "");
  frag.append(foot);
  container.replaceChildren(frag);
  if (description) expandable(description);
  if (evaluation) expandable(evaluation);
}

// The labels on demand, in a box of bounded height (imagenet has 1,000), with a filter field
// when there are many.
function labelList(model) {
  const labels = model.labels || [];
  const details = document.createElement("details");
  details.className = "labels";
  const summary = document.createElement("summary");
  summary.textContent = `Show the ${nfInt.format(model.num_classes)} labels`;
  const ul = document.createElement("ul");
  ul.className = "chips";
  ul.tabIndex = 0; // scrolled with the keyboard too
  ul.setAttribute("aria-label", `Labels of ${model.name}`);
  for (const label of labels) {
    const li = document.createElement("li");
    li.textContent = label;
    ul.append(li);
  }
  details.append(summary);
  if (labels.length >= FILTER_FROM) {
    const filter = document.createElement("input");
    filter.type = "search";
    filter.className = "labels-filter";
    filter.placeholder = "Filter labels";
    filter.setAttribute("aria-label", `Filter the ${nfInt.format(labels.length)} labels`);
    const count = document.createElement("p");
    count.className = "labels-count";
    count.setAttribute("aria-live", "polite");
    filter.addEventListener("input", () => {
      const q = filter.value.trim().toLowerCase();
      let shown = 0;
      for (const li of ul.children) {
        li.hidden = Boolean(q) && !li.textContent.toLowerCase().includes(q);
        if (!li.hidden) shown += 1;
      }
      setText(count, q ? `${nfInt.format(shown)} of ${nfInt.format(labels.length)} labels` : "");
    });
    details.append(filter, count);
  }
  details.append(ul);
  return details;
}

// Small screens clamp the description to two lines and the evaluation sentence to three
// (model-card.css); where that hides some of it, a tap, Enter or Space shows it whole and folds
// it again, and a "more" at its end says so (the hover tooltip was all a phone had).
function expandable(p) {
  if (p.scrollHeight <= p.clientHeight + 1) return;
  p.classList.add("clamped");
  p.tabIndex = 0;
  p.setAttribute("role", "button");
  p.setAttribute("aria-expanded", "false");
  const toggle = () => {
    const open = p.classList.toggle("expanded");
    p.setAttribute("aria-expanded", String(open));
  };
  p.addEventListener("click", toggle);
  p.addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") {
      e.preventDefault();
      toggle();
    }
  });
}
