// Requests that may never be answered: a stalled proxy, a frozen server, a connection that died
// without a reset. fetch() waits for good; a card stayed "Classifying…" and every later upload
// waited behind it (round 43). These give up after a while.

// -> what `work(signal)` returns, or throws { status: 0, timeout: ms } once `ms` have passed
// (`controller` is aborted then; pass one the caller also aborts for reasons of its own).
// The answer's body should be read inside `work`: a body that stops half-way is no answer.
export async function within(ms, work, controller = new AbortController()) {
  let expired = false;
  const timer = window.setTimeout(() => {
    expired = true;
    controller.abort();
  }, ms);
  try {
    const out = await work(controller.signal);
    if (expired) throw new Error("deadline"); // `work` swallowed the abort
    return out;
  } catch (err) {
    if (expired) throw { status: 0, timeout: ms };
    throw err;
  } finally {
    window.clearTimeout(timer);
  }
}

// How long a request may take: 30 s (the server answers within IMGCLASS_REQUEST_DEADLINE_S, 10 s
// by default) plus its upload at 250 kB/s, a slow phone link: 8 photos of 4 MB get 158 s.
const ANSWER_MS = 30_000;
const UPLOAD_BYTES_PER_S = 250_000;
export const deadlineFor = (bytes = 0) => ANSWER_MS + Math.round((1000 * bytes) / UPLOAD_BYTES_PER_S);
