// Number, size and label formatting shared by the page modules.

const nf1 = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1, minimumFractionDigits: 1 });
export const nfInt = new Intl.NumberFormat();

export function pct(score) {
  const v = score * 100;
  if (v > 0 && v < 0.1) return "<0.1%";
  if (v < 100 && v > 99.9) return ">99.9%";
  return `${nf1.format(v)}%`;
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

// "not_bird" -> "Not a bird"; anything else is shown as it is.
export function verdictText(decision) {
  if (decision.is_positive) return capitalize(humanize(decision.positive_label));
  const neg = humanize(decision.label);
  const m = /^not\s+(.+)$/i.exec(neg);
  const noun = m ? m[1] : humanize(decision.positive_label);
  if (/^[a-z]+$/.test(noun)) return `Not ${/^[aeiou]/.test(noun) ? "an" : "a"} ${noun}`;
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
