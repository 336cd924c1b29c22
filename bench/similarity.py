"""Visual-similarity benchmarks; prints markdown tables (docs/similarity.md quotes them).

    .venv/bin/python bench/similarity.py quality [--model products]   # P@10, recall, PNG grid
    .venv/bin/python bench/similarity.py speed [--sizes 10000,100000,1000000]

quality: embeds the 10,000 Fashion-MNIST test images with the model, then for 1,000 queries
(fixed seed) measures precision@10 (neighbours in the query's category, query excluded) of
  - the catalog's method: L2-normalised embeddings, cosine, through the real EmbeddedStore
    (exact flat index, and HNSW forced, with its recall@10 against exact);
  - the lecture's method: raw dense activations ranked by plain dot product;
and draws docs/img/similar-products.png (queries and their neighbours).
speed: synthetic unit vectors through the EmbeddedStore (SQLite + faiss): bulk load, search
latency p50/p99 and throughput, filtered search, add and delete latency (durable commits),
restart time and RSS (measured in a fresh process), per catalog size.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.catalog.embedded import EmbeddedStore  # noqa: E402
from app.catalog.index import IndexConfig  # noqa: E402
from app.catalog.types import ImageRef, ModelRef, NewItem, Vector, unit_rows  # noqa: E402

K = 10


def table(headers: list[str], rows: list[list[Any]]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def items_for(vectors: np.ndarray, labels: list[str], start: int = 0) -> list[NewItem]:
    return [
        NewItem(
            id=f"i{start + i:08d}",
            image=ImageRef(
                sha256=f"{start + i:064x}", content_type="image/png", width=28, height=28
            ),
            vector=vectors[i],
            label=labels[i],
        )
        for i in range(len(vectors))
    ]


def fill_store(store: EmbeddedStore, name: str, vectors: np.ndarray, labels: list[str]) -> float:
    dim = vectors.shape[1]
    store.create_catalog(name, ModelRef(name="bench", version="1", sha256="0" * 64, dim=dim))
    t0 = time.perf_counter()
    for s in range(0, len(vectors), 20_000):
        store.add_items(name, items_for(vectors[s : s + 20_000], labels[s : s + 20_000], s))
    return time.perf_counter() - t0


# quality ------------------------------------------------------------------------------------
def embed_test_set(model: str) -> tuple[np.ndarray, np.ndarray, tuple[str, ...], np.ndarray, str]:
    from app.registry import ModelRegistry
    from app.settings import Settings
    from training.data import load_fashion_mnist

    settings = Settings()
    registry = ModelRegistry(settings.models_dir, warmup_runs=1, enabled=[model])
    registry.load_all()
    loaded = registry.get(model)
    fm = load_fashion_mnist()
    from app.imaging import ImageLimits, prepare

    spec = loaded.model.bundle.metadata.input
    chunks = []
    for s in range(0, len(fm.x_test), 500):
        # through the server's own ingestion path (PNG bytes -> prepare), as a client upload
        batch = np.stack(
            [prepare(png(x), spec, ImageLimits()).array for x in fm.x_test[s : s + 500]]
        )
        emb = loaded.model.run(batch).embedding
        assert emb is not None, f"model {model!r} has no embedding output"
        chunks.append(emb)
    meta = loaded.model.bundle.metadata
    desc = f"{meta.name} v{meta.version} (sha256 {meta.artifact.sha256[:12]}, {meta.provenance.architecture})"
    return np.concatenate(chunks), fm.y_test, fm.class_names, fm.x_test, desc


def png(pixels: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels[..., 0] if pixels.ndim == 3 else pixels).save(buf, format="PNG")
    return buf.getvalue()


def quality(args: argparse.Namespace) -> None:
    raw, y, names, x, desc = embed_test_set(args.model)
    n = len(raw)
    rng = np.random.default_rng(args.seed)
    queries = rng.choice(n, size=args.queries, replace=False)
    labels = [names[int(c)] for c in y]
    unit = unit_rows(raw)
    rows: list[list[Any]] = []

    # lecture: raw activations, plain dot product, query excluded
    sims = raw[queries] @ raw.T
    sims[np.arange(len(queries)), queries] = -np.inf
    top = np.argsort(-sims, axis=1)[:, :K]
    p_raw = float(np.mean(y[top] == y[queries][:, None]))
    rows.append(
        ["raw dense activations, dot product (lecture)", "exact (numpy)", f"{p_raw:.4f}", "-"]
    )

    results: dict[str, list[list[str]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("flat", "hnsw"):
            store = EmbeddedStore(Path(tmp) / kind, IndexConfig(kind=kind))
            store.open()
            fill_store(store, "p", unit, labels)
            found: list[list[str]] = []
            t0 = time.perf_counter()
            for q in queries:
                hits = store.search("p", unit[q : q + 1], K, exclude=[f"i{q:08d}"])[0]
                found.append([h.item.id for h in hits])
            ms = (time.perf_counter() - t0) * 1e3 / len(queries)
            results[kind] = found
            same = [
                np.mean([y[int(i[1:])] == y[q] for i in f])
                for q, f in zip(queries, found, strict=True)
            ]
            recall = "-"
            if kind == "hnsw":
                recall = f"{np.mean([len(set(a) & set(b)) / K for a, b in zip(results['flat'], found, strict=True)]):.4f}"
            rows.append(
                [
                    "L2-normalised embedding, cosine (catalog)",
                    f"faiss {kind} via EmbeddedStore, {ms:.2f} ms/query",
                    f"{np.mean(same):.4f}",
                    recall,
                ]
            )
            store.close()
    print(
        f"\n### Precision@{K} on Fashion-MNIST test ({n:,} items, {len(queries):,} queries, seed {args.seed})"
    )
    print(f"model: {desc}\n")
    print(table(["method", "search", f"P@{K}", f"recall@{K} vs exact"], rows))
    per_class = []
    same_flat = np.array(
        [[y[int(i[1:])] == y[q] for i in f] for q, f in zip(queries, results["flat"], strict=True)]
    )
    for c, name in enumerate(names):
        mask = y[queries] == c
        if mask.any():
            per_class.append(
                [
                    name,
                    int(mask.sum()),
                    f"{same_flat[mask].mean():.3f}",
                    f"{(y[top] == y[queries][:, None])[mask].mean():.3f}",
                ]
            )
    print("\n" + table(["category", "queries", f"P@{K} catalog", f"P@{K} lecture"], per_class))
    if args.grid:
        draw_grid(Path(args.grid), x, y, names, queries, results["flat"], rng)


def draw_grid(
    path: Path,
    x: np.ndarray,
    y: np.ndarray,
    names: tuple[str, ...],
    queries: np.ndarray,
    found: list[list[str]],
    rng: np.random.Generator,
    rows: int = 10,
    cols: int = 8,
) -> None:
    """One row per query (one per category): the query, then its neighbours; green frame =
    same category, red = different."""
    from PIL import Image, ImageDraw

    cell, pad, head = 84, 6, 18
    left = 150
    w = left + (cols + 1) * (cell + pad) + pad
    h = head + rows * (cell + pad + 14) + pad
    img = Image.new("RGB", (w, h), "white")
    draw = ImageDraw.Draw(img)
    draw.text((left + pad, 2), "query", fill="black")
    draw.text(
        (left + 2 * pad + cell, 2),
        "nearest catalog items (cosine), best first; green = same category",
        fill="black",
    )
    chosen: list[int] = []
    for c in range(len(names)):  # one query per category, from the evaluated queries
        cand = [i for i, q in enumerate(queries) if y[q] == c]
        if cand:
            chosen.append(int(rng.choice(cand)))
    for r, qi in enumerate(chosen[:rows]):
        q = int(queries[qi])
        top = head + r * (cell + pad + 14)
        draw.text((pad, top + cell // 2 - 6), names[int(y[q])], fill="black")
        tiles = [q] + [int(i[1:]) for i in found[qi][:cols]]
        for j, idx in enumerate(tiles):
            tile = (
                Image.fromarray(x[idx][..., 0])
                .resize((cell, cell), Image.Resampling.NEAREST)
                .convert("RGB")
            )
            x0 = left + pad + j * (cell + pad)
            color = "black" if j == 0 else ("#1a9850" if y[idx] == y[q] else "#d73027")
            draw.rectangle([x0 - 3, top - 3, x0 + cell + 2, top + cell + 2], outline=color, width=3)
            img.paste(tile, (x0, top))
            if j:
                draw.text((x0, top + cell + 2), names[int(y[idx])][:14], fill=color)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, optimize=True)
    print(f"\nwrote {path}")


# speed --------------------------------------------------------------------------------------
def search_row(store: EmbeddedStore, qs: Vector, label: str | None, i: int) -> object:
    """One query (row i of qs) against catalog "c", optionally filtered by label."""
    return store.search("c", qs[i][None, :], K, label=label)


def timed(fn: Callable[[int], Any], n: int) -> list[float]:
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        fn(i)
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def throughput(store: EmbeddedStore, qs: np.ndarray, threads: int, seconds: float) -> float:
    count = [0] * threads
    stop = time.perf_counter() + seconds

    def work(t: int) -> None:
        i = t
        while time.perf_counter() < stop:
            store.search("c", qs[i % len(qs)][None, :], K)
            count[t] += 1
            i += threads

    ts = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return sum(count) / seconds


def restart_probe(root: str, cfg: dict[str, Any]) -> None:
    """Run in a fresh process: open the store and load the index as a restarted server would."""
    import psutil

    rss0 = psutil.Process().memory_info().rss
    t0 = time.perf_counter()
    store = EmbeddedStore(Path(root), IndexConfig(**cfg))
    store.open()
    stats = store.index_stats("c")
    secs = time.perf_counter() - t0
    rss = psutil.Process().memory_info().rss
    print(
        json.dumps(
            {
                "seconds": secs,
                "kind": stats["kind"],
                "rss_mb": rss / 2**20,
                "delta_mb": (rss - rss0) / 2**20,
            }
        )
    )


def speed(args: argparse.Namespace) -> None:
    import psutil

    sizes = [int(s) for s in args.sizes.split(",")]
    cfg = {
        "kind": "auto",
        "hnsw_threshold": 200_000,
        "hnsw_m": args.hnsw_m,
        "ef_construction": args.ef_construction,
        "ef_search": args.ef_search,
    }
    rows, rows2 = [], []
    rng = np.random.default_rng(0)
    qs = unit_rows(rng.standard_normal((1000, args.dim)))
    for n in sizes:
        with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
            store = EmbeddedStore(Path(tmp), IndexConfig(**cfg))
            store.open()
            vecs = unit_rows(rng.standard_normal((n, args.dim)))
            labels = [f"L{i % 10}" for i in range(n)]
            load_s = fill_store(store, "c", vecs, labels)
            del vecs
            t0 = time.perf_counter()
            kind = store.index_stats("c")["kind"]
            build_s = time.perf_counter() - t0
            lat = timed(partial(search_row, store, qs, None), len(qs))
            flat_lat = timed(partial(search_row, store, qs, "L3"), 200)
            qps = throughput(store, qs, args.threads, args.seconds)
            new = unit_rows(rng.standard_normal((100, args.dim)))
            add = [0.0] * 100
            for i in range(100):
                t1 = time.perf_counter()
                store.add_items("c", items_for(new[i : i + 1], ["L0"], n + i))
                add[i] = (time.perf_counter() - t1) * 1e3
            store.search("c", qs[:1], K)  # the index catches up with the adds
            dele = [0.0] * 100
            for i in range(100):
                t1 = time.perf_counter()
                store.delete_item("c", f"i{n + i:08d}")
                dele[i] = (time.perf_counter() - t1) * 1e3
            store.search("c", qs[:1], K)
            rss_here = psutil.Process().memory_info().rss / 2**20
            t1 = time.perf_counter()
            store.close()  # writes the snapshot of an HNSW index
            close_s = time.perf_counter() - t1
            probe = subprocess.run(
                [sys.executable, __file__, "_restart", tmp, json.dumps(cfg)],
                capture_output=True,
                text=True,
                check=True,
            )
            rs = json.loads(probe.stdout.strip().splitlines()[-1])
            db_mb = sum(p.stat().st_size for p in Path(tmp).rglob("*") if p.is_file()) / 2**20
            rows.append(
                [
                    f"{n:,}",
                    kind,
                    f"{pct(lat, 50):.2f}",
                    f"{pct(lat, 99):.2f}",
                    f"{qps:,.0f}",
                    f"{pct(flat_lat, 50):.2f}",
                    f"{pct(add, 50):.1f} / {pct(add, 99):.1f}",
                    f"{pct(dele, 50):.1f} / {pct(dele, 99):.1f}",
                ]
            )
            rows2.append(
                [
                    f"{n:,}",
                    kind,
                    f"{load_s:.1f}",
                    f"{n / load_s:,.0f}",
                    f"{build_s:.1f}",
                    f"{close_s:.1f}",
                    f"{rs['seconds']:.2f}",
                    f"{rs['rss_mb']:.0f}",
                    f"{rss_here:.0f}",
                    f"{db_mb:.0f}",
                ]
            )
            print(f"done {n:,}", file=sys.stderr)
    print(f"\n### EmbeddedStore search, {args.dim}-d unit vectors, k={K} ({os.cpu_count()} CPUs)\n")
    print(
        table(
            [
                "items",
                "index",
                "p50 ms",
                "p99 ms",
                f"searches/s ({args.threads} threads)",
                "label-filtered p50 ms (10%)",
                "add p50/p99 ms",
                "delete p50/p99 ms",
            ],
            rows,
        )
    )
    print(
        f"\nHNSW: M={args.hnsw_m}, efConstruction={args.ef_construction}, efSearch={args.ef_search}. Latency is the store call (SQLite lookups + faiss + hydrating 10 records), not HTTP.\n"
    )
    print(
        table(
            [
                "items",
                "index",
                "bulk load s",
                "items/s",
                "first index build s",
                "close (snapshot) s",
                "restart s",
                "RSS after restart MB",
                "RSS bench MB",
                "on disk MB",
            ],
            rows2,
        )
    )


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_restart":
        restart_probe(sys.argv[2], json.loads(sys.argv[3]))
        return
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    q = sub.add_parser("quality")
    q.add_argument("--model", default="products")
    q.add_argument("--queries", type=int, default=1000)
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--grid", default=str(ROOT / "docs/img/similar-products.png"))
    s = sub.add_parser("speed")
    s.add_argument("--sizes", default="10000,100000,1000000")
    s.add_argument("--dim", type=int, default=128)
    s.add_argument("--threads", type=int, default=2)
    s.add_argument("--seconds", type=float, default=5.0)
    s.add_argument("--hnsw-m", type=int, default=16)
    s.add_argument("--ef-construction", type=int, default=40)
    s.add_argument("--ef-search", type=int, default=128)
    s.add_argument("--tmp", default=None, help="where the temporary stores go")
    args = ap.parse_args()
    quality(args) if args.cmd == "quality" else speed(args)


if __name__ == "__main__":
    main()
