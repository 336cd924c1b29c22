// Teach flow: name a model, add classes, drop/paste/snap pictures into each, train on this server
// (POST /v1/catalogs/{c}/train), follow the job, show held-out results in plain words, try it.
// Talks only to this server's /v1 API (what Train sends: teach-send.js). The new model appears
// in the page's model list (app.js listens for "imgclass:model-taught").
import { askForKey } from "./auth.js";
import { isolate } from "./bidi.js";
import { h, scrollBehavior, setText } from "./dom.js";
import { problemMessage } from "./problems.js";
import { addFiles as addPictures, classCard, refuse } from "./teach-class.js";
import { confirmReplace, shippedProblem, whatNameIs } from "./teach-guard.js";
import { renderResults, teachProblem, unusableClasses } from "./teach-report.js";
import { api, dropCatalog, freshCatalog, startJob, uploadClasses } from "./teach-send.js";

const NAME_RE = /^[a-z0-9][a-z0-9_-]{0,63}$/;
// The job this tab started, kept across a reload (the job itself lives on the server).
const JOB_KEY = "imgclass.teach.job";
const $ = (sel, root = document) => root.querySelector(sel);

const state = { classes: [], active: null, nextId: 1, busy: false, skipped: [], shownProblem: null, keyWait: false };
let root;
let ui;
// What a class box (teach-class.js) needs of the form.
const hooks = {
  changed: () => changed(),
  refresh: () => refresh(),
  remove: (cls) => removeClass(cls),
  activate: (cls) => { state.active = cls; },
  alive: (cls) => state.classes.includes(cls),
};

// Anything the person changes: an error about the last attempt is stale, and a pending
// "replace the model?" question is answered "not now".
function changed() {
  clearError();
  document.dispatchEvent(new CustomEvent("imgclass:teach-input"));
  refresh();
}

function clearError() {
  state.shownProblem = null;
  if (ui.error.hidden) return; // an alert: not touched on every keystroke
  ui.error.hidden = true;
  ui.error.replaceChildren();
}

function addClass(label = "") {
  const cls = { id: state.nextId++, label, files: [], rejected: [], checking: 0 };
  state.classes.push(cls);
  ui.classes.append(classCard(cls, hooks));
  changed();
  return cls;
}

function removeClass(cls) {
  for (const f of cls.files) URL.revokeObjectURL(f.url);
  const at = state.classes.indexOf(cls);
  const hadFocus = cls.card.contains(document.activeElement);
  state.classes = state.classes.filter((c) => c !== cls);
  // A paste then goes to the class now shown first, not to the one removed.
  if (state.active === cls) state.active = null;
  cls.card.remove();
  changed();
  // Focus fell to <body> with the ✕ (round 43): the next class's name, else the one before.
  const near = state.classes[at] || state.classes[at - 1];
  if (hadFocus) (near ? near.nameInput : ui.addClass).focus();
}

