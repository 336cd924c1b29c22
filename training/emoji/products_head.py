"""Refit `products`' classifier on its frozen embedding with Fashion-MNIST plus emoji clothing.

The conv stack stays as shipped; the shared classifier of its two flip-TTA branches is swapped
(training.emoji.products_graph), so serving stays one graph with the same inputs and outputs.
The new head is a softmax regression fitted on every Fashion-MNIST training image and on
views of the clothing drawings of the training styles (each view sent through
`app.imaging.prepare` with the bundle's input spec, as serving does), with the drawings'
weight and the L2 strength chosen by an inner leave-one-style-out on the training styles.
CLI: ``python -m training.emoji.products_head [--json out.json]`` (about 15 min on 2 cores;
embeddings cached under data/products-head-cache). It measures and reports; it never writes
models/products. Measured: the inner rule kept the drawings' share at 0.03 in every fold
(larger shares cost Fashion-MNIST val 0.2-0.5 points), and held-out drawings went from 63/98
to 66/98, within noise, so the bundle was not changed (docs/drawings.md).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx

from app.bundle import Bundle, load_bundle
from app.bundle_write import write_bundle
from app.metrics import wilson_interval
from training.emoji.catalog import PROJECT_ROOT, STYLES, data_root
from training.emoji.products_graph import (
    BranchEmbedder,
    branch_probs,
    classifier_params,
    replace_head,
    with_branch_outputs,
)
from training.emoji.products_views import EVAL_VIEWS, Drawings, embed_drawings
from training.serving_eval import SERVING_PATH

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


# --- softmax regression ----------------------------------------------------------------------


def fit_softmax(
    x: F32,
    y: I64,
    sample_weight: F64,
    *,
    l2: float,
    init: tuple[F32, F32],
    prior: tuple[F32, F32] | None = None,
    max_iter: int = 100,
) -> tuple[F32, F32]:
    """Weighted mean cross-entropy + l2/2 * ||W - W_prior||^2 (bias free), by L-BFGS started
    at `init`. With the shipped head as start and prior, the refit moves only as far from
    what Fashion-MNIST taught as the drawings ask for."""
    from scipy.optimize import minimize  # train extra

    d, c = init[0].shape
    w_prior = prior[0].astype(np.float64) if prior is not None else np.zeros((d, c))
    sw = (sample_weight / sample_weight.sum()).astype(np.float32)
    onehot = np.zeros((len(y), c), np.float32)
    onehot[np.arange(len(y)), y] = 1.0
    xf = np.ascontiguousarray(x, dtype=np.float32)

    def loss_grad(theta: F64) -> tuple[float, F64]:
        w = theta[: d * c].reshape(d, c)
        b = theta[d * c :]
        z = xf @ w.astype(np.float32) + b.astype(np.float32)
        z -= z.max(axis=1, keepdims=True)
        lse = np.log(np.exp(z).sum(axis=1, keepdims=True))
        logp = z - lse
        loss = -float((sw[:, None] * onehot * logp).sum())
        r = (np.exp(logp) - onehot) * sw[:, None]
        gw = (xf.T @ r).astype(np.float64)
        gb = r.sum(axis=0).astype(np.float64)
        diff = w - w_prior
        loss += 0.5 * l2 * float((diff * diff).sum())
        gw += l2 * diff
        return loss, np.concatenate([gw.ravel(), gb])

    theta0 = np.concatenate([init[0].astype(np.float64).ravel(), init[1].astype(np.float64)])
    res = minimize(loss_grad, theta0, jac=True, method="L-BFGS-B", options={"maxiter": max_iter})
    theta = res.x
    return theta[: d * c].reshape(d, c).astype(np.float32), theta[d * c :].astype(np.float32)


# --- leave-one-style-out ---------------------------------------------------------------------

TRAIN_KINDS = {"drawing": 1, "product_shot": 1, "augment": 16, "filled": 6, "thick": 6}
# (drawings' share of the total training weight, L2 towards the shipped head)
# (0.3, 1e-3) was dropped after the noto fold: below (0.3, 1e-4) on both inner drawings (63
# vs 67 of 84) and Fashion-MNIST val (0.9420 vs 0.9433).
GRID = ((0.03, 1e-3), (0.1, 1e-3), (0.3, 1e-4))
FMNIST_SLACK = 0.001  # inner rule: Fashion-MNIST val accuracy may drop at most this much


def as_rows(emb: F32, y: I64) -> tuple[F32, I64]:
    """Every branch embedding is a row (the mirror is a training view for free)."""
    return emb.reshape(-1, emb.shape[-1]), np.repeat(y, emb.shape[1])


@dataclass
class Data:
    fm_emb: F32  # Fashion-MNIST train, N x B x D
    fm_y: I64
    val_idx: I64  # the bundle's own validation split of the training images
    dr: Drawings


def fit_fold(
    data: Data, styles: Sequence[str], share: float, l2: float, fm_idx: I64, init: tuple[F32, F32]
) -> tuple[F32, F32]:
    """Head on Fashion-MNIST rows `fm_idx` and every training view of `styles`' drawings."""
    xf, yf = as_rows(data.fm_emb[fm_idx], data.fm_y[fm_idx])
    m = np.isin(data.dr.style, list(styles))
    xd, yd = as_rows(data.dr.emb[m], data.dr.y[m])
    x, y = np.concatenate([xf, xd]), np.concatenate([yf, yd])
    w = np.concatenate(
        [np.full(len(xf), (1 - share) / len(xf)), np.full(len(xd), share / max(len(xd), 1))]
    )
    return fit_softmax(x, y, w, l2=l2, init=init, prior=init)


