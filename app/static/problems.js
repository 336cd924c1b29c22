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
        text: "The request did not get through. Check that the service is running and your connection works, then try again.",
        retry: true,
      };
    case 401:
      return {
        title: "An API key is required",
        text: "This server only classifies for clients that send its API key. Use the HTTP API with the key, or ask the administrator to allow reads without one.",
      };
    case 404:
      return {
        title: "Model not available",
        text: `${context.model ? `“${context.model}” ` : "This model "}is no longer served. The list of models has been refreshed; pick another one.`,
      };
    case 413: {
      const limit = p.limit_bytes ? ` The limit is ${bytes(p.limit_bytes)} per image.` : "";
      const imgs = p.limit_images && !p.limit_bytes ? ` At most ${p.limit_images} images per request.` : "";
      const px = p.limit_pixels ? ` The limit is ${nfInt.format(p.limit_pixels)} pixels.` : "";
      return {
        title: "Image too large",
        text: `This file is too big to classify.${limit}${imgs}${px} Try a smaller or downscaled copy.`,
      };
    }
    case 415: {
      const accepted = Array.isArray(p.accepted) && p.accepted.length
        ? p.accepted.map((f) => (f === "WEBP" ? "WebP" : f)).join(", ")
        : "JPEG, PNG, WebP, GIF, BMP, TIFF";
      // The server's detail already says what the file is and what is accepted; the generic
      // sentence is for when it says nothing (the card showed both: the formats twice).
      return {
        title: "Not an image",
        text: detail || `This file isn’t an image the service can read. Accepted formats: ${accepted}.`,
      };
    }
    case 422:
      if (slug === "invalid-image") {
        return {
          title: "Image can’t be read",
          text: "The file looks like an image but seems damaged, truncated or too small to classify.",
          detail,
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
        text: "The model is warming up. This usually takes a few seconds; try again shortly.",
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
