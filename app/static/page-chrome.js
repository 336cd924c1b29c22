// The classifier page's own feedback: the alert banner, the screen-reader status line, and
// the results header, empty state and busy marks that follow the list of images.
import { el, state } from "./page-state.js";

// An alert's kind says when it is stale: "offline" once the server answers again, "key" once
// a key is accepted; the others when the next thing is done.
export const alertKind = (status) => (status === 0 ? "offline" : status === 401 ? "key" : "request");

export function showAlert(title, text, kind = "page") {
  el.alert.replaceChildren();
  el.alert.dataset.kind = kind;
  const strong = document.createElement("strong");
  strong.textContent = title;
  const span = document.createElement("span");
  span.textContent = ` ${text}`;
  el.alert.append(strong, span);
  el.alert.hidden = false;
}

export function hideAlert() {
  el.alert.hidden = true;
  delete el.alert.dataset.kind;
  el.alert.replaceChildren();
}

export function announce(text) {
  // Clear first so repeating the same sentence is announced again.
  el.srStatus.textContent = "";
  window.setTimeout(() => {
    el.srStatus.textContent = text;
  }, 30);
}

export function updateChrome() {
  const n = state.items.length;
  el.empty.hidden = n > 0;
  el.resultsHead.hidden = n === 0;
  el.clearButton.hidden = n === 0;
  el.results.setAttribute("aria-busy", String(state.inflight > 0));
  document.body.classList.toggle("is-busy", state.inflight > 0);
}
