// imgclass browser page: pick a model, add images (drop, picker, paste, camera), show results.
// Plain JS, no build step, no external requests: everything talks to this server's /v1 API.
import { askForKey } from "./auth.js";
import { buildCard, renderResult, setCardBusyText, setCardPending, setCardProblem } from "./cards.js";
import { ms, pct, providerName, shortName, verdictText } from "./format.js";
import { renderModelInfo, renderModelPlaceholder } from "./model-info.js";
import { acceptDropsAndPastes } from "./page-drop.js";
import { precheck } from "./precheck.js";
import { problemMessage, readProblem, tooLargeHere } from "./problems.js";

const BATCH_SIZE = 8; // images per request; the server's default cap is 32
const SIMILAR_K = 8;
const MAX_NOT_READY_RETRIES = 20;
const STORAGE_KEY = "imgclass.model";

const $ = (sel, root = document) => root.querySelector(sel);
const el = {
  status: $("#server-status"),
  modelSelect: $("#model-select"),
  modelInfo: $("#model-info"),
  topk: $("#topk-select"),
  dropzone: $("#dropzone"),
  fileInput: $("#file-input"),
  cameraInput: $("#camera-input"),
  cameraButton: $("#camera-button"),
  clearButton: $("#clear-button"),
  alert: $("#alert"),
  results: $("#results"),
  resultsHead: $("#results-head"),
  summary: $("#summary"),
  empty: $("#empty"),
  srStatus: $("#sr-status"),
  overlay: $("#drag-overlay"),
  template: $("#result-template"),
};

const state = {
  models: [],
  model: null, // the selected ModelInfo
  items: [], // {id, file, url, card, run, result, problem}
  nextId: 1,
  inflight: 0,
  requests: new Set(), // {controller, jobs} of predict requests on the wire
  queue: Promise.resolve(),
  keyNeeded: false, // the server refused to list its models without its API key
};

// An alert's kind says when it is stale: "offline" once the server answers again, "key" once
// a key is accepted; the others when the next thing is done.
const alertKind = (status) => (status === 0 ? "offline" : status === 401 ? "key" : "request");

function showAlert(title, text, kind = "page") {
  el.alert.replaceChildren();
  el.alert.dataset.kind = kind;
  const strong = document.createElement("strong");
  strong.textContent = title;
  const span = document.createElement("span");
  span.textContent = ` ${text}`;
  el.alert.append(strong, span);
  el.alert.hidden = false;
}

function hideAlert() {
  el.alert.hidden = true;
  delete el.alert.dataset.kind;
  el.alert.replaceChildren();
}

function announce(text) {
  // Clear first so repeating the same sentence is announced again.
  el.srStatus.textContent = "";
  window.setTimeout(() => {
    el.srStatus.textContent = text;
  }, 30);
}

// ---------- server status ----------

let pollTimer = 0;
let polling = false;

// Asks /readyz now and again later; a call while a check is under way is that check.
async function pollReady() {
  if (polling) return;
  polling = true;
  window.clearTimeout(pollTimer);
  let next = 15000;
  try {
    const r = await fetch("/readyz", { cache: "no-store" });
    const body = await r.json().catch(() => ({}));
    el.status.title = "";
    // It answers again after the pill said it did not: "Can't reach the server" is stale.
    if (el.status.dataset.state === "down") {
      if (el.alert.dataset.kind === "offline") hideAlert();
      document.dispatchEvent(new CustomEvent("imgclass:server-back"));
    }
    if (r.ok && state.keyNeeded) {
      // Ready, but not for this page until it has the key: green "Ready" above "Loading
      // models..." told the person nothing.
      setStatus("locked", "API key needed");
      el.status.title = "The server is up; it needs its API key to list models and classify.";
    } else if (r.ok) {
      setStatus("ready", "Ready");
    } else if (body.status === "loading") {
      setStatus("loading", "Loading models…");
      next = 1500;
    } else if (body.status === "storage-unavailable") {
      // Predictions still work; catalogs, teaching and jobs do not (the data folder is gone).
      setStatus("degraded", "Storage unavailable");
      el.status.title = "The server's data folder was removed or replaced: predictions work, catalogs and teaching answer 503.";
      next = 5000;
    } else {
      setStatus("down", "No model available");
      next = 5000;
    }
  } catch {
    setStatus("down", "Offline");
    next = 5000;
  }
  polling = false;
  pollTimer = window.setTimeout(pollReady, next);
}

