"""How alike are variants of one picture, and distinct pictures of one class, through the served
`imagenet` backbone? The measurements behind app/teach/variants.py's near-twin threshold.

Every picture goes through the server's ingestion (app.imaging.prepare on the file's bytes)
and the shipped `imagenet` bundle (training.emoji.embed.Backbone); similarity is the cosine of
unit embeddings. Data sets (scripts/fetch-data; sklearn ships its digits):
  * variants: emoji drawn in six skin tones (default + five), Twemoji and Noto; every pair of
    tones of one emoji is a variant pair;
  * distinct emoji: default tone, one style, eight subcategories as classes (bench/teach_eval's
    SUBCATEGORIES), and every subcategory of the style as classes;
  * photos: the project's 73 labelled photos (bird / not bird), and each re-encoded as JPEG
    quality 60 and resized to half its size (variants of the original);
  * sklearn's 1,797 digits (8x8, ten classes) as PNGs.
For each threshold: the share of variant pairs at or above it, and the share of items whose
nearest other item of the same class (copies excluded) is at or above it (what the teach
caveat counts), with n.

Usage: .venv/bin/python -m bench.teach_variants [--cache FILE.npz]   (embeds ~6,000 pictures)
"""

from __future__ import annotations

import argparse
import io
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from app.imaging import ImageLimits, prepare
from app.teach.familiar import unit_rows
from app.teach.variants import APART, SHARE, TWIN, near_twins
from bench.teach_eval import SUBCATEGORIES
from training.emoji.catalog import Picture, load_catalog
from training.emoji.embed import Backbone
from training.imagenet import bird_photos

STYLES = ("twemoji", "noto")


def embed(backbone: Backbone, files: Sequence[bytes], batch: int = 32) -> np.ndarray:
    spec, limits = backbone.bundle.metadata.input, ImageLimits()
    out = []
    for s in range(0, len(files), batch):
        arrays = [prepare(b, spec, limits).array for b in files[s : s + batch]]
        out.append(backbone(np.stack(arrays).astype(np.float32))[0])
    return unit_rows(np.concatenate(out))


def png(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "PNG")
    return buf.getvalue()


