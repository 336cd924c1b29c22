// API key for servers that need one: asks GET /v1/access, shows a key field when a key is
// required, keeps the key in sessionStorage (this tab, this session) and sends it as the
// X-API-Key header on this page's own requests. Never in a URL, never in localStorage.
// Loaded before app.js, so every later fetch of the page carries the key.

import { setText } from "./dom.js";
import { learnLimits } from "./problems.js";

const STORAGE_KEY = "imgclass.apiKey";
const nativeFetch = window.fetch.bind(window);

function storedKey() {
  try {
    return sessionStorage.getItem(STORAGE_KEY) || "";
  } catch {
    return ""; // storage disabled: the key lives only as long as the page
  }
}

let memoryKey = storedKey();

function setKey(value) {
  memoryKey = value;
  try {
    if (value) sessionStorage.setItem(STORAGE_KEY, value);
    else sessionStorage.removeItem(STORAGE_KEY);
  } catch {
    /* keep it in memory only */
  }
}

function sameOrigin(input) {
  const url = new URL(input instanceof Request ? input.url : String(input), location.href);
  return url.origin === location.origin;
}

// The page's own requests get the key; requests to other origins never do.
window.fetch = (input, init = {}) => {
  if (!memoryKey || !sameOrigin(input)) return nativeFetch(input, init);
  const headers = new Headers(init.headers || (input instanceof Request ? input.headers : undefined));
  if (!headers.has("X-API-Key")) headers.set("X-API-Key", memoryKey);
  return nativeFetch(input, { ...init, headers }).then((response) => {
    if (response.status === 401) showField(REFUSED);
    return response;
  });
};

let box = null;
let baseNote = ""; // what the field says when nothing went wrong
const REFUSED = "The key was not accepted. Check it and try again.";

function build() {
  box = document.createElement("form");
  box.id = "auth-key";
  box.className = "auth-key";
  box.hidden = true;
  box.setAttribute("aria-label", "API key");
  box.innerHTML = `
    <label for="auth-key-input">API key</label>
    <input id="auth-key-input" name="key" type="password" autocomplete="off" spellcheck="false"
      placeholder="needed by this server" required>
    <button type="submit">Use key</button>
    <span class="auth-key-note" role="status" aria-live="polite"></span>`;
  // Typing a new key: "not accepted" was about the last one.
  box.addEventListener("input", () => {
    box.classList.remove("auth-key-attention");
    const note = box.querySelector(".auth-key-note");
    if (note.textContent === REFUSED) note.textContent = baseNote;
  });
  box.addEventListener("submit", async (event) => {
    event.preventDefault();
    box.classList.remove("auth-key-attention");
    const input = box.querySelector("input");
    setKey(input.value.trim());
    input.value = "";
    await refresh();
  });
  const slot = document.querySelector(".topbar-end") || document.body;
  slot.prepend(box);
}

function showField(note) {
  if (!box) build();
  box.hidden = false;
  setText(box.querySelector(".auth-key-note"), note); // a live region
}

// Another part of the page was refused for want of the key (a 401): show the field, mark it
// and put the cursor in it, so the person sees where the key goes (the server's 401 text is
// written for API clients: "send it once, as 'X-API-Key: <key>' ...").
export function askForKey(note) {
  showField(note || box?.querySelector(".auth-key-note").textContent || "");
  box.classList.add("auth-key-attention");
  box.querySelector("input").focus({ preventScroll: true });
}

async function refresh() {
  let access;
  try {
    const r = await window.fetch("/v1/access", { cache: "no-store", headers: { Accept: "application/json" } });
    if (!r.ok) return;
    access = await r.json();
    learnLimits(access); // upload limits, where this server says them
  } catch {
    return; // the page's own status pill reports an unreachable server
  }
  const needed = access.key_required_for_reads || access.key_required_for_writes;
  if (!needed) {
    if (box) box.hidden = true;
    return;
  }
  if (access.key_accepted) {
    if (box) box.hidden = true;
    document.dispatchEvent(new CustomEvent("imgclass:key-accepted"));
    return;
  }
  const rejected = Boolean(memoryKey); // a key was sent and the server did not take it
  if (memoryKey) setKey("");
  baseNote = access.key_required_for_reads
    ? "This server needs its API key for every request."
    : "This server needs its API key to add or change data.";
  showField(rejected ? REFUSED : baseNote);
}

refresh();
