// Files dropped anywhere on the page, or pasted (outside text fields), go to `addFiles(files,
// source)` (image-list.js, wired by app.js); the overlay says so while dragging. teach.js takes
// the ones meant for it: a box marked data-drop-target (a Teach class) keeps its drops.

function hasFiles(event) {
  const types = event.dataTransfer && event.dataTransfer.types;
  return Boolean(types) && Array.from(types).includes("Files");
}

// Over a box that takes the drop itself, "Drop to classify" would say the wrong thing (and its
// blur hid the box; round 43): the box's own highlight says where the files go.
function overOwnTarget(event) {
  return event.target instanceof Element && Boolean(event.target.closest("[data-drop-target]"));
}

export function acceptDropsAndPastes(addFiles) {
  // Drops are accepted anywhere on the page; the overlay says so while dragging. Each
  // dragenter says where the pointer is now (it comes before the dragleave of where it was).
  let depth = 0;
  document.addEventListener("dragenter", (e) => {
    if (!hasFiles(e)) return;
    e.preventDefault();
    depth += 1;
    document.body.classList.toggle("is-dragging", !overOwnTarget(e));
  });
  document.addEventListener("dragover", (e) => {
    if (!hasFiles(e)) return;
    e.preventDefault();
    e.dataTransfer.dropEffect = "copy";
  });
  document.addEventListener("dragleave", (e) => {
    if (!hasFiles(e)) return;
    depth = Math.max(0, depth - 1);
    if (depth === 0) document.body.classList.remove("is-dragging");
  });
  // Any drop or end of a drag ends the overlay, wherever it lands: a Teach class box keeps its
  // drop from this page-wide handler, and the overlay stayed up (blurred) until the next drag.
  const settle = () => {
    depth = 0;
    document.body.classList.remove("is-dragging");
  };
  window.addEventListener("drop", settle, true);
  window.addEventListener("dragend", settle, true);
  document.addEventListener("drop", (e) => {
    if (!hasFiles(e)) return;
    e.preventDefault();
    settle();
    addFiles(e.dataTransfer.files, "drop");
  });

  document.addEventListener("paste", (e) => {
    const cd = e.clipboardData;
    if (!cd) return;
    const files = [];
    for (const it of Array.from(cd.items || [])) {
      if (it.kind === "file") {
        const f = it.getAsFile();
        if (f) files.push(f);
      }
    }
    if (!files.length && cd.files && cd.files.length) files.push(...Array.from(cd.files));
    if (!files.length) return;
    const target = e.target;
    // Let text fields keep their paste; everything else becomes an upload.
    if (target && (target.tagName === "INPUT" || target.tagName === "TEXTAREA") && target.type !== "file") return;
    e.preventDefault();
    addFiles(files, "paste");
  });
}
