// A picture this browser cannot draw (HEIC; TIFF in Chromium and Firefox) drawn from the
// server's JPEG of it (POST /v1/preview: decoded as for classifying). Used by the result cards
// (cards.js) and the teach tiles (teach-class.js).
//
// `entry.file` is sent; `entry.url` is the object URL shown, replaced (and revoked) here, and
// revoked by whoever removes the entry. `alive()`: the picture is still on the page. `none()`:
// what to show when the server cannot decode it either.
import { deadlineFor, within } from "./net.js";

export async function showFromServer(entry, img, size, alive, none) {
  let blob = null;
  try {
    blob = await within(deadlineFor(entry.file.size), async (signal) => {
      const r = await fetch(`/v1/preview?size=${size}`, { method: "POST", body: entry.file, headers: { Accept: "image/jpeg" }, signal });
      return r.ok ? r.blob() : null;
    });
  } catch {
    /* offline, the server stopped or did not answer in time: no preview */
  }
  if (!alive()) return;
  if (!blob) return none();
  URL.revokeObjectURL(entry.url);
  entry.url = URL.createObjectURL(blob);
  img.addEventListener("error", none, { once: true });
  img.src = entry.url;
}
