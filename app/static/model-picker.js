// The model picker: the served models listed (and the ones still loading), the choice kept
// across visits, the model card beside it, and "API key needed" where the list is refused.
import { classify } from "./classify.js";
import { renderModelInfo, renderModelPlaceholder } from "./model-info.js";
import { within } from "./net.js";
import { announce, hideAlert, showAlert } from "./page-chrome.js";
import { STORAGE_KEY, el, state } from "./page-state.js";
import { problemMessage, readProblem } from "./problems.js";
import { pollReady, setStatus } from "./server-status.js";

const MODELS_DEADLINE_MS = 10_000;
// Seconds before asking again after the list could not be had, one after another; then the last.
const RETRY_S = [2, 4, 8, 15, 30];

let nextTry = 0; // the next call already planned (one at a time)
let failures = 0;

export async function loadModels({ keepSelection = true } = {}) {
  window.clearTimeout(nextTry);
  let body;
  try {
    const answer = await within(MODELS_DEADLINE_MS, async (signal) => {
      const r = await fetch("/v1/models", { cache: "no-store", headers: { Accept: "application/json" }, signal });
      if (r.status === 401) return { key: true };
      if (!r.ok) return { problem: await readProblem(r) };
      // Not the list (an auth proxy's sign-in page, a body cut short): as unreadable.
      return { body: await r.json().catch(() => null) };
    });
    if (answer.key) {
      needKey();
      return;
    }
    body = answer.body;
    if (answer.problem || !body || !Array.isArray(body.models)) {
      askAgain(answer.problem || { status: 200, unreadable: true }, keepSelection);
      return;
    }
  } catch (err) {
    // No answer (or none in time): the pill's /readyz check says whether the server is up.
    askAgain(err && err.timeout ? err : { status: 0 }, keepSelection);
    return;
  }
  failures = 0;
  if (["models", "offline"].includes(el.alert.dataset.kind)) hideAlert();
  if (state.keyNeeded) {
    state.keyNeeded = false;
    pollReady(); // the pill said "API key needed"
  }
  state.models = body.models || [];
  const loading = body.loading || [];
  const refused = body.refused || [];
  // A pick the page made itself while models were still loading is not kept: it is made
  // again from the fuller list (a first visit during loading picked digits for a photo).
  const previous = keepSelection && state.model && state.modelSettled ? state.model.name : localStorage.getItem(STORAGE_KEY);

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
    const kept = state.models.find((m) => m.name === previous);
    el.modelSelect.value = (kept || widest).name;
    selectModel((kept || widest).name, { reclassify: false, remember: false });
    // Settled: the user's choice (now or on an earlier visit), or the widest model once none
    // is still loading. Until then images wait: a wider model may still come.
    state.modelSettled = Boolean(kept) || !loading.length;
    const waiting = state.items.filter((it) => it.waitingForModel);
    if (waiting.length && state.modelSettled) classify(waiting);
  }
  if (loading.length) nextTry = window.setTimeout(() => loadModels({ keepSelection: true }), 1500);
}

// The list could not be had: a network failure, or any answer but the list (a reverse proxy's
// 502 was never asked again, round 43). Asked again, less often each time; the images added
// meanwhile wait for it (classify.js) and are classified once it comes.
function askAgain(problem, keepSelection) {
  const wait = RETRY_S[Math.min(failures, RETRY_S.length - 1)];
  failures += 1;
  const msg = problemMessage(problem);
  renderModelPlaceholder(el.modelInfo, `${msg.title}. Asking the server again…`);
  showAlert(msg.title, `The list of models could not be loaded; this page asks again in ${wait} s.`, problem.status === 0 ? "offline" : "models");
  window.clearTimeout(nextTry);
  nextTry = window.setTimeout(() => loadModels({ keepSelection }), wait * 1000);
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

// `remember`: the user chose it (the picker, or "try it" after teaching): kept for later
// visits. The page's own default is not stored, so it follows the models served.
export function selectModel(name, { reclassify = true, remember = true } = {}) {
  const model = state.models.find((m) => m.name === name);
  if (!model) return;
  const changed = !state.model || state.model.name !== model.name;
  state.model = model;
  if (remember) {
    localStorage.setItem(STORAGE_KEY, model.name);
    state.modelSettled = true;
  }
  renderModelInfo(el.modelInfo, model);
  hideAlert();
  if (changed && reclassify && state.items.length) {
    announce(`Model ${model.name} selected; classifying ${state.items.length} image${state.items.length === 1 ? "" : "s"} again.`);
    classify(state.items.slice());
  }
}
