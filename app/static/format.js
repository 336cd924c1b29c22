// Number, size and label formatting shared by the page modules.

const nf1 = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1, minimumFractionDigits: 1 });
export const nfInt = new Intl.NumberFormat();

// A score or a similarity: never "100.0%" (a float's 1.0 is a rounded 0.9999...), so a label
// at 1.0 and one at 0.9996 both read ">99.9%".
export function pct(score) {
  const v = score * 100;
  if (v > 0 && v < 0.1) return "<0.1%";
  if (v > 99.9) return ">99.9%";
  return `${nf1.format(v)}%`;
}

// A measured share (accuracy, precision, recall): counts, so all right is exactly "100%".
export function rate(share) {
  if (share === 1) return "100%";
  if (share === 0) return "0%";
  return pct(share);
}

// A file path in a data set's name ("... photos (data/photos/foolbox/imagenet_*)") says
// where the bundle was built, nothing to the person reading the page: it is left out.
function looksLikePath(token) {
  if (!/^(?:\.{0,2}\/|~\/)?[\w.*-]+(?:\/[\w.*-]*)+$/.test(token)) return false;
  return /[_*]|\.\w{1,5}(?:\/|$)|^[.~]?\//.test(token) || /^(?:data|models|training|tests)\//.test(token);
}

export function plainDataset(name) {
  return String(name || "")
    .replace(/\s*\(([^()]*)\)/g, (all, inner) => (looksLikePath(inner.trim()) ? "" : all))
    .split(/(\s+)/)
    .filter((tok) => !looksLikePath(tok.replace(/[,;:.]$/, "")))
    .join("")
    .replace(/\s{2,}/g, " ")
    .trim();
}

export function ms(v) {
  if (v == null) return "–";
  return v < 10 ? `${nf1.format(v)} ms` : `${nfInt.format(Math.round(v))} ms`;
}

export function bytes(n) {
  if (n == null) return "";
  const units = ["bytes", "KB", "MB", "GB"];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i += 1;
  }
  return i === 0 ? `${nfInt.format(v)} bytes` : `${v >= 10 ? Math.round(v) : nf1.format(v)} ${units[i]}`;
}

export function humanize(label) {
  return String(label).replace(/[_]+/g, " ").trim();
}

export function capitalize(s) {
  return s ? s.charAt(0).toUpperCase() + s.slice(1) : s;
}

// "santa" -> "Santa"; "not_santa" -> "Not a Santa": the noun is written as the positive
// verdict writes it ("Santa" beside "Not a santa" read as two words). Anything else as it is.
export function verdictText(decision) {
  const positive = capitalize(humanize(decision.positive_label));
  if (decision.is_positive) return positive;
  const neg = humanize(decision.label);
  const m = /^not\s+(.+)$/i.exec(neg);
  const noun = m ? m[1] : humanize(decision.positive_label);
  if (/^[a-z]+$/i.test(noun)) {
    return `Not ${/^[aeiou]/i.test(noun) ? "an" : "a"} ${capitalize(noun)}`;
  }
  return m ? capitalize(neg) : `Not ${noun}`;
}

export function primaryMetrics(model) {
  const list = model.metrics || [];
  return list.find((m) => m.split === "test") || list[0] || null;
}

export function isBinary(model) {
  const m = primaryMetrics(model);
  return model.num_classes === 2 && m && m.threshold != null && m.positive_label != null;
}

export function providerName(p) {
  return String(p || "").replace(/ExecutionProvider$/, "") || "unknown";
}

// A file name as sent in an upload: at most 200 characters, its extension kept (the server
// caps one part's headers at about 4 KB; a longer name refused the whole upload).
export function shortName(name, max = 200) {
  const s = String(name);
  if (s.length <= max) return s;
  const dot = s.lastIndexOf(".");
  const ext = dot > 0 && s.length - dot <= 16 ? s.slice(dot) : "";
  return s.slice(0, max - ext.length - 1) + "…" + ext;
}
