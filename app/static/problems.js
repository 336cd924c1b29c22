// RFC 9457 problem responses -> sentences a person can act on.

import { bytes, nfInt } from "./format.js";

export async function readProblem(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  if (!body || typeof body !== "object") body = {};
  body.status = body.status || response.status;
  return body;
}

export function problemMessage(p, context = {}) {
  const detail = p.detail ? String(p.detail) : "";
  const slug = String(p.type || "").split("/").pop();
  switch (p.status) {
    case 0:
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
        const size = context.size ? `It is ${bytes(context.size)}; the` : "The";
        return {
          title: "Image too large",
          text: `${size} limit is ${bytes(p.limit_bytes)} per image. Try a smaller or downscaled copy.`,
        };
      }
      if (p.limit_images) {
        return { title: "Too many images", text: `At most ${p.limit_images} images per request.` };
      }
      return { title: "Image too large", text: detail || "Try a smaller or downscaled copy." };
    }
    case 415: {
      const accepted = Array.isArray(p.accepted) && p.accepted.length
        ? p.accepted.map((f) => (f === "WEBP" ? "WebP" : f)).join(", ")
        : "JPEG, PNG, WebP, GIF, BMP, TIFF";
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
