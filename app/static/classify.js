// Classifying the page's images: batches of 8 sent one request after another to
// /v1/models/{m}/predict, answers drawn on their cards, failures said per card (and once on
// the page where they concern them all), the run summed up for screen readers.
import { focusCard, renderResult, setCardBusyText, setCardPending, setCardProblem } from "./cards.js";
import { ms, pct, providerName, shortName, verdictText } from "./format.js";
import { deadlineFor, within } from "./net.js";
import { alertKind, announce, hideAlert, showAlert, updateChrome } from "./page-chrome.js";
import { el, state } from "./page-state.js";
import { precheck } from "./precheck.js";
import { problemMessage, readProblem, tooLargeHere } from "./problems.js";
import { pollReady } from "./server-status.js";

const BATCH_SIZE = 8; // images per request; the server's default cap is 32
const SIMILAR_K = 8;
const MAX_NOT_READY_RETRIES = 20;
// A fault of this page's own (a bug): no card is left spinning.
const PAGE_FAULT = { title: "Something went wrong on this page", text: "Try again; if it keeps happening, reload the page.", retry: true };

// A request none of whose images still wants its answer (another model picked, the card
// removed or sent again) is cancelled: the next run waited for it behind the queue.
export function abortStale() {
  for (const req of state.requests) {
    if (req.jobs.every((j) => j.item.run !== j.run)) {
      req.controller.abort();
      state.requests.delete(req);
    }
  }
}

// Images wait while no model is settled (chosen by the user, or the default once no model is
// still loading): a wider model may still come. Any run, not only a new image's, holds them
// (round 32: a top-k change while loading sent a photo to digits).
function holdForModel(items) {
  const msg = state.keyNeeded
    ? { title: "API key needed", text: "Type the server’s API key in the field at the top; the image is classified as soon as it is accepted." }
    : state.model
      ? { title: "Models still loading", text: "The image will be classified once every model has loaded (or at once with another model you pick)." }
      : { title: "No model ready yet", text: "The image will be classified as soon as a model has loaded." };
  for (const item of items) {
    item.waitingForModel = true;
    setCardProblem(item, msg);
  }
}

export function classify(items) {
  if (!state.model || !state.modelSettled) {
    holdForModel(items);
    return;
  }
  const model = state.model;
  const topK = Number(el.topk.value) || 5;
  const jobs = items.map((item) => {
    item.waitingForModel = false;
    item.run += 1;
    item.result = null;
    item.problem = null;
    setCardPending(item);
    return { item, run: item.run };
  });
  abortStale();
  // The summary covers every request of this run (8 images each), not only the last one.
  const tally = { images: 0, ms: 0 };
  state.inflight += 1;
  updateChrome();
  announce(`Classifying ${jobs.length} image${jobs.length === 1 ? "" : "s"} with ${model.name}…`);
  // Requests run one after another: a phone on a slow link should not send everything at once.
  state.queue = state.queue
    .then(async () => {
      const ready = [];
      for (const j of jobs) {
        // Not an image, or over a size limit the page knows: said at once, never sent.
        const local = await precheck(j.item);
        if (j.item.run !== j.run) continue;
        if (local) setCardProblem(j.item, local);
        else ready.push(j);
      }
      for (let i = 0; i < ready.length; i += BATCH_SIZE) {
        const chunk = ready.slice(i, i + BATCH_SIZE).filter((j) => j.item.run === j.run);
        if (chunk.length) await sendBatch(chunk, model, topK, 0, tally);
      }
    })
    .catch((err) => {
      console.error(err);
      for (const j of jobs) {
        if (j.item.run === j.run && j.item.card.dataset.state === "pending") setCardProblem(j.item, PAGE_FAULT, retry);
      }
    })
    .finally(() => {
      state.inflight -= 1;
      updateChrome();
      if (state.inflight === 0) announceDone(jobs);
    });
}

