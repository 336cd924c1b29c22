// What a file is, from its first bytes: the same magic numbers the server checks
// (app/imaging.py sniff_format, app/not_image.py describe). The name and the browser's type are not trusted.
// The server stays the authority: a file that passes here may still be refused there.

export const ACCEPTED_TEXT = "JPEG, PNG, WebP, AVIF, HEIC, GIF, BMP or TIFF";

function startsWith(b, bytes, at = 0) {
  if (b.length < at + bytes.length) return false;
  return bytes.every((v, i) => b[at + i] === v);
}

const ascii = (s) => Array.from(s, (c) => c.charCodeAt(0));

// "JPEG" | "PNG" | "GIF" | "WEBP" | "BMP" | "TIFF" | "AVIF" | "HEIF" | null
export function sniffFormat(b) {
  if (startsWith(b, [0xff, 0xd8, 0xff])) return "JPEG";
  if (startsWith(b, [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a])) return "PNG";
  if (startsWith(b, ascii("GIF87a")) || startsWith(b, ascii("GIF89a"))) return "GIF";
  if (startsWith(b, ascii("RIFF")) && startsWith(b, ascii("WEBP"), 8)) return "WEBP";
  if (startsWith(b, ascii("BM")) && b.length >= 26) return "BMP";
  if (startsWith(b, [0x49, 0x49, 0x2a, 0x00]) || startsWith(b, [0x4d, 0x4d, 0x00, 0x2a])) return "TIFF";
  if (b.length >= 12 && startsWith(b, ascii("ftyp"), 4)) {
    const brands = ftypBrands(b);
    if (brands.some((x) => AVIF_BRANDS.includes(x))) return "AVIF";
    if (brands.some((x) => HEIF_BRANDS.includes(x))) return "HEIF";
  }
  return null;
}

// ISO base media brands of the images app/formats.py reads: AVIF, and HEIF/HEIC (stills are
// decoded; the server says why a HEIF image sequence is not).
const AVIF_BRANDS = ["avif", "avis"];
const HEIF_BRANDS = "heic heix heim heis mif1 mif2 hevc hevx hevm hevs msf1".split(" ");
const AUDIO_BRANDS = ["M4A ", "M4B ", "M4P "];

// The major and compatible brands of a leading ftyp box (within the first 64 bytes).
function ftypBrands(b) {
  const size = ((b[0] << 24) | (b[1] << 16) | (b[2] << 8) | b[3]) >>> 0;
  const end = Math.min(Math.max(size, 16), 64, b.length);
  const brands = [String.fromCharCode(...b.slice(8, 12))];
  for (let i = 16; i + 4 <= end; i += 4) brands.push(String.fromCharCode(...b.slice(i, i + 4)));
  return brands;
}

// A few words for what a non-image file is, as the server words it.
export function describeBytes(b) {
  let i = 0;
  while (i < b.length && [0x09, 0x0a, 0x0d, 0x20].includes(b[i])) i += 1;
  const head = String.fromCharCode(...b.slice(i, i + 16)).toLowerCase();
  if (head.startsWith("<!doctype html") || head.startsWith("<html")) return "an HTML document";
  if (head.startsWith("<?xml") || head.startsWith("<svg")) return "an SVG/XML document (vector images are not accepted)";
  if (head.startsWith("%pdf")) return "a PDF document";
  if (startsWith(b, ascii("ftyp"), 4)) {
    return ftypBrands(b).some((brand) => AUDIO_BRANDS.includes(brand)) ? "an audio file" : "a video";
  }
  if (startsWith(b, ascii("RIFF"))) return "a video or audio file";
  if (startsWith(b, [0x50, 0x4b, 0x03, 0x04]) || startsWith(b, [0x50, 0x4b, 0x05, 0x06])) return "a zip archive";
  try {
    const text = new TextDecoder("utf-8", { fatal: true }).decode(b.slice(0, 256), { stream: true });
    // NUL and other control characters are valid UTF-8 but not text (TAR, ICO, PSD files)
    return /[\x00-\x08\x0b\x0e-\x1f\x7f]/.test(text) ? "not a picture file" : "text";
  } catch {
    return "not a picture file";
  }
}

// -> { format } for an image the server may accept, or { reason, what } for a file it will
// refuse ("a PDF document, not an image"; `what`: "a PDF document").
export async function sniffFile(file) {
  if (!file.size) return { reason: "an empty file", what: "an empty file" };
  let bytes;
  try {
    bytes = new Uint8Array(await file.slice(0, 256).arrayBuffer());
  } catch {
    return { reason: "could not be read", what: "unreadable" };
  }
  const format = sniffFormat(bytes);
  if (format) return { format };
  const what = describeBytes(bytes);
  return { reason: what === "not a picture file" ? what : `${what}, not an image`, what };
}