def photo_variants(path: Path) -> list[bytes]:
    """The photo as stored, re-encoded as JPEG quality 60, and resized to half its size."""
    im = Image.open(path).convert("RGB")
    jpeg, half = io.BytesIO(), io.BytesIO()
    im.save(jpeg, "JPEG", quality=60)
    im.resize((max(1, im.width // 2), max(1, im.height // 2)), Image.Resampling.BILINEAR).save(
        half, "PNG"
    )
    return [path.read_bytes(), jpeg.getvalue(), half.getvalue()]


def toned(pictures: Sequence[Picture]) -> list[list[Picture]]:
    """Emoji with exactly one picture per tone 0..5 (one person: no mixed-tone couples)."""
    by: dict[str, list[Picture]] = {}
    for p in pictures:
        by.setdefault(p.key, []).append(p)
    return [
        sorted(ps, key=lambda p: p.tone)
        for ps in by.values()
        if sorted(p.tone for p in ps) == list(range(6))
    ]


def collect(backbone: Backbone) -> dict[str, np.ndarray]:
    data: dict[str, np.ndarray] = {}
    for style in STYLES:
        pics = load_catalog(styles=[style])
        flat = [p for ps in toned(pics) for p in ps]
        data[f"var-{style}"] = embed(backbone, [p.path.read_bytes() for p in flat])
        plain = [p for p in pics if p.tone == 0]
        data[f"all-{style}"] = embed(backbone, [p.path.read_bytes() for p in plain])
    photos = bird_photos()
    files = [b for p in photos for b in photo_variants(p.path)]
    data["photos"] = embed(backbone, files)
    from sklearn.datasets import load_digits  # type: ignore[import-untyped]

    imgs = (load_digits().images * 255 / 16).round().astype(np.uint8)
    data["digits"] = embed(backbone, [png(a) for a in imgs])
    return data


def ids(values: Sequence[object]) -> np.ndarray:
    return np.unique(np.asarray(values), return_inverse=True)[1].astype(np.int64)


def catalogs(data: dict[str, np.ndarray]) -> list[tuple[str, np.ndarray, np.ndarray, Any]]:
    """(name, x, y, groups) of each catalog the caveat is tried on."""
    out: list[tuple[str, np.ndarray, np.ndarray, Any]] = []
    for style in STYLES:
        pics = load_catalog(styles=[style])
        flat = [p for ps in toned(pics) for p in ps]
        x, sub, key = (
            data[f"var-{style}"],
            ids([p.subcategory for p in flat]),
            ids([p.key for p in flat]),
        )
        out.append(
            (
                f"{style}: {len(set(key.tolist()))} emoji x 6 tones, class = subcategory",
                x,
                sub,
                None,
            )
        )
        out.append((f"{style}: the same, each emoji's tones one group", x, sub, key))
        plain = [p for p in pics if p.tone == 0]
        santa = [i for i, p in enumerate(flat) if p.short_name in ("santa", "mrs_claus")]
        extra = [i for i, p in enumerate(plain) if p.short_name in ("snowman", "christmas_tree")]
        xs = np.concatenate([x[santa], data[f"all-{style}"][extra]])
        ys = np.asarray([flat[i].short_name == "santa" for i in santa] + [False] * len(extra))
        out.append(
            (
                f"{style}: santa (6 tones) vs Mrs Claus (6 tones), snowman, tree",
                xs,
                ys.astype(np.int64),
                None,
            )
        )
        xa, subs = data[f"all-{style}"], [p.subcategory for p in plain]
        in8 = np.isin(subs, SUBCATEGORIES)
        out.append(
            (
                f"{style}: default tone, 8 subcategories",
                xa[in8],
                ids(np.asarray(subs)[in8].tolist()),
                None,
            )
        )
        out.append((f"{style}: default tone, every subcategory", xa, ids(subs), None))
    p = data["photos"]
    py = np.asarray([ph.is_bird for ph in bird_photos()], np.int64)
    out.append(("73 photos (bird / not bird)", p[0::3], py, None))
    for k, how in ((1, "JPEG q60"), (2, "half size")):
        both = np.concatenate([p[0::3], p[k::3]])
        out.append((f"73 photos + each {how}", both, np.tile(py, 2), None))
    from sklearn.datasets import load_digits

    out.append(("sklearn digits", data["digits"], load_digits().target.astype(np.int64), None))
    return out


def report(data: dict[str, np.ndarray]) -> None:
    for style in STYLES:
        x = data[f"var-{style}"]
        sims = x.reshape(-1, 6, x.shape[1]) @ x.reshape(-1, 6, x.shape[1]).transpose(0, 2, 1)
        pair = sims[:, *np.triu_indices(6, 1)].ravel()
        print(
            f"{style} skin-tone variant pairs: n={len(pair)}, cosine {pair.min():.3f}-"
            f"{pair.max():.3f}, median {np.median(pair):.3f}"
        )
    p = data["photos"]
    for k, how in ((1, "JPEG q60"), (2, "half size")):
        c = (p[0::3] * p[k::3]).sum(axis=1)
        print(
            f"photos vs {how}: n={len(c)}, cosine median {np.median(c):.3f}, >= 0.9: {(c >= 0.9).mean():.2f}"
        )
    twin_at = TWIN["imagenet"]
    print(
        f"\nshare of items with a near-twin (cosine >= {twin_at}, {APART:g}x nearer than "
        f"another class; the caveat fires at {SHARE:.0%})"
    )
    print("| catalog | n | items with a twin | fires |\n|---|---|---|---|")
    for name, x, y, g in catalogs(data):
        t = near_twins(x, y, twin_at, g)
        print(
            f"| {name} | {t.n} | {t.items / t.of:.3f} ({t.items}/{t.of}) | "
            f"{'yes' if t.items >= SHARE * t.of else 'no'} |"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--cache", type=Path, help="embeddings kept here between runs (.npz)")
    args = ap.parse_args()
    if args.cache is not None and args.cache.is_file():
        data = dict(np.load(args.cache))
    else:
        t0 = time.perf_counter()
        data = collect(Backbone())
        print(f"embedded in {time.perf_counter() - t0:.0f} s")
        if args.cache is not None:
            np.savez(args.cache, **data)  # type: ignore[arg-type]
    report(data)


if __name__ == "__main__":
    main()