// "Try again" on one card also retries the others that failed for a passing reason (server
// unreachable, busy, loading): after an outage, twenty cards needed twenty clicks.
function retry(item) {
  if (!state.model) return;
  // Its Try again goes away: focus stays on the card (it fell to <body>, round 43).
  const hadFocus = item.card.contains(document.activeElement);
  const others = state.items.filter((it) => it !== item && it.problem && it.problem.retry);
  classify([item, ...others]);
  if (hadFocus) focusCard(item);
}

function announceDone(jobs) {
  const done = jobs.filter((j) => j.item.run === j.run);
  const ok = done.filter((j) => j.item.result);
  const failed = done.length - ok.length;
  if (!done.length) return;
  let text = `${ok.length} of ${done.length} image${done.length === 1 ? "" : "s"} classified.`;
  if (ok.length === 1) {
    const r = ok[0].item.result;
    const top = r.decision ? verdictText(r.decision) : r.predictions[0] && `${r.predictions[0].label}, ${pct(r.predictions[0].score)}`;
    text = `${ok[0].item.file.name}: ${top}.`;
  }
  if (failed) text += ` ${refusedText(done.filter((j) => !j.item.result).map((j) => j.item))}`;
  // The warnings above a card's labels (one colour only; unlike anything taught) are said too.
  const blank = ok.filter((j) => j.item.result.image && j.item.result.image.blank).length;
  const unfamiliar = ok.filter((j) => !(j.item.result.image && j.item.result.image.blank) && j.item.result.familiar === false).length;
  if (ok.length === 1 && blank) text += " The picture is one colour only: the answer is a guess.";
  else if (ok.length === 1 && unfamiliar) text += " Unlike anything this model was taught: the answer is a guess.";
  else {
    if (blank) text += ` ${blank} ${blank === 1 ? "is" : "are"} one colour only: a guess.`;
    if (unfamiliar) text += ` ${unfamiliar} ${unfamiliar === 1 ? "is" : "are"} unlike anything this model was taught: a guess.`;
  }
  announce(text);
}

// "notes.txt could not be classified: Not an image." / "3 could not be classified: Not an
// image (2), Image too large (1)." (was "1 could not be classified", with no reason).
function refusedText(items) {
  const reason = (it) => String((it.problem && it.problem.title) || "no answer");
  if (items.length === 1) return `${items[0].file.name || "The image"} could not be classified: ${reason(items[0])}.`;
  const counts = new Map();
  for (const it of items) counts.set(reason(it), (counts.get(reason(it)) || 0) + 1);
  return `${items.length} could not be classified: ${[...counts].map(([r, n]) => `${r} (${n})`).join(", ")}.`;
}

// The answer's JSON with a result per image sent, or null when it is not that.
async function readAnswer(response, n) {
  const text = await response.text(); // rejects when the deadline cuts the body off
  try {
    const body = JSON.parse(text);
    const ok = body && Array.isArray(body.results) && body.results.length === n
      && body.results.every((r) => r && Array.isArray(r.predictions));
    return ok ? body : null;
  } catch {
    return null;
  }
}

