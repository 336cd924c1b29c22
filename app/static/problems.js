// RFC 9457 problem responses -> sentences a person can act on.

import { bytes, nfInt } from "./format.js";

// The server's upload limits, as far as this page knows them: from /v1/access where it says
// (auth.js), else learnt from the 413s it answered. `image` is the limit per picture,
// `request` the limit of one upload (several pictures). Null: not known yet.
export const limits = { image: null, request: null };

export function learnLimits(source) {
  if (!source || typeof source !== "object") return;
  const num = (v) => (Number.isFinite(v) && v > 0 ? v : null);
  const given = source.limits && typeof source.limits === "object" ? source.limits : source;
  limits.image = num(given.max_image_bytes) || limits.image;
  limits.request = num(given.max_request_bytes) || limits.request;
  if (source.status === 413 && num(source.limit_bytes)) {
    const detail = String(source.detail || "");
    if (/request body|together|decompressed body/i.test(detail)) limits.request = source.limit_bytes;
    else if (/is larger than the limit/i.test(detail)) limits.image = source.limit_bytes;
  }
}

// A file the page need not send: larger than a limit it knows. -> problem message or null.
export function tooLargeHere(size) {
  if (limits.image && size > limits.image) return tooLargeMessage(size, limits.image, true);
  if (limits.request && size > limits.request) return tooLargeMessage(size, limits.request, false);
  return null;
}

// The limit per image when known; otherwise (the file was bigger than a whole upload may be)
// the upload's, said as such: the per-image limit is lower, and this server did not say it.
function tooLargeMessage(size, limit, perImage) {
  if (perImage || limits.image) {
    const what = size ? `It is ${bytes(size)}; the` : "The";
    return {
      title: "Image too large",
      text: `${what} limit is ${bytes(perImage ? limit : limits.image)} per image. Try a smaller or downscaled copy.`,
    };
  }
  return {
    title: "Image too large",
    text: `${size ? `It is ${bytes(size)}, more` : "More"} than this server takes in one upload (${bytes(limit)}); a single image must be smaller still. Try a smaller or downscaled copy.`,
  };
}

// A few words for why one picture was refused: "damaged or truncated", "too small: 4×4 pixels".
export function shortReason(p) {
  const detail = String(p.detail || "");
  const slug = String(p.type || "").split("/").pop();
  if (p.status === 413) {
    if (p.limit_pixels) return `too many pixels: the limit is ${nfInt.format(p.limit_pixels)}`;
    if (p.limit_bytes) return `too large: the limit is ${bytes(limits.image || p.limit_bytes)} per image`;
    return "too large";
  }
  if (p.status === 415) {
    const m = /^The upload is (.+?), not an image\./.exec(detail);
    return m ? `${m[1]}, not an image` : "not an image";
  }
  if (p.status === 422 && slug === "invalid-image") {
    const small = /(\d+)x(\d+) pixels/.exec(detail);
    if (/at least \d+ pixels/.test(detail)) return `too small${small ? `: ${small[1]}×${small[2]} pixels` : ""}`;
    if (/damaged|truncated/i.test(detail)) return "damaged or truncated";
    if (/tiff/i.test(detail)) return "a TIFF this server cannot read";
  }
  const first = detail.replace(/^image \d+(?: \([^)]*\))?: /, "").split(/\.\s/)[0];
  return first ? first.charAt(0).toLowerCase() + first.slice(1) : (p.title || "refused").toLowerCase();
}

export async function readProblem(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  if (!body || typeof body !== "object") body = {};
  body.status = body.status || response.status;
  learnLimits(body);
  return body;
}

