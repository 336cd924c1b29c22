// One result card per image: preview, verdict, top-k bars, similar items, timings, errors.

import { bytes, capitalize, humanize, ms, pct, providerName, verdictText } from "./format.js";
import { showFromServer } from "./server-preview.js";

const $ = (sel, root = document) => root.querySelector(sel);

export function buildCard(item, template, onRemove) {
  const card = template.content.firstElementChild.cloneNode(true);
  card.dataset.id = String(item.id);
  const name = item.file.name || "image";
  $(".result-name", card).textContent = name;
  $(".result-name", card).title = name;
  $(".result-meta", card).textContent = bytes(item.file.size);
  const img = $(".result-img", card);
  img.alt = `Preview of ${name}`;
  img.addEventListener("error", () => previewFromServer(item, img, card), { once: true });
  // Tiny images (28x28 digits) are drawn with crisp pixels instead of a blur.
  img.addEventListener("load", () => {
    if (img.naturalWidth <= 96 && img.naturalHeight <= 96) img.classList.add("pixelated");
  }, { once: true });
  img.src = item.url;
  const remove = $(".result-remove", card);
  remove.setAttribute("aria-label", `Remove ${name}`);
  remove.addEventListener("click", () => onRemove(item));
  return card;
}

// A format this browser cannot draw: the server's JPEG of it, "No preview" when that fails too.
function previewFromServer(item, img, card) {
  const none = () => {
    img.hidden = true;
    $(".no-preview", card).hidden = false;
  };
  return showFromServer(item, img, 512, () => card.isConnected, none);
}

function resetCard(card) {
  $(".verdict", card).hidden = true;
  $(".preds", card).hidden = true;
  $(".preds", card).replaceChildren();
  $(".result-error", card).hidden = true;
  $(".result-error", card).replaceChildren();
  $(".similar", card).hidden = true;
  $(".similar-grid", card).replaceChildren();
  $(".timings", card).hidden = true;
  $(".result-note", card).hidden = true;
  warnBox(card).hidden = true;
  delete card.dataset.guess;
}

// The "this answer is a guess" box above the verdict and labels (added where an older
// template lacks it).
function warnBox(card) {
  let box = $(".result-warn", card);
  if (!box) {
    box = document.createElement("p");
    box.className = "result-warn";
    box.hidden = true;
    $(".verdict", card).before(box);
  }
  return box;
}

// How alike the picture is to the closest example the model was taught: the answer's own
// figure where it gives one, else the best similar item (a taught model's catalog holds its
// examples).
function closestExample(result) {
  for (const key of ["nearest_similarity", "familiar_similarity", "closest_similarity"]) {
    if (Number.isFinite(result[key])) return result[key];
  }
  const first = Array.isArray(result.similar) ? result.similar[0] : null;
  return first && Number.isFinite(first.score) ? first.score : null;
}

function familiarFloor(model) {
  for (const m of (model && model.metrics) || []) {
    const v = m && m.extra && m.extra.familiar_min_similarity;
    if (Number.isFinite(v)) return v;
  }
  return null;
}

export function setCardPending(item) {
  const card = item.card;
  resetCard(card);
  card.dataset.state = "pending";
  card.setAttribute("aria-busy", "true");
  $(".result-busy-text", card).textContent = "Classifying…";
}

// Focus on the card's name (its Try again is gone while it is sent again); it stays there
// when the answer is drawn, so the next Tab goes on from this card.
export function focusCard(item) {
  const name = $(".result-name", item.card);
  name.tabIndex = -1;
  name.focus({ preventScroll: true });
}

export function setCardBusyText(item, text) {
  $(".result-busy-text", item.card).textContent = text;
}

export function setCardProblem(item, msg, onRetry) {
  const card = item.card;
  resetCard(card);
  item.problem = msg;
  card.dataset.state = "error";
  card.setAttribute("aria-busy", "false");
  const box = $(".result-error", card);
  const title = document.createElement("p");
  title.className = "error-title";
  title.textContent = msg.title;
  const text = document.createElement("p");
  text.className = "error-text";
  text.textContent = msg.text;
  box.append(title, text);
  if (msg.detail && msg.detail !== msg.text) {
    const d = document.createElement("p");
    d.className = "error-detail";
    d.textContent = msg.detail;
    box.append(d);
  }
  if (msg.retry && onRetry) {
    const btn = document.createElement("button");
    btn.type = "button";
    btn.className = "btn btn-small";
    btn.textContent = "Try again";
    btn.addEventListener("click", () => onRetry(item));
    box.append(btn);
  }
  box.hidden = false;
}