async function sendBatch(jobs, model, topK, attempt, tally) {
  const live = jobs.filter((j) => j.item.run === j.run);
  if (!live.length) return;
  const form = new FormData();
  for (const j of live) form.append("file", j.item.file, shortName(j.item.file.name || "image"));
  const params = new URLSearchParams({ top_k: String(topK) });
  if (model.default_catalog) params.set("similar", String(SIMILAR_K));
  const url = `/v1/models/${encodeURIComponent(model.name)}/predict?${params}`;
  const req = { controller: new AbortController(), jobs: live };
  state.requests.add(req);
  const bytes = live.reduce((n, j) => n + j.item.file.size, 0);
  const deadline = deadlineFor(bytes);
  const send = async (signal) => {
    const r = await fetch(url, { method: "POST", body: form, headers: { Accept: "application/json" }, signal });
    return r.ok ? { response: r, body: await readAnswer(r, live.length) } : { response: r, problem: await readProblem(r) };
  };
  let response;
  let body;
  let problem;
  try {
    ({ response, body, problem } = await within(deadline, send, req.controller));
  } catch (err) {
    state.requests.delete(req);
    // No answer in time; else no answer at all, unless the page cancelled it (another model
    // picked, the card removed): then nobody waits for it.
    if (err && err.timeout) failAll(live, err, model);
    else if (!req.controller.signal.aborted) failAll(live, { status: 0 }, model);
    return;
  }
  state.requests.delete(req);
  if (response.ok && !body) {
    failAll(live, { status: response.status, unreadable: true }, model);
    return;
  }
  if (response.ok) {
    // The server answered: a "can't reach the server" banner from an earlier failure is stale.
    if (["request", "offline", "key"].includes(el.alert.dataset.kind)) hideAlert();
    if (el.status.dataset.state === "down") pollReady();
    live.forEach((j, i) => {
      if (j.item.run !== j.run) return;
      const result = body.results[i];
      j.item.result = result;
      renderResult(j.item, result, body, model);
    });
    tally.images += live.length;
    tally.ms += (body.timings && body.timings.total_ms) || 0;
    renderSummary(body, tally);
    return;
  }
  if (Number.isInteger(problem.image_index) && live.length > 1 && live[problem.image_index]) {
    // One bad file must not sink the batch: report it and send the rest again.
    const bad = live[problem.image_index];
    setCardProblem(bad.item, problemMessage(stripIndex(problem), { model: model.name, size: bad.item.file.size }), retry);
    await sendBatch(live.filter((j) => j !== bad), model, topK, attempt, tally);
    return;
  }
  if (problem.status === 413 && live.length > 1) {
    // Sent one by one, smallest first: a file over a limit a 413 has taught the page is not
    // sent again, and the per-image limit (learnt from a smaller one) is the one it is told.
    for (const j of live.slice().sort((a, b) => a.item.file.size - b.item.file.size)) {
      const local = tooLargeHere(j.item.file.size);
      if (local) setCardProblem(j.item, local);
      else await sendBatch([j], model, topK, attempt, tally);
    }
    return;
  }
  if (problem.status === 503 && attempt < MAX_NOT_READY_RETRIES) {
    const wait = Math.min(5, Math.max(1, Number(problem.retry_after_s) || 1)) * 1000;
    const busy = /\/(overloaded|deadline-exceeded)$/.test(String(problem.type || ""));
    for (const j of live) setCardBusyText(j.item, busy ? "Server busy, retrying…" : "Model still loading, retrying…");
    await new Promise((r) => window.setTimeout(r, wait));
    await sendBatch(live, model, topK, attempt + 1, tally);
    return;
  }
  // The model list is refreshed (app.js listens; model-picker.js classifies with this module).
  if (problem.status === 404) document.dispatchEvent(new CustomEvent("imgclass:model-gone"));
  failAll(live, problem, model);
}

// The server prefixes the detail with "image 1 ('x.txt', image_index 0): " in a batch
// (app/errors.batch_position; a name may hold brackets); the card already says which.
function stripIndex(problem) {
  const copy = { ...problem };
  if (typeof copy.detail === "string") copy.detail = copy.detail.replace(/^image \d+(?: \((?:.*?, )?image_index \d+\))?: /, "");
  return copy;
}

function failAll(jobs, problem, model) {
  const msg = problemMessage(problem, { model: model.name });
  for (const j of jobs) {
    // The file's own size goes into "It is 772 KB; the limit is ..." (one file per request then).
    // The status is kept: cards refused for want of a key are sent again once one is accepted.
    if (j.item.run === j.run) setCardProblem(j.item, { ...problemMessage(problem, { model: model.name, size: j.item.file.size }), status: problem.status }, retry);
  }
  if (problem.status === 0 || problem.status === 401 || problem.status === 404 || problem.unreadable) {
    showAlert(msg.title, msg.text, alertKind(problem.status));
  }
  // The status pill said "Ready" for up to 15 s after a request could not reach the server.
  if (problem.status === 0) pollReady();
}

function renderSummary(body, tally) {
  const n = tally.images;
  el.summary.textContent = `Last run: ${n} image${n === 1 ? "" : "s"} with ${body.model} v${body.version} on ${providerName(body.provider)} in ${ms(tally.ms)}`;
}
