// The server status pill at the top of the page: what /readyz says, checked now and again.
// It says "Offline" only when /readyz itself gets no answer: a request that failed elsewhere
// (one blip, or a 4xx/5xx, which is an answer) is checked here before anything is said.
import { setText } from "./dom.js";
import { within } from "./net.js";
import { hideAlert } from "./page-chrome.js";
import { $, el, state } from "./page-state.js";

const RECHECK_MS = 3000; // after another part of the page could not reach the server
// /readyz answers at once when the server runs; a frozen one (SIGSTOP, a hung proxy) never
// answered, and the pill said "Ready" and never asked again (round 43).
const READYZ_DEADLINE_MS = 5000;

let pollTimer = 0;
let polling = false;
// Another part of the page (teach.js) could not reach the server since the last check.
let unconfirmed = false;

// Asks /readyz now and again later; a call while a check is under way is that check.
export async function pollReady() {
  if (polling) return;
  polling = true;
  window.clearTimeout(pollTimer);
  const reported = unconfirmed;
  unconfirmed = false;
  let next = 15000;
  try {
    const { r, body } = await within(READYZ_DEADLINE_MS, async (signal) => {
      const answer = await fetch("/readyz", { cache: "no-store", signal });
      return { r: answer, body: await answer.json().catch(() => ({})) };
    });
    el.status.title = "";
    // It answers again after the pill, or another part of the page, said it did not: "Can't
    // reach the server" is stale.
    if (el.status.dataset.state === "down" || reported) {
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
      // Predictions still work; catalogs and teaching do not (the data folder is gone).
      setStatus("degraded", "Storage unavailable");
      el.status.title = "The server's data folder was removed or replaced: predictions work, catalogs and teaching answer 503.";
      next = 5000;
    } else {
      setStatus("down", "No model available");
      next = 5000;
    }
  } catch (err) {
    if (err && err.timeout) {
      setStatus("down", "Not answering");
      el.status.title = `The server took the connection but sent no answer within ${READYZ_DEADLINE_MS / 1000} s.`;
    } else {
      setStatus("down", "Offline");
      el.status.title = "";
    }
    next = 5000;
  }
  polling = false;
  pollTimer = window.setTimeout(pollReady, next);
}

export function setStatus(kind, text) {
  el.status.dataset.state = kind;
  setText($(".pill-text", el.status), text); // a live region: written when it changes
}

// teach.js could not reach the server ("imgclass:server-unreachable"): one request's blip, or
// the server gone. The pill is not changed here (it said "Offline" at once, for a blip too):
// /readyz is asked in 3 s, "Offline" if it gets no answer either; if it answers,
// "imgclass:server-back" clears Teach's "Can't reach the server" (said for those 3 s).
export function serverUnreachable() {
  if (el.status.dataset.state === "down") return; // already checking every 5 s
  unconfirmed = true;
  window.clearTimeout(pollTimer);
  pollTimer = window.setTimeout(pollReady, RECHECK_MS);
}