function setStatus(kind, text) {
  el.status.dataset.state = kind;
  $(".pill-text", el.status).textContent = text;
}

// ---------- models ----------

async function loadModels({ keepSelection = true } = {}) {
  let body;
  try {
    const r = await fetch("/v1/models", { cache: "no-store", headers: { Accept: "application/json" } });
    if (r.status === 401) {
      needKey();
      return;
    }
    if (!r.ok) {
      const msg = problemMessage(await readProblem(r));
      renderModelPlaceholder(el.modelInfo, msg.title);
      showAlert(msg.title, msg.text);
      return;
    }
    body = await r.json();
  } catch {
    const msg = problemMessage({ status: 0 });
    renderModelPlaceholder(el.modelInfo, msg.title);
    showAlert(msg.title, msg.text, "offline");
    window.setTimeout(() => loadModels({ keepSelection }), 4000);
    return;
  }
  if (state.keyNeeded) {
    state.keyNeeded = false;
    pollReady(); // the pill said "API key needed"
  }
  state.models = body.models || [];
  const loading = body.loading || [];
  const refused = body.refused || [];
  const previous = keepSelection && state.model ? state.model.name : localStorage.getItem(STORAGE_KEY);

  el.modelSelect.replaceChildren();
  for (const m of state.models) {
    const opt = document.createElement("option");
    opt.value = m.name;
    opt.textContent = m.version ? `${m.name} · v${m.version}` : m.name;
    el.modelSelect.append(opt);
  }
  for (const name of loading) {
    const opt = document.createElement("option");
    opt.value = name;
    opt.disabled = true;
    opt.textContent = `${name} (loading…)`;
    el.modelSelect.append(opt);
  }
  if (!state.models.length) {
    el.modelSelect.disabled = true;
    if (!loading.length) {
      const opt = document.createElement("option");
      opt.textContent = "No models available";
      el.modelSelect.append(opt);
    }
    if (loading.length) {
      renderModelPlaceholder(el.modelInfo, `Loading ${loading.length === 1 ? "the model" : `${loading.length} models`}…`);
    } else {
      renderModelPlaceholder(
        el.modelInfo,
        refused.length
          ? `No model could be loaded (${refused.length} refused; the server log says why).`
          : "No models are served yet. Put model bundles in the server’s models folder.",
      );
    }
    state.model = null;
  } else {
    el.modelSelect.disabled = false;
    // First visit: the model that knows the most labels (a general classifier such as
    // imagenet answers "what's in your picture?"; alphabetical order picked bird / not-bird).
    const widest = state.models.reduce((a, m) => ((m.num_classes || 0) > (a.num_classes || 0) ? m : a));
    const chosen = state.models.find((m) => m.name === previous) || widest;
    el.modelSelect.value = chosen.name;
    selectModel(chosen.name, { reclassify: false });
    // Images added before any model was ready are classified now.
    const waiting = state.items.filter((it) => it.waitingForModel);
    if (waiting.length) classify(waiting);
  }
  if (loading.length) window.setTimeout(() => loadModels({ keepSelection: true }), 1500);
}

// Reads need the API key and the page has none (or a wrong one): say so where the models would
// be, instead of "Loading models..." forever under a green "Ready".
function needKey() {
  state.keyNeeded = true;
  state.models = [];
  state.model = null;
  const opt = document.createElement("option");
  opt.textContent = "API key needed";
  el.modelSelect.replaceChildren(opt);
  el.modelSelect.disabled = true;
  renderModelPlaceholder(el.modelInfo, "This server shows its models only to those with its API key.");
  const msg = problemMessage({ status: 401 });
  showAlert(msg.title, msg.text, "key");
  setStatus("locked", "API key needed");
}

function selectModel(name, { reclassify = true } = {}) {
  const model = state.models.find((m) => m.name === name);
  if (!model) return;
  const changed = !state.model || state.model.name !== model.name;
  state.model = model;
  localStorage.setItem(STORAGE_KEY, model.name);
  renderModelInfo(el.modelInfo, model);
  hideAlert();
  if (changed && reclassify && state.items.length) {
    announce(`Model ${model.name} selected; classifying ${state.items.length} image${state.items.length === 1 ? "" : "s"} again.`);
    classify(state.items.slice());
  }
}