function refresh() {
  state.classes.forEach((cls, i) => {
    // Each class's controls get a name of their own: a screen reader listed "Class name",
    // "Remove this class" and "Add pictures" once per class, all alike.
    const which = `class ${i + 1}${cls.label.trim() ? ` (${cls.label.trim()})` : ""}`;
    cls.nameInput.setAttribute("aria-label", `Name of class ${i + 1}`);
    cls.remove.setAttribute("aria-label", `Remove ${which}`);
    cls.add.setAttribute("aria-label", `Add pictures to ${which}`);
    cls.dismiss.setAttribute("aria-label", `Dismiss the list of files left out of ${which}`);
  });
  // The counts and the hint are live regions: written when what they say changes, not on
  // every keystroke (round 43).
  for (const cls of state.classes) {
    const n = cls.files.length;
    // What will be sent; the files left out are counted in their own list below the pictures.
    setText(cls.count, `${n} picture${n === 1 ? "" : "s"}` + (cls.checking ? " · checking…" : ""));
  }
  // Pictures the server refused are no longer in cls.files: never counted here.
  const readyClasses = state.classes.filter((c) => c.files.length >= 2 && c.label.trim());
  const ready = readyClasses.length;
  const pictures = readyClasses.reduce((n, c) => n + c.files.length, 0);
  const unnamed = state.classes.filter((c) => c.files.length >= 2 && !c.label.trim()).length;
  // The advice only while a class that would be sent (as train() picks them) has fewer than ten.
  const few = state.classes.some((c) => c.files.length && c.label.trim() && c.files.length < 10);
  setText(ui.hint, ready >= 2
    ? `${ready} classes ready · ${pictures} pictures.${few ? " Ten or more pictures per class give steadier results." : ""}`
    : ready + unnamed >= 2
      ? `Name ${unnamed === 1 ? "the class" : "the classes"} that ${unnamed === 1 ? "has" : "have"} pictures but no name.`
      : "Add at least two classes with two or more pictures each.");
  ui.train.disabled = state.busy || ready < 2;
}

// `text` is shown (and is the bar's value text); `say` is announced, when it changes: the
// phase, not each tick (the upload's "8 of 40", every 250 ms while training).
function setProgress(fraction, text, say = text) {
  ui.progress.hidden = false;
  ui.bar.style.width = `${Math.round(fraction * 100)}%`;
  ui.progress.setAttribute("aria-valuenow", String(Math.round(fraction * 100)));
  ui.progress.setAttribute("aria-valuetext", text);
  setText(ui.phase, text);
  setText(ui.say, say);
}

function showError(problem) {
  state.shownProblem = problem;
  const msg = problemMessage(problem);
  // A 401's own text tells API clients which header to send; the page has a field for the key.
  const ownWords = problem.status === 401;
  // Class names and refused files' names in it are isolated (a right-to-left name).
  const names = [...state.classes.map((c) => c.label), ...state.skipped.map((s) => s.name)];
  ui.error.hidden = false;
  ui.error.replaceChildren(
    h("strong", {}, ...isolate(ownWords ? msg.title : problem.title || msg.title, names)),
    h("p", {}, ...isolate(ownWords ? msg.text : problem.detail || msg.text, names)),
  );
  if (ownWords) {
    ui.error.scrollIntoView({ block: "nearest" }); // the field is in the sticky bar, in view
    askForKey();
  }
}

// The page's status pill checks the server again and says when it answers (server-back).
function unreachable() {
  document.dispatchEvent(new CustomEvent("imgclass:server-unreachable"));
}

