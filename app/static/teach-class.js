// One class of the Teach form (teach.js): its name (a text area that wraps, at most LABEL_MAX
// characters, said beside it), its pictures (checked by their first bytes, sniff.js), and the
// files left out with the reason (not images; refused by the server when uploaded).
import { bdi } from "./bidi.js";
import { h, setText } from "./dom.js";
import { tooLargeHere } from "./problems.js";
import { showFromServer } from "./server-preview.js";
import { ACCEPTED_TEXT, sniffFile } from "./sniff.js";

export const LABEL_MAX = 60; // characters of a class name (said beside the field, never cut silently)

// `hooks` (teach.js): changed after anything the person changes, refresh for the counts,
// remove(cls), activate(cls) (the class a paste goes to), alive(cls) (not removed meanwhile).
export function classCard(cls, hooks) {
  const count = h("span", { class: "teach-count", "aria-live": "polite" }, "0 pictures");
  const thumbs = h("ul", { class: "teach-thumbs" });
  // Files that are not pictures: listed with the reason, never counted nor sent.
  const issueList = h("ul", { class: "teach-issues-list", tabindex: "0", "aria-label": "Files left out" });
  const issueCount = h("span", { class: "teach-issues-count" });
  // Named per class by teach.js (refresh): "Dismiss the files left out of class 2 (bags)".
  const dismiss = h("button", {
    type: "button", class: "btn btn-ghost btn-small teach-issues-dismiss",
    "aria-label": "Dismiss the list of files left out", onclick: () => dismissIssues(cls),
  }, "Dismiss");
  const issues = h("div", { class: "teach-issues", "aria-live": "polite", hidden: true },
    h("div", { class: "teach-issues-head" }, issueCount, dismiss),
    issueList,
    h("p", { class: "teach-issues-note" }, `Accepted: ${ACCEPTED_TEXT}.`));
  const picker = h("input", { type: "file", accept: "image/*", multiple: true, class: "visually-hidden", tabindex: "-1", "aria-hidden": "true" });
  // A text area of one line that grows: a long name is shown whole, wrapped, not scrolled out
  // of sight in a narrow field. New lines are not part of a name.
  const lengthNote = h("span", { class: "teach-name-length", id: `teach-class-len-${cls.id}`, "aria-live": "polite", hidden: true });
  const name = h("textarea", {
    class: "teach-class-name", rows: "1", "aria-label": "Class name", spellcheck: "false",
    // Short enough for the narrowest card (about 150 px of text beside its ✕ on a desktop).
    placeholder: "Class name", title: `Class name, e.g. Santa (up to ${LABEL_MAX} characters)`,
    maxlength: String(LABEL_MAX), "aria-describedby": `teach-class-len-${cls.id}`,
    onkeydown: (e) => { if (e.key === "Enter") e.preventDefault(); },
    onbeforeinput: (e) => {
      // A paste longer than the room left is cut by maxlength: say so instead of silently.
      if (!/^insertFrom(Paste|Drop)/.test(e.inputType)) return;
      const t = e.target;
      const room = LABEL_MAX - (t.value.length - (t.selectionEnd - t.selectionStart));
      const text = e.data || (e.dataTransfer ? e.dataTransfer.getData("text/plain") : "");
      if (text.length <= room) return;
      cls.cut = true;
      if (room <= 0) sayLength(cls); // nothing goes in: no input event will say it
    },
    // Names typed after the pictures were added must enable Train too (refresh), not only
    // names typed first.
    oninput: (e) => {
      const flat = e.target.value.replace(/[\r\n]+/g, " ");
      if (flat !== e.target.value) e.target.value = flat;
      cls.label = flat;
      fit(e.target);
      sayLength(cls);
      hooks.changed();
    },
  });
  name.value = cls.label;
  const add = h("button", { type: "button", class: "btn btn-small teach-add", onclick: () => picker.click() }, "Add pictures");
  // A ✕ as on the result cards: the word took a third of the row the class name needs.
  const remove = h("button", {
    type: "button", class: "teach-remove", "aria-label": "Remove this class", title: "Remove this class",
    onclick: () => hooks.remove(cls),
  }, h("span", { "aria-hidden": "true" }, "✕"));
  // data-drop-target: page-drop.js shows no "Drop to classify" over it (drops here teach).
  const card = h("li", { class: "teach-class", tabindex: "-1", "data-drop-target": true },
    h("div", { class: "teach-class-head" }, h("div", { class: "teach-class-name-wrap" }, name, lengthNote), remove),
    h("div", { class: "teach-drop", onclick: () => picker.click() },
      // Touch screens cannot drop or paste (as the page's own drop zone says "Choose photos").
      h("span", { class: "only-fine" }, "Drop, paste or "), h("span", { class: "only-touch" }, "Tap to "),
      h("span", { class: "linkish" }, "choose"), h("span", {}, " pictures of this class")),
    thumbs,
    issues,
    h("div", { class: "teach-class-foot" }, count, add),
    picker);
  picker.addEventListener("change", () => { addFiles(cls, picker.files, hooks); picker.value = ""; });
  card.addEventListener("focusin", () => hooks.activate(cls));
  card.addEventListener("pointerdown", () => hooks.activate(cls));
  card.addEventListener("dragover", (e) => { e.preventDefault(); e.stopPropagation(); card.classList.add("is-over"); });
  card.addEventListener("dragleave", () => card.classList.remove("is-over"));
  card.addEventListener("drop", (e) => {
    e.preventDefault();
    e.stopPropagation(); // the page's own drop handler classifies; this one teaches
    card.classList.remove("is-over");
    hooks.activate(cls);
    addFiles(cls, e.dataTransfer.files, hooks);
  });
  Object.assign(cls, { card, thumbs, issues, issueList, issueCount, count, nameInput: name, lengthNote, remove, add, dismiss });
  return card;
}

