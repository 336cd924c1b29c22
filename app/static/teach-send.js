// What Train sends (teach.js): the page's example catalog for the model made afresh, the
// classes' pictures uploaded in batches (a refused batch sent again one by one, the bad
// pictures listed, not fatal), the job asked for. Only this server's /v1 API.
import { shortName } from "./format.js";
import { deadlineFor, within } from "./net.js";
import { readProblem, shortReason } from "./problems.js";

const UPLOAD_BATCH = 8;

// The answer's JSON, or throws the problem (status 0: the request got no answer at all, or
// none within its deadline: `timeout` then; a 200 that is not JSON: `unreadable`).
export async function api(url, options = {}, bytes = 0) {
  const ask = async (signal) => {
    const r = await fetch(url, { ...options, signal });
    if (!r.ok) return { problem: await readProblem(r) };
    if (r.status === 204) return { body: null };
    try {
      return { body: await r.json() };
    } catch {
      return { problem: { status: r.status, unreadable: true } };
    }
  };
  let answer;
  try {
    answer = await within(deadlineFor(bytes), ask);
  } catch (err) {
    throw err && err.timeout ? err : { status: 0 };
  }
  if (answer.problem) throw answer.problem;
  return answer.body;
}

// The server refused the class name, not the pictures ("Invalid label ..."): they stay.
function badLabel(p) {
  return p && p.status === 422 && /^invalid label/i.test(String(p.detail || ""));
}

function labelProblem(label, p) {
  return { own: true, status: 422, title: `The class name “${label}” cannot be used`, detail: `${String(p.detail || "")} Rename the class and train again.`.trim() };
}

function slug(text) {
  return text.trim().toLowerCase().replace(/[^a-z0-9_-]+/g, "-").replace(/^-+|-+$/g, "").slice(0, 64);
}

// The page keeps a catalog of examples for each taught model. Teaching again starts one
// afresh, but never the one a served version was taught from: that version's `familiar` and
// `similar` answers read it (round 44: replacing it made v1 call its own classes unfamiliar),
// so the new examples go to the next free name (teach-<model>-2, -3 ...). Only a catalog
// this page made for this model (its description says so) and no version uses is replaced;
// any other catalog of that name (made through the API, or for a model whose long name was
// cut to the same 64 characters) is left alone. Looked up in the lists first: a DELETE or
// GET answered 404 is logged by the browser as a console error. -> the new, empty catalog.
export async function freshCatalog(model, backbone) {
  const description = `examples for ${model}`;
  const { catalogs } = await api("/v1/catalogs", { cache: "no-store" });
  const known = new Map(catalogs.map((c) => [c.name, c]));
  const used = await catalogsInUse(model);
  const base = slug(`teach-${model}`);
  let catalog = base;
  const taken = (name) => known.has(name) && (known.get(name).description !== description || used.has(name));
  for (let n = 2; taken(catalog); n++) catalog = base.slice(0, 64 - `-${n}`.length) + `-${n}`;
  if (known.has(catalog)) {
    await api(`/v1/catalogs/${catalog}`, { method: "DELETE" }).catch((p) => { if (p.status !== 404) throw p; });
  }
  await api("/v1/catalogs", {
    method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ name: catalog, model: backbone, description }),
  });
  return catalog;
}

// The catalogs the served versions of taught model `model` were taught from.
async function catalogsInUse(model) {
  const { models } = await api("/v1/models", { cache: "no-store" });
  const info = (models || []).find((m) => m.name === model);
  if (!info || !info.backbone) return new Set();
  const versions = (info.versions || []).filter((v) => v !== info.version);
  const older = await Promise.all(versions.map((v) => api(`/v1/models/${encodeURIComponent(model)}@${v}`, { cache: "no-store" }).catch(() => null)));
  return new Set([info, ...older].filter((m) => m && m.backbone).map((m) => m.backbone.catalog));
}

export const dropCatalog = (catalog) => api(`/v1/catalogs/${catalog}`, { method: "DELETE" }).catch(() => {});

// Each class's pictures under its name; `skipped` gets { name, label, reason, cls, f } for
// each picture refused (as it happens: a failure later still names them), `progress(sent,
// total)` after each batch.
export async function uploadClasses(catalog, classes, skipped, progress) {
  const total = classes.reduce((n, c) => n + c.files.length, 0);
  let sent = 0;
  const upload = (files, label) => {
    const form = new FormData();
    for (const f of files) form.append("file", f.file, shortName(f.file.name || "picture"));
    form.append("label", label);
    const bytes = files.reduce((n, f) => n + f.file.size, 0);
    return api(`/v1/catalogs/${catalog}/items`, { method: "POST", body: form }, bytes);
  };
  for (const cls of classes) {
    const label = cls.label.trim();
    for (let i = 0; i < cls.files.length; i += UPLOAD_BATCH) {
      const chunk = cls.files.slice(i, i + UPLOAD_BATCH);
      try {
        await upload(chunk, label);
      } catch (p) {
        if (badLabel(p)) throw labelProblem(label, p);
        if (![413, 415, 422].includes(p.status)) throw p;
        // One bad picture refuses its batch: send them one by one, skip and list the bad ones.
        for (const f of chunk) {
          try {
            await upload([f], label);
          } catch (q) {
            if (![413, 415, 422].includes(q.status)) throw q;
            skipped.push({ name: f.file.name || "a picture", label, reason: shortReason(q), cls, f });
          }
        }
      }
      sent += chunk.length;
      progress(sent, total);
    }
  }
}

export const startJob = (catalog, model) => api(`/v1/catalogs/${catalog}/train`, {
  method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ model }),
});