FitFn = Callable[[Data, Sequence[str], float, float, I64, tuple[F32, F32]], tuple[F32, F32]]


def top1(data: Data, style: str, kind: str, head: tuple[F32, F32]) -> tuple[int, int]:
    m = (data.dr.style == style) & (data.dr.kind == kind)
    pred = branch_probs(data.dr.emb[m], *head).argmax(axis=1)
    return int((pred == data.dr.y[m]).sum()), int(m.sum())


def choose(
    data: Data,
    styles: Sequence[str],
    shipped: tuple[F32, F32],
    fm_sub: I64,
    log: Callable[[str], None],
    fit: FitFn = fit_fold,
) -> tuple[float, float]:
    """The grid point with the most inner held-out drawings right (views as distributed)
    among those whose Fashion-MNIST val accuracy stays within FMNIST_SLACK of the shipped
    head's; inner heads see `fm_sub` (never the val split) and `styles` minus one."""
    val = data.val_idx
    base = float((branch_probs(data.fm_emb[val], *shipped).argmax(1) == data.fm_y[val]).mean())
    best: tuple[int, float, float] | None = None
    for share, l2 in GRID:
        right, total, val_acc = 0, 0, []
        for inner in styles:
            head = fit(data, [s for s in styles if s != inner], share, l2, fm_sub, shipped)
            k, n = top1(data, inner, "drawing", head)
            right, total = right + k, total + n
            pred = branch_probs(data.fm_emb[val], *head).argmax(1)
            val_acc.append(float((pred == data.fm_y[val]).mean()))
        ok = min(val_acc) >= base - FMNIST_SLACK
        log(
            f"  share {share} l2 {l2}: inner drawings {right}/{total}, F-MNIST val min {min(val_acc):.4f} (shipped {base:.4f}){'' if ok else ' rejected'}"
        )
        if ok and (best is None or right > best[0]):
            best = (right, share, l2)
    return (best[1], best[2]) if best else (0.0, GRID[0][1])


# --- run -------------------------------------------------------------------------------------


def load_data(bundle: Bundle, cache: Path, seed: int, log: Callable[[str], None]) -> Data:
    """Branch embeddings of Fashion-MNIST train and of the drawings' views, cached per model."""
    from training.data import stratified_split
    from training.serving_eval import official_test_split

    cache.mkdir(parents=True, exist_ok=True)
    sha = bundle.metadata.artifact.sha256[:12]
    fm_file, dr_file = cache / f"fmnist-train-{sha}.npz", cache / f"drawings-{sha}-{seed}.npz"
    graph, names = with_branch_outputs(bundle.model_path.read_bytes())
    embedder = BranchEmbedder(graph, names, bundle.metadata.input)
    if not fm_file.is_file():
        log(f"embedding Fashion-MNIST train through the serving path -> {fm_file}")
        split = official_test_split(bundle.metadata)
        np.savez(fm_file, emb=embedder(list(split.x_train)), y=split.y_train)
    if not dr_file.is_file():
        log(f"rendering and embedding drawing views {TRAIN_KINDS} -> {dr_file}")
        d = embed_drawings(embedder, TRAIN_KINDS, seed)
        np.savez(dr_file, emb=d.emb, y=d.y, style=d.style, item=d.item, kind=d.kind)
    fm, dr = np.load(fm_file), np.load(dr_file)
    val = stratified_split(fm["y"], 0.1, bundle.metadata.provenance.seed or 0)[1]
    drawings = Drawings(dr["emb"], dr["y"], dr["style"], dr["item"], dr["kind"])
    return Data(fm["emb"], fm["y"], val, drawings)


def inner_subset(data: Data, inner_fm: int) -> I64:
    """A seeded sample of Fashion-MNIST train for the inner fits (never the val split)."""
    rest = np.setdiff1d(np.arange(len(data.fm_y)), data.val_idx)
    pick = np.random.default_rng(0).choice(rest, min(inner_fm, len(rest)), replace=False)
    return np.sort(pick)