async function train() {
  const model = ui.name.value.trim();
  clearError();
  state.skipped = [];
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
  // The name of a shipped model is refused now, before a catalog is made or a picture sent;
  // a taught model's name asks first (teaching again replaces the model everyone is served).
  const existing = await whatNameIs(model);
  if (existing && (existing.shipped || !(await confirmReplace(ui.confirm, existing.model, labels)))) {
    if (existing.shipped) showError(shippedProblem(model));
    state.busy = false;
    refresh();
    // Focus stays in the form (Train was disabled, or the question's button removed, while
    // focused): at the name refused, or at Train after "not now".
    if (existing.shipped) {
      ui.name.setAttribute("aria-invalid", "true");
      ui.name.focus();
    } else if (!ui.confirm.contains(document.activeElement) && root.contains(document.activeElement)) {
      // Changing the form answered "not now": focus stays where the person is typing.
    } else {
      (ui.train.disabled ? ui.name : ui.train).focus();
    }
    return;
  }
  // Only now, with the job going ahead, the last job's results give way.
  ui.results.hidden = true;
  const backbone = ui.backbone.value;
  // The example catalog is made for this job: if the job never starts (the name is refused,
  // a limit is reached, an upload fails), it is deleted again instead of left behind.
  let catalog = null;
  let started = false;
  let failed = false;
  // Until the job exists, leaving the page loses the pictures picked (a pull-to-refresh
  // during a long upload did, without a word: round 44); the browser asks first.
  window.addEventListener("beforeunload", askBeforeLeaving);
  try {
    setProgress(0, "Preparing the example catalog…");
    // After "Replace" the question (and its focused button) is gone: focus goes to the progress.
    if (existing || document.activeElement === document.body) ui.progress.focus();
    catalog = await freshCatalog(model, backbone);
    const skipped = []; // { name, label, reason, cls, f }
    state.skipped = skipped;
    await uploadClasses(catalog, classes, skipped, (sent, total) => {
      setProgress(0.5 * (sent / total), `Uploading pictures: ${sent} of ${total}`, "Uploading pictures…");
    });
    // Refused pictures leave their class (listed there with the reason): the counts and the
    // hint say what the server took, and a class left with fewer than two is said plainly
    // before a job is asked for.
    for (const s of skipped) refuse(s.cls, s.f, s.reason);
    refresh();
    const unusable = unusableClasses(classes, (c) => skipped.filter((s) => s.cls === c));
    if (unusable) throw unusable;
    const job = await startJob(catalog, model);
    started = true;
    window.removeEventListener("beforeunload", askBeforeLeaving); // a reload picks the job up
    await follow(job, 0.5);
  } catch (problem) {
    failed = true;
    ui.progress.hidden = true;
    setText(ui.say, "");
    showError(teachProblem(problem, state.skipped));
    if (problem && problem.status === 0) unreachable();
    if (catalog && !started) await dropCatalog(catalog);
  } finally {
    window.removeEventListener("beforeunload", askBeforeLeaving);
    state.busy = false;
    refresh();
  }
  // Focus was on Train (disabled meanwhile) or on the progress (hidden now) and fell to <body>
  // (round 43): it goes to Train, to try again, or to the error while Train cannot be used.
  const lost = document.activeElement === document.body || ui.progress.contains(document.activeElement);
  if (failed && lost) (ui.train.disabled ? ui.error : ui.train).focus();
}

function askBeforeLeaving(event) {
  event.preventDefault();
  event.returnValue = ""; // older browsers ask only when this is set
}

// Poll a job to its end and show its results; its progress fills the bar from `start` on.
// A poll that gets no answer, or a proxy's 502-504 (a restart, a network blip), is asked
// again, backing off to 5 s, for about two minutes: one lost poll dropped the job from the
// page while it went on to succeed (round 44).
const POLL_TRIES = 30;

async function follow(job, start) {
  remember(job.url);
  let done = job;
  let misses = 0;
  while (done.status === "queued" || done.status === "running") {
    const said = misses ? "no answer from the server, asking again" : done.phase;
    setProgress(start + (1 - start) * done.progress, `Training ${done.model}: ${said}…`);
    await new Promise((res) => setTimeout(res, misses ? Math.min(5000, 250 * 2 ** misses) : 250));
    try {
      done = await api(done.url, { cache: "no-store" });
      misses = 0;
    } catch (problem) {
      const passing = problem && [0, 502, 503, 504].includes(problem.status);
      if (!passing || ++misses > POLL_TRIES) throw problem;
    }
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
    if (problem && problem.status === 0) unreachable();
  } finally {
    state.busy = false;
    refresh();
  }
}

function showResults(job) {
  const r = job.result;
  state.backbone = r.backbone; // after a reload the form shows what the job was built on
  if ([...ui.backbone.options].some((o) => o.value === r.backbone)) ui.backbone.value = r.backbone;
  renderResults(ui.results, job, state.skipped, tryIt);
  ui.results.hidden = false;
  ui.results.scrollIntoView({ behavior: scrollBehavior(), block: "nearest" });
}