// ---------- adding images ----------

function addFiles(fileList, source) {
  const files = Array.from(fileList || []).filter((f) => f && f.size !== undefined);
  if (!files.length) return;
  if (el.alert.dataset.kind !== "key") hideAlert(); // the key is still missing
  const added = [];
  const frag = document.createDocumentFragment();
  for (const raw of files) {
    let file = raw;
    if (source === "paste" && (!raw.name || raw.name === "image.png")) {
      const ext = (raw.type.split("/")[1] || "png").replace("jpeg", "jpg");
      file = new File([raw], `pasted-${new Date().toISOString().slice(11, 19).replace(/:/g, "")}.${ext}`, { type: raw.type });
    }
    const item = { id: state.nextId++, file, url: URL.createObjectURL(file), run: 0, result: null, problem: null };
    item.card = buildCard(item, el.template, removeItem);
    added.push(item);
    frag.append(item.card);
  }
  state.items = added.concat(state.items);
  el.results.prepend(frag);
  updateChrome();
  revealCard(added[0].card);
  if (!state.model) {
    const msg = state.keyNeeded
      ? { title: "API key needed", text: "Type the server’s API key in the field at the top; the image is classified as soon as it is accepted." }
      : { title: "No model ready yet", text: "The image will be classified as soon as a model has loaded." };
    for (const item of added) {
      item.waitingForModel = true;
      setCardProblem(item, msg);
    }
    if (state.keyNeeded) askForKey();
    return;
  }
  classify(added);
}

// On a phone the results start below the fold: bring the new card into view (no focus moves).
function revealCard(card) {
  if (card.getBoundingClientRect().top < window.innerHeight - 64) return;
  const still = window.matchMedia("(prefers-reduced-motion: reduce)").matches;
  card.scrollIntoView({ behavior: still ? "auto" : "smooth", block: "start" });
}

function removeItem(item) {
  const idx = state.items.indexOf(item);
  if (idx >= 0) state.items.splice(idx, 1);
  item.run += 1; // late responses for it are ignored
  abortStale();
  URL.revokeObjectURL(item.url);
  const next = item.card.nextElementSibling || item.card.previousElementSibling;
  item.card.remove();
  updateChrome();
  const focusTarget = next ? $(".result-remove", next) : el.dropzone;
  focusTarget.focus();
}

function clearAll() {
  for (const item of state.items) {
    item.run += 1;
    URL.revokeObjectURL(item.url);
  }
  abortStale();
  state.items = [];
  el.results.replaceChildren();
  hideAlert();
  updateChrome();
  el.summary.textContent = "";
  el.dropzone.focus();
  announce("All images removed.");
}

function updateChrome() {
  const n = state.items.length;
  el.empty.hidden = n > 0;
  el.resultsHead.hidden = n === 0;
  el.clearButton.hidden = n === 0;
  el.results.setAttribute("aria-busy", String(state.inflight > 0));
  document.body.classList.toggle("is-busy", state.inflight > 0);
}

// ---------- classification ----------

// A request none of whose images still wants its answer (another model picked, the card
// removed or sent again) is cancelled: the next run waited for it behind the queue.
function abortStale() {
  for (const req of state.requests) {
    if (req.jobs.every((j) => j.item.run !== j.run)) {
      req.controller.abort();
      state.requests.delete(req);
    }
  }
}