def loso(
    data: Data,
    shipped: tuple[F32, F32],
    inner_fm: int,
    log: Callable[[str], None],
    styles: Sequence[str] = tuple(STYLES),
    fit: FitFn = fit_fold,
) -> dict[str, Any]:
    """Outer leave-one-style-out: settings chosen on the six training styles, head fitted on
    them and all Fashion-MNIST train, the held-out style scored once."""
    fm_sub = inner_subset(data, inner_fm)
    every = np.arange(len(data.fm_y))
    folds: dict[str, Any] = {}
    for held in styles:
        rest = [s for s in styles if s != held]
        log(f"fold {held}: choosing on {rest}")
        share, l2 = choose(data, rest, shipped, fm_sub, log, fit)
        head = fit(data, rest, share, l2, every, shipped)
        cells = {k: top1(data, held, k, head) for k in EVAL_VIEWS}
        was = {k: top1(data, held, k, shipped) for k in EVAL_VIEWS}
        folds[held] = {"share": share, "l2": l2, "new": cells, "shipped": was}
        log(
            f"fold {held}: share {share} l2 {l2} -> drawing {cells['drawing']} (shipped head {was['drawing']}), product shot {cells['product_shot']}"
        )
    return folds


def pooled(folds: dict[str, Any], which: str, kind: str) -> tuple[int, int]:
    k = sum(f[which][kind][0] for f in folds.values())
    return k, sum(f[which][kind][1] for f in folds.values())


def final_head(
    data: Data, shipped: tuple[F32, F32], inner_fm: int, log: Callable[[str], None]
) -> tuple[tuple[F32, F32], float, float]:
    """The head to ship: settings chosen by the inner rule on all seven styles, fitted on
    every drawing view and all Fashion-MNIST train."""
    log("final head: choosing on all styles")
    share, l2 = choose(data, list(STYLES), shipped, inner_subset(data, inner_fm), log)
    head = fit_fold(data, list(STYLES), share, l2, np.arange(len(data.fm_y)), shipped)
    return head, share, l2


def _cell(k: int, n: int) -> str:
    iv = wilson_interval(k, n)
    return f"{k}/{n} = {100 * k / n:.1f}% [{100 * iv.low:.1f}, {100 * iv.high:.1f}]"


def table(folds: dict[str, Any]) -> list[str]:
    """Markdown: per held-out style, the shipped head and the refitted one (top-1 right / n)."""
    out = [
        "| held-out style | chosen share, L2 | drawing: shipped head | drawing: refitted "
        "| product shot: shipped head | product shot: refitted |",
        "|---|---|---|---|---|---|",
    ]
    for style, f in folds.items():
        cells = [f[w][k] for k in EVAL_VIEWS for w in ("shipped", "new")]
        out.append(
            f"| {style} | {f['share']}, {f['l2']:g} | "
            + " | ".join(f"{k}/{n}" for k, n in cells)
            + " |"
        )
    pooled_cells = [_cell(*pooled(folds, w, k)) for k in EVAL_VIEWS for w in ("shipped", "new")]
    out.append("| pooled (Wilson 95%) | | " + " | ".join(pooled_cells) + " |")
    return out


def stage(bundle: Bundle, head: tuple[F32, F32], folder: Path) -> Bundle:
    """The bundle with the refitted head, written to `folder` (metadata as shipped)."""
    model = replace_head(bundle.model_path.read_bytes(), *head)
    return write_bundle(
        folder / bundle.name, model_bytes=model, metadata=bundle.metadata, labels=bundle.labels
    )


def main(argv: Sequence[str] | None = None) -> int:
    from training.serving_eval import evaluate_bundle, official_test_split

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--bundle", type=Path, default=PROJECT_ROOT / "models" / "products")
    ap.add_argument("--cache", type=Path, default=data_root() / "products-head-cache")
    ap.add_argument("--seed", type=int, default=0, help="seed of the drawings' random views")
    ap.add_argument("--inner-fm", type=int, default=5000, help="F-MNIST images per inner fit")
    ap.add_argument("--json", type=Path, help="write the per-fold results here")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t0:6.0f}s] {msg}", flush=True)

    bundle = load_bundle(args.bundle)
    shipped = classifier_params(onnx.load(str(bundle.model_path)))
    data = load_data(bundle, args.cache, args.seed, log)
    folds = loso(data, shipped, args.inner_fm, log)
    print("\n".join(table(folds)))
    head, share, l2 = final_head(data, shipped, args.inner_fm, log)
    with tempfile.TemporaryDirectory() as tmp:
        staged = stage(bundle, head, Path(tmp))
        split = official_test_split(bundle.metadata)
        acc = evaluate_bundle(staged, split.x_test, split.y_test).report.accuracy
        inv = evaluate_bundle(staged, 255 - split.x_test, split.y_test).report.accuracy
    print(
        f"final head (share {share}, L2 {l2:g}, all styles + Fashion-MNIST train): Fashion-MNIST"
        f" test {acc:.2%}, inverted {inv:.2%} (n={len(split.y_test)}, {SERVING_PATH})"
    )
    if args.json:
        res = {"folds": folds, "final": {"share": share, "l2": l2, "test": acc, "inverted": inv}}
        args.json.write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