// The class name's box grows with its text where CSS field-sizing does not.
function fit(area) {
  if (CSS.supports && CSS.supports("field-sizing", "content")) return;
  area.style.height = "auto";
  area.style.height = `${area.scrollHeight + 2}px`;
}

// "42 of 60 characters" from 40 on; at the limit, and when a paste was cut, said as such.
// A live region: not written while hidden, nor with the same words again.
function sayLength(cls) {
  const n = cls.label.length;
  const note = cls.lengthNote;
  const hide = n < LABEL_MAX - 20 && !cls.cut;
  if (note.hidden !== hide) note.hidden = hide;
  note.classList.toggle("at-limit", n >= LABEL_MAX);
  if (!hide) {
    setText(note, cls.cut
      ? `Cut to ${LABEL_MAX} characters: class names are at most ${LABEL_MAX} long.`
      : n >= LABEL_MAX
        ? `${n} of ${LABEL_MAX} characters: the most a class name can have.`
        : `${n} of ${LABEL_MAX} characters`);
  }
  cls.cut = false;
}

// Each file is checked by its first bytes, as the server checks it (sniff.js): a PDF named
// .png or a text file is listed at once as not an image and is neither counted nor sent. A file
// that looks like an image is counted and sent; the server still decodes it and reports the
// ones it cannot read after training. One this browser cannot show (a TIFF, a damaged file)
// gets a "no preview" tile instead of a broken image.
export async function addFiles(cls, list, hooks) {
  const files = Array.from(list || []);
  if (!files.length) return;
  cls.checking += files.length;
  hooks.refresh();
  const checked = await Promise.all(files.map((file) => sniffFile(file)));
  cls.checking -= files.length;
  if (!hooks.alive(cls)) return; // removed meanwhile
  files.forEach((file, i) => {
    const { format, reason } = checked[i];
    const name = file.name || "a pasted file";
    if (!format) {
      leaveOut(cls, name, reason, true);
      return;
    }
    // Over a size limit the page knows (as the classifier checks, precheck.js): never sent.
    const big = tooLargeHere(file.size);
    if (big) {
      leaveOut(cls, name, `too large: ${big.text.replace(/ Try a smaller or downscaled copy\.$/, "").replace(/^I/, "i")}`, true, false);
      return;
    }
    const url = URL.createObjectURL(file);
    const img = h("img", { src: url, alt: "", loading: "lazy", decoding: "async", title: name });
    const li = h("li", {}, img);
    const f = { file, url, li };
    cls.files.push(f);
    const none = () => {
      li.replaceChildren(h("span", {
        class: "teach-no-preview",
        title: `${name}: no preview in this browser; the server checks it when training`,
      }, format));
    };
    img.addEventListener("error", () => tileFromServer(f, img, none), { once: true });
    cls.thumbs.append(li);
  });
  hooks.changed();
}

// A tile this browser cannot draw (HEIC; TIFF in Chromium and Firefox) asks the server for a
// small JPEG of it (POST /v1/preview) when it comes into view (the tiles load lazily), one tile
// at a time so a class of a hundred such photos is not a hundred decodes at once; the format's
// name when that fails too.
let tileTurn = Promise.resolve();
function tileFromServer(f, img, none) {
  const alive = () => f.li.isConnected; // removed meanwhile: nothing to draw
  tileTurn = tileTurn.then(() => (alive() ? showFromServer(f, img, 96, alive, none) : undefined));
}

// One file listed under its class as left out, with the reason: found here not to be an
// image (`local`), or refused by the server when uploaded (then taken out of the class: it
// is neither counted nor sent again).
function leaveOut(cls, name, reason, local, notImage = local) {
  cls.rejected.push({ name, local: notImage });
  cls.issueList.append(h("li", { class: "teach-issue" }, h("strong", {}, bdi(name)), `: ${local ? reason : `refused by the server (${reason})`}`));
  const out = cls.rejected.length;
  const all = cls.rejected.every((r) => r.local) ? " (not images)" : "";
  cls.issueCount.textContent = `${out} file${out === 1 ? "" : "s"} left out${all}`;
  cls.issues.hidden = false;
}

export function refuse(cls, f, reason) {
  cls.files = cls.files.filter((x) => x !== f);
  if (f.li) f.li.remove();
  URL.revokeObjectURL(f.url);
  leaveOut(cls, f.file.name || "a picture", reason, false);
}

// The list of files left out is only a notice (nothing of it is kept or sent): dismissing it
// empties it until the next file that is not an image.
function dismissIssues(cls) {
  cls.rejected = [];
  cls.issueList.replaceChildren();
  cls.issues.hidden = true;
  cls.card.focus();
}