export function problemMessage(p, context = {}) {
  const detail = p.detail ? String(p.detail) : "";
  const slug = String(p.type || "").split("/").pop();
  // A 200 whose body is not the JSON expected: an auth proxy's sign-in page, an answer cut short.
  if (p.unreadable) {
    return {
      title: "The server’s answer could not be read",
      text: "It was not what this page expects (a sign-in page or a proxy in between may have answered, or the answer was cut short). Try again; if it keeps happening, reload the page.",
      retry: true,
    };
  }
  switch (p.status) {
    case 0:
      if (p.timeout) {
        return {
          title: "The server is not answering",
          text: `No answer came within ${Math.round(p.timeout / 1000)} s. Try again; if it keeps happening, check that the service is running.`,
          retry: true,
        };
      }
      return {
        title: "Can’t reach the server",
        text: "Check that the service is running and your connection works, then try again.",
        retry: true,
      };
    case 401:
      return {
        title: "This server needs an API key",
        text: "Type it in the API key field at the top, then try again.",
      };
    case 404:
      return {
        title: "Model not available",
        text: `${context.model ? `“${context.model}” ` : "This model "}is no longer served. The list of models has been refreshed; pick another one.`,
      };
    case 413: {
      // One short title, then what was too large and the limit (the server's detail is not
      // shown as well: it would say the same again in other words).
      if (p.limit_pixels) {
        const dims = /(\d+)x(\d+)/.exec(detail);
        const what = dims
          ? `It is ${dims[1]}×${dims[2]} = ${nfInt.format(dims[1] * dims[2])} pixels; the`
          : "Its dimensions exceed the";
        return {
          title: "Image too large",
          text: `${what} limit is ${nfInt.format(p.limit_pixels)} pixels. Try a downscaled copy.`,
        };
      }
      if (p.limit_bytes) {
        // "'x.png' is larger than the limit of ..." is the limit per image; "The request body
        // exceeds ..." the limit of one whole upload, which is not the limit per image.
        learnLimits({ ...p, status: 413 });
        const whole = /request body|together|decompressed body/i.test(detail);
        return tooLargeMessage(context.size, p.limit_bytes, !whole);
      }
      if (p.limit_images) {
        return { title: "Too many images", text: `At most ${p.limit_images} images per request.` };
      }
      return { title: "Image too large", text: detail || "Try a smaller or downscaled copy." };
    }
    case 415: {
      const accepted = Array.isArray(p.accepted) && p.accepted.length
        ? p.accepted.map((f) => ({ WEBP: "WebP", HEIF: "HEIC" })[f] || f).join(", ")
        : "JPEG, PNG, WebP, AVIF, HEIC, GIF, BMP, TIFF";
      // The title says "Not an image"; the body says what the file is and what is accepted,
      // once (the server's "The upload is X, not an image. Accepted: ..." is reworded).
      const m = /^The upload is (.+?), not an image\. (Accepted: .+)$/.exec(detail);
      if (m) return { title: "Not an image", text: `This file is ${m[1]}. ${m[2]}` };
      return { title: "Not an image", text: detail || `Accepted formats: ${accepted}.` };
    }
    case 422:
      if (slug === "invalid-image") {
        // The server's detail says what is wrong (damaged or truncated, too small, an
        // unsupported TIFF) and what is accepted: it is the body, under one short title.
        const small = /at least \d+ pixels/.test(detail);
        return {
          title: small ? "Image too small" : "Image can’t be read",
          text: detail || "The file looks like an image but seems damaged or truncated.",
        };
      }
      return { title: "Request not accepted", text: detail || "The server rejected the request." };
    case 503:
      // Busy (queue full, or the request waited past the server's deadline) is not loading.
      if (slug === "overloaded" || slug === "deadline-exceeded") {
        return {
          title: "Server busy",
          text: "The server has more images to classify than it can take right now. Try again in a few seconds.",
          retry: true,
        };
      }
      return {
        title: "Model still loading",
        text: "This usually takes a few seconds; try again shortly.",
        retry: true,
      };
    default:
      return {
        title: p.title || `Server error (${p.status})`,
        text: detail || "Something went wrong on the server. Try again; if it persists, check the server log.",
        retry: p.status >= 500,
      };
  }
}
