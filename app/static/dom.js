// Small DOM helpers shared by the page's modules: h(), the teach modules' element builder;
// setText() for live regions; scrollBehavior() for the page's own scrolls.

// h("p", { class: "x", onclick: fn }, "text", child)
export function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v !== false && v !== undefined && v !== null) node.setAttribute(k, v === true ? "" : v);
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

// Writes `text` only when it differs: a live region written with the same words on every
// keystroke may be read again each time (round 43: 103 writes over one Teach form).
export function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

// "smooth", or "auto" (a jump) where the person asked for less motion.
export function scrollBehavior() {
  return window.matchMedia("(prefers-reduced-motion: reduce)").matches ? "auto" : "smooth";
}
