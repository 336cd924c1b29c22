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
  if (model.description) {
    const p = document.createElement("p");
    p.className = "model-desc";
    p.textContent = model.description;
    p.title = model.description; // shown in full on hover where small screens clamp it
    frag.append(p);
  }
  const stats = document.createElement("div");
  stats.className = "stats";
  stats.append(stat(nfInt.format(model.num_classes), model.num_classes === 1 ? "label" : "labels"));
  const m = primaryMetrics(model);
  if (m && m.accuracy != null) {
    stats.append(stat(pct(m.accuracy), "accuracy"));
  }
  if (m && isBinary(model)) {
    if (m.precision != null) stats.append(stat(pct(m.precision), "precision"));
    if (m.recall != null) stats.append(stat(pct(m.recall), "recall"));
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
}