export function renderResult(item, result, body, model = null) {
  const card = item.card;
  resetCard(card);
  card.dataset.state = "done";
  card.setAttribute("aria-busy", "false");
  card.dataset.model = body.model;

  const im = result.image || {};
  const meta = [];
  if (im.format) meta.push(im.format);
  if (im.width) meta.push(`${im.width}×${im.height}`);
  meta.push(bytes(item.file.size));
  if (im.orientation && im.orientation !== 1) meta.push("turned upright");
  if (im.frames > 1) meta.push(`first of ${im.frames} frames`);
  if (im.inverted && !im.blank) meta.push("light background: colours inverted for the model");
  $(".result-meta", card).textContent = meta.join(" · ");

  // A one-colour picture, or (a taught model) one unlike all its examples: the labels are a
  // guess, said above them, and the top label does not look sure.
  let guess = "";
  if (im.blank) {
    guess = "Nothing to classify: the picture is one colour only, so the labels below are a guess.";
  } else if (result.familiar === false) {
    const closest = closestExample(result);
    const floor = familiarFloor(model);
    guess = "Unlike anything this model was taught"
      + (closest != null ? ` (closest example ${pct(Math.max(0, closest))} alike` : "")
      + (closest != null && floor != null ? `; its examples are usually ${pct(floor)} or more alike` : "")
      + (closest != null ? ")" : "")
      + " — the answer is a guess.";
  }
  if (guess) {
    const warn = warnBox(card);
    warn.textContent = guess;
    warn.hidden = false;
    card.dataset.guess = im.blank ? "blank" : "unfamiliar";
  }

  if (result.decision) {
    const d = result.decision;
    const v = $(".verdict", card);
    v.dataset.positive = String(Boolean(d.is_positive));
    const big = document.createElement("p");
    big.className = "verdict-label";
    const icon = document.createElement("span");
    icon.className = "verdict-icon";
    icon.setAttribute("aria-hidden", "true");
    icon.textContent = guess ? "?" : d.is_positive ? "✓" : "✕";
    const word = document.createElement("span");
    word.className = "verdict-text";
    word.textContent = verdictText(d);
    big.append(icon, word);
    const small = document.createElement("p");
    small.className = "verdict-score";
    small.textContent = `${capitalize(humanize(d.positive_label))} score ${pct(d.positive_score)} · threshold ${pct(d.threshold)}`;
    v.replaceChildren(big, small);
    v.hidden = false;
  }

  const list = $(".preds", card);
  const topScore = result.predictions.length ? result.predictions[0].score : 0;
  result.predictions.forEach((p, i) => {
    const li = document.createElement("li");
    li.className = i === 0 ? "pred top" : "pred";
    li.dataset.label = p.label;
    const row = document.createElement("div");
    row.className = "pred-row";
    const name = document.createElement("span");
    name.className = "pred-label";
    name.textContent = p.label;
    name.title = p.label; // cut with "…" where it is longer than the card is wide
    const val = document.createElement("span");
    val.className = "pred-score";
    val.textContent = pct(p.score);
    row.append(name, val);
    const track = document.createElement("div");
    track.className = "bar";
    track.setAttribute("aria-hidden", "true");
    const fill = document.createElement("div");
    fill.className = "bar-fill";
    fill.style.setProperty("--w", `${Math.max(0.5, p.score * 100).toFixed(2)}%`);
    if (i === 0 && (topScore < 0.5 || guess)) fill.classList.add("unsure");
    track.append(fill);
    li.append(row, track);
    list.append(li);
  });
  list.hidden = false;
  if (!guess && !result.decision && topScore < 0.5 && result.predictions.length > 1) {
    // A cat photo on imagenet (Egyptian cat 39%, tiger cat 33%, tabby 16%) was told "this may
    // not be something the model was trained to recognise": when the first labels shown hold
    // most of the probability, the model is only torn between them.
    const first = result.predictions.slice(0, 3);
    const shared = first.reduce((sum, p) => sum + p.score, 0);
    const note = $(".result-note", card);
    note.textContent = shared >= 0.6
      ? `Low confidence: the model is torn between its top ${first.length} labels (${pct(shared)} together); it is most likely one of them.`
      : "Low confidence: this may not be something the model was trained to recognise.";
    note.hidden = false;
  }
  list.setAttribute("aria-label", `Top ${result.predictions.length} labels for ${item.file.name}`);

  if (Array.isArray(result.similar) && result.similar.length) {
    const grid = $(".similar-grid", card);
    for (const s of result.similar) {
      const li = document.createElement("li");
      li.className = "similar-item";
      const a = document.createElement(s.image_url ? "a" : "div");
      if (s.image_url) {
        a.href = s.image_url;
        a.target = "_blank";
        a.rel = "noopener";
        // One clear name instead of "Similar: X 99.1% X" read from the parts.
        a.setAttribute("aria-label", `${s.label || "Similar image"}, ${pct(s.score)} similar (opens the image in a new tab)`);
      }
      const img = document.createElement("img");
      img.loading = "lazy";
      img.decoding = "async";
      img.src = s.thumbnail_url || s.image_url || "";
      img.alt = s.label ? `Similar: ${s.label}` : "Similar image";
      img.addEventListener("load", () => {
        if (img.naturalWidth <= 96) img.classList.add("pixelated");
      }, { once: true });
      const badge = document.createElement("span");
      badge.className = "similar-score";
      badge.textContent = pct(s.score);
      badge.title = "cosine similarity";
      a.append(img, badge);
      if (s.label) {
        const cap = document.createElement("span");
        cap.className = "similar-cap";
        cap.textContent = s.label;
        cap.title = s.label;
        a.append(cap);
      }
      li.append(a);
      grid.append(li);
    }
    $(".similar", card).hidden = false;
  }

  const t = result.timings;
  if (t) {
    const tp = $(".timings", card);
    tp.textContent = `${ms(t.inference_ms)} inference · ${ms(t.total_ms)} total`;
    tp.title = `decode ${ms(t.decode_ms)}, preprocess ${ms(t.preprocess_ms)}, inference ${ms(t.inference_ms)} (share of the batch) on ${providerName(body.provider)}`;
    tp.hidden = false;
  }
}
