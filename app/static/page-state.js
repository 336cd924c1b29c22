// The classifier page's elements and its state, shared by the modules that drive it
// (app.js wires them): one place, so no module keeps a copy of another's.
export const STORAGE_KEY = "imgclass.model";

export const $ = (sel, root = document) => root.querySelector(sel);

export const el = {
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

export const state = {
  models: [],
  model: null, // the selected ModelInfo
  modelSettled: false, // chosen by the user, or the default once no model is still loading
  items: [], // {id, file, url, card, run, result, problem}
  nextId: 1,
  inflight: 0,
  requests: new Set(), // {controller, jobs} of predict requests on the wire
  queue: Promise.resolve(),
  keyNeeded: false, // the server refused to list its models without its API key
};