function tryIt(model) {
  document.dispatchEvent(new CustomEvent("imgclass:model-taught", { detail: { model } }));
  const target = $("#dropzone");
  if (target) {
    target.scrollIntoView({ behavior: scrollBehavior(), block: "center" });
    target.focus({ preventScroll: true });
  }
}

let backboneTimer = 0;

async function loadBackbones() {
  window.clearTimeout(backboneTimer);
  try {
    const body = await api("/v1/models", { cache: "no-store" });
    state.keyWait = false;
    const usable = (body.models || []).filter((m) => m.outputs && m.outputs.embedding && !m.backbone);
    ui.backbone.replaceChildren(...usable.map((m) => h("option", { value: m.name }, m.name)));
    const want = usable.find((m) => m.name === (state.backbone || "imagenet"));
    if (want) ui.backbone.value = want.name;
    if (!usable.length) backboneTimer = window.setTimeout(loadBackbones, 2000);
  } catch (problem) {
    if (problem && problem.status === 401) {
      // Asking every 3 s cannot help until a key is entered (auth.js then says so).
      state.keyWait = true;
      ui.backbone.replaceChildren(h("option", { value: "", disabled: true }, "API key needed"));
      ui.backbone.value = "";
      return;
    }
    backboneTimer = window.setTimeout(loadBackbones, 3000);
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
  ui.addClass = h("button", { type: "button", class: "btn btn-ghost", onclick: () => addClass("").nameInput.focus() }, "Add a class");
  ui.train = h("button", { type: "button", class: "btn btn-primary", id: "teach-train", onclick: train }, "Train");
  ui.bar = h("div", { class: "teach-bar-fill" });
  ui.phase = h("p", { class: "teach-phase" });
  // Not inside the progress bar: a bar's content is not read (its value text is).
  ui.say = h("p", { class: "visually-hidden", "aria-live": "polite" });
  ui.progress = h("div", {
    class: "teach-progress", role: "progressbar", "aria-label": "Teaching progress", tabindex: "-1",
    "aria-valuemin": "0", "aria-valuemax": "100", hidden: true,
  }, h("div", { class: "teach-bar" }, ui.bar), ui.phase);
  ui.error = h("div", { class: "teach-error", role: "alert", tabindex: "-1", hidden: true });
  ui.confirm = h("div", { class: "teach-confirm-slot", hidden: true });
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
      ui.addClass, ui.train),
    ui.hint, ui.confirm, ui.progress, ui.say, ui.error, ui.results);
  addClass("");
  addClass("");
  ui.name.addEventListener("input", () => {
    ui.nameNote.hidden = true;
    ui.name.removeAttribute("aria-invalid");
    changed();
  });
  ui.backbone.addEventListener("change", changed);
  // What stopped the last attempt is resolved: a key was accepted (401), the server answers
  // again ("can't reach the server").
  document.addEventListener("imgclass:key-accepted", () => {
    if (state.shownProblem && state.shownProblem.status === 401) clearError();
    if (state.keyWait) loadBackbones();
  });
  document.addEventListener("imgclass:server-back", () => {
    if (state.shownProblem && state.shownProblem.status === 0) clearError();
    if (!state.busy) resume(); // a job this tab lost sight of: its outcome, when it has one
  });
  // A paste while a class is active (clicked or focused) goes to that class, not to the classifier.
  document.addEventListener("paste", (e) => {
    if (state.active && !state.classes.includes(state.active)) state.active = null;
    // The class that was active was removed: the first class takes the paste instead.
    if (!state.active && state.classes.length && root.contains(document.activeElement)) state.active = state.classes[0];
    if (!state.active || !root.contains(document.activeElement) && !root.matches(":hover")) return;
    const files = Array.from(e.clipboardData ? e.clipboardData.files : []);
    if (!files.length) return;
    e.preventDefault();
    e.stopImmediatePropagation();
    addPictures(state.active, files, hooks);
  }, true);
  loadBackbones();
  resume();
}

if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", build);
else build();
