// imgclass browser page: pick a model, add images (drop, picker, paste, camera), show results.
// Plain JS, no build step, no external requests: everything talks to this server's /v1 API.
// This module wires the page's parts together: model-picker.js (the models), image-list.js
// (the images), classify.js (their answers), server-status.js (the pill), page-chrome.js.
import { classify } from "./classify.js";
import { addFiles, clearAll } from "./image-list.js";
import { loadModels, selectModel } from "./model-picker.js";
import { hideAlert, updateChrome } from "./page-chrome.js";
import { acceptDropsAndPastes } from "./page-drop.js";
import { $, el, state } from "./page-state.js";
import { pollReady, serverUnreachable } from "./server-status.js";

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
  // teach.js could not reach the server: the pill checks (server-status.js), and once /readyz
  // answers, "imgclass:server-back" clears Teach's "Can't reach the server".
  document.addEventListener("imgclass:server-unreachable", serverUnreachable);
  // classify.js: the model asked for is no longer served (a 404).
  document.addEventListener("imgclass:model-gone", () => loadModels({ keepSelection: false }));
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