function classify(items) {
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
  const others = state.items.filter((it) => it !== item && it.problem && it.problem.retry);
  classify([item, ...others]);
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
  if (failed) text += ` ${failed} could not be classified.`;
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

async function sendBatch(jobs, model, topK, attempt, tally) {
  const live = jobs.filter((j) => j.item.run === j.run);
  if (!live.length) return;
  const form = new FormData();
  for (const j of live) form.append("file", j.item.file, shortName(j.item.file.name || "image"));
  const params = new URLSearchParams({ top_k: String(topK) });
  if (model.default_catalog) params.set("similar", String(SIMILAR_K));
  const url = `/v1/models/${encodeURIComponent(model.name)}/predict?${params}`;
  let response;
  const req = { controller: new AbortController(), jobs: live };
  state.requests.add(req);
  try {
    response = await fetch(url, { method: "POST", body: form, headers: { Accept: "application/json" }, signal: req.controller.signal });
  } catch {
    state.requests.delete(req);
    if (!req.controller.signal.aborted) failAll(live, { status: 0 }, model);
    return;
  }
  state.requests.delete(req);
  if (response.ok) {
    // The server answered: a "can't reach the server" banner from an earlier failure is stale.
    if (["request", "offline", "key"].includes(el.alert.dataset.kind)) hideAlert();
    if (el.status.dataset.state === "down") pollReady();
    const body = await response.json();
    live.forEach((j, i) => {
      if (j.item.run !== j.run) return;
      const result = body.results[i];
      j.item.result = result;
      renderResult(j.item, result, body, model);
    });
    tally.images += live.length;
    tally.ms += body.timings.total_ms;
    renderSummary(body, tally);
    return;
  }
  const problem = await readProblem(response);
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
  if (problem.status === 404) loadModels({ keepSelection: false });
  failAll(live, problem, model);
}

// The server prefixes the detail with "image 2 ('x.txt'): " in a batch; the card already says which.
function stripIndex(problem) {
  const copy = { ...problem };
  if (typeof copy.detail === "string") copy.detail = copy.detail.replace(/^image \d+(?: \([^)]*\))?: /, "");
  return copy;
}

function failAll(jobs, problem, model) {
  const msg = problemMessage(problem, { model: model.name });
  for (const j of jobs) {
    // The file's own size goes into "It is 772 KB; the limit is ..." (one file per request then).
    // The status is kept: cards refused for want of a key are sent again once one is accepted.
    if (j.item.run === j.run) setCardProblem(j.item, { ...problemMessage(problem, { model: model.name, size: j.item.file.size }), status: problem.status }, retry);
  }
  if (problem.status === 0 || problem.status === 401 || problem.status === 404) {
    showAlert(msg.title, msg.text, alertKind(problem.status));
  }
  // The status pill said "Ready" for up to 15 s after a request could not reach the server.
  if (problem.status === 0) pollReady();
}

// ---------- rendering a card ----------

function renderSummary(body, tally) {
  const n = tally.images;
  el.summary.textContent = `Last run: ${n} image${n === 1 ? "" : "s"} with ${body.model} v${body.version} on ${providerName(body.provider)} in ${ms(tally.ms)}`;
}

// ---------- input wiring ----------

function wireInputs() {
  el.dropzone.addEventListener("click", () => el.fileInput.click());
  $(".skip-link").addEventListener("click", (e) => {
    e.preventDefault();
    el.dropzone.focus();
  });
  el.fileInput.addEventListener("change", () => {
    addFiles(el.fileInput.files, "picker");
    el.fileInput.value = "";
  });
  el.cameraButton.addEventListener("click", () => el.cameraInput.click());
  el.cameraInput.addEventListener("change", () => {
    addFiles(el.cameraInput.files, "camera");
    el.cameraInput.value = "";
  });
  el.clearButton.addEventListener("click", clearAll);
  el.modelSelect.addEventListener("change", () => selectModel(el.modelSelect.value));
  el.topk.addEventListener("change", () => {
    if (state.model && state.items.length) classify(state.items.slice());
  });
  acceptDropsAndPastes(addFiles);
}

function init() {
  wireInputs();
  updateChrome();
  // auth.js: a key was entered and accepted; reads may have been refused without it.
  document.addEventListener("imgclass:key-accepted", async () => {
    if (el.alert.dataset.kind === "key") hideAlert();
    await loadModels();
    // Cards refused with a 401 were waiting for this key: they are sent again.
    const waiting = state.items.filter((it) => it.problem && it.problem.status === 401);
    if (waiting.length && state.model) classify(waiting);
  });
  // teach.js could not reach the server: the pill says so until /readyz answers again, and
  // then "imgclass:server-back" clears Teach's "Can't reach the server" too.
  document.addEventListener("imgclass:server-unreachable", () => {
    if (el.status.dataset.state === "down") return; // already checking every 5 s
    setStatus("down", "Offline");
    window.clearTimeout(pollTimer);
    pollTimer = window.setTimeout(pollReady, 3000);
  });
  // teach.js: a model was just taught; list it and select it for "try it".
  document.addEventListener("imgclass:model-taught", async (e) => {
    await loadModels();
    el.modelSelect.value = e.detail.model;
    selectModel(e.detail.model);
  });
  loadModels({ keepSelection: false });
  pollReady();
}

if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
else init();
