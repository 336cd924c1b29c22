// The images on the page: added (picker, camera, drop, paste) as cards at the top of the
// results, each classified at once or when a model is ready; removed one by one or all.
import { askForKey } from "./auth.js";
import { buildCard } from "./cards.js";
import { abortStale, classify } from "./classify.js";
import { scrollBehavior } from "./dom.js";
import { announce, hideAlert, updateChrome } from "./page-chrome.js";
import { $, el, state } from "./page-state.js";

export function addFiles(fileList, source) {
  const files = Array.from(fileList || []).filter((f) => f && f.size !== undefined);
  if (!files.length) return;
  // Still true: the key is missing, the model list not had yet (it is asked again).
  if (!["key", "models"].includes(el.alert.dataset.kind)) hideAlert();
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
  if (state.keyNeeded) askForKey();
  classify(added); // or held until a model is settled (classify.js)
}

// On a phone the results start below the fold: bring the new card into view (no focus moves).
function revealCard(card) {
  if (card.getBoundingClientRect().top < window.innerHeight - 64) return;
  card.scrollIntoView({ behavior: scrollBehavior(), block: "start" });
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

export function clearAll() {
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
