// Before anything is made or sent: what the typed model name already means on this server.
// A shipped model's name is refused at once (no example catalog made, nothing uploaded); a
// taught model's name asks first, saying what teaching again does (docs/teach.md "Versions").
import { bdi } from "./bidi.js";
import { h } from "./dom.js";
import { api } from "./teach-send.js";

// -> { shipped: true, model } | { taught: true, model } | null (a free name, or no answer:
// the server still checks the name when the job is asked for).
export async function whatNameIs(name) {
  let body;
  try {
    body = await api("/v1/models", { cache: "no-store", headers: { Accept: "application/json" } });
  } catch {
    return null;
  }
  const model = (body.models || []).find((m) => m.name === name);
  if (!model) return null;
  return model.backbone ? { taught: true, model } : { shipped: true, model };
}

export function shippedProblem(name) {
  return {
    title: "Choose another model name",
    detail: `“${name}” is a model shipped with this server; teaching cannot replace it. Pick a name of your own, e.g. my-${name}.`,
  };
}

// Each name in its own <bdi>: a right-to-left class name does not reorder the sentence.
const list = (labels) => labels.flatMap((l, i) => [i ? ", “" : "“", bdi(l), "”"]);

// Shows the question in `slot` and resolves true (teach) or false (cancel: nothing changes).
export function confirmReplace(slot, model, labels) {
  const name = model.name;
  const v = model.version;
  const old = model.labels || [];
  const titleId = "teach-confirm-title";
  const textId = "teach-confirm-text";
  return new Promise((resolve) => {
    const done = (yes) => {
      slot.replaceChildren();
      slot.hidden = true;
      document.removeEventListener("imgclass:teach-input", cancel);
      resolve(yes);
    };
    const cancel = () => done(false);
    const yes = h("button", { type: "button", class: "btn btn-primary", onclick: () => done(true) }, `Replace ${name}`);
    const no = h("button", { type: "button", class: "btn btn-ghost", onclick: cancel }, "Cancel");
    const box = h("div", {
      class: "teach-confirm", role: "alertdialog", "aria-modal": "false",
      "aria-labelledby": titleId, "aria-describedby": textId,
      onkeydown: (e) => { if (e.key === "Escape") cancel(); },
    },
    h("strong", { id: titleId }, `“${name}” is already a model taught here`),
    h("div", { id: textId },
      h("p", {}, `Training makes a new version of ${name} from the classes above (`, ...list(labels),
        `). It replaces v${v} (`, ...list(old), `) as “${name}” for everyone using this server.`),
      h("p", {}, `v${v} stays available as ${name}@${v} (in the API), with the example pictures `
        + "it was taught from; the pictures above are kept for the new version.")),
    h("div", { class: "teach-confirm-actions" }, yes, no));
    slot.replaceChildren(box);
    slot.hidden = false;
    // Changing the form meanwhile answers "not now" (teach.js sends imgclass:teach-input).
    document.addEventListener("imgclass:teach-input", cancel);
    yes.focus();
  });
}
