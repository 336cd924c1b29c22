// Names people typed (class labels, file names) inside the page's sentences, each in its own
// <bdi>: a right-to-left name ("طائر") must not reorder the words around it. Built as nodes,
// never as HTML, so a name is only ever text.
import { h } from "./dom.js";

export const bdi = (name) => h("bdi", {}, name);

const escape = (s) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

// `text` as [string | <bdi>, ...] with every whole occurrence of one of `names` isolated
// (longest first; not inside a longer word): sentences the page words itself, and the
// server's ("class 'x' has only 6 examples"), which quote the labels they are about.
export function isolate(text, names) {
  const s = String(text ?? "");
  const wanted = [...new Set(names.map((n) => String(n ?? "").trim()).filter(Boolean))]
    .sort((a, b) => b.length - a.length);
  if (!s || !wanted.length) return [s];
  const re = new RegExp(`(?<![\\p{L}\\p{N}\\p{M}])(?:${wanted.map(escape).join("|")})(?![\\p{L}\\p{N}\\p{M}])`, "gu");
  const out = [];
  let last = 0;
  for (const m of s.matchAll(re)) {
    if (m.index > last) out.push(s.slice(last, m.index));
    out.push(bdi(m[0]));
    last = m.index + m[0].length;
  }
  if (last < s.length) out.push(s.slice(last));
  return out;
}
