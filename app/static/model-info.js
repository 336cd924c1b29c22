// The model card: description, labels, accuracy with its data set, provider.

import { isBinary, nfInt, pct, primaryMetrics, providerName } from "./format.js";

export function renderModelPlaceholder(container, text) {
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

export function renderModelInfo(container, model) {
  const frag = document.createDocumentFragment();
  let evaluation = null;
  if (model.description) {
    const p = document.createElement("p");
    p.className = "model-desc";
    p.textContent = model.description;
    p.title = model.description; // shown in full on hover where small screens clamp it
    frag.append(p);
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
  if (m && m.accuracy != null && !binary) {
    stats.append(stat(pct(m.accuracy), "accuracy"));
  }
  if (binary) {
    const acc = m.accuracy != null ? `accuracy ${pct(m.accuracy)}` : undefined;
    if (m.precision != null) stats.append(stat(pct(m.precision), "precision", acc));
    if (m.recall != null) stats.append(stat(pct(m.recall), "recall", acc));
  }
  const inp = model.input || {};
  if (inp.width) {
    stats.append(stat(`${inp.width}×${inp.height}`, inp.color === "gray" ? "gray input" : "RGB input"));
  }
  frag.append(stats);
  if (m) {
    const ev = document.createElement("p");
    ev.className = "model-eval";
    ev.textContent = `Measured on ${m.dataset} (${m.split}, n = ${nfInt.format(m.n_samples)})`
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
  const details = document.createElement("details");
  details.className = "labels";
  const summary = document.createElement("summary");
  summary.textContent = `Show the ${model.num_classes} labels`;
  const ul = document.createElement("ul");
  ul.className = "chips";
  for (const label of model.labels || []) {
    const li = document.createElement("li");
    li.textContent = label;
    ul.append(li);
  }
  details.append(summary, ul);
  frag.append(details);
  const foot = document.createElement("p");
  foot.className = "model-foot";
  foot.textContent = `Runs on ${providerName(model.provider)}`
    + (model.default_catalog ? ` · similar images from “${model.default_catalog}”` : "");
  frag.append(foot);
  container.replaceChildren(frag);
  if (evaluation) expandable(evaluation);
}

// Small screens clamp the evaluation sentence to three lines (app.css); where that hides some
// of it, a tap, Enter or Space shows the whole sentence and folds it again.
function expandable(p) {
  if (p.scrollHeight <= p.clientHeight + 1) return;
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
