"""The cached input of the imagenet graph's last MBConv block (block15, 7x7x192) per emoji picture.

training.emoji.top_finetune fine-tunes the top of the backbone from this tensor, so the frozen
bottom of the network runs once per picture: through onnxruntime, for the base view and one
augmented view (``embed.aug_subset`` 'aug0'), stored as float16 under
``data/emoji-finetune-cache/<render version>-<backbone sha>-v<cache version>/`` (722 MB; ~18 min
once on 2 busy cores).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from training.emoji.catalog import STYLES, Picture, data_root, load_catalog
from training.emoji.embed import BACKBONE, RENDER_VERSION, SIZE, aug_subset, view_seed
from training.emoji.render import augment, base_array

logger = logging.getLogger(__name__)

CUT = "serving_1/block14_add_1/Add:0"  # NCHW N x 192 x 7 x 7: the input of block15
CACHE_VERSION = 1


def cut_model_bytes(bundle_dir: Path = BACKBONE) -> bytes:
    """The imagenet graph with the cut tensor as one more output (next to embedding/probs)."""
    import onnx

    model = onnx.load(str(bundle_dir / "model.onnx"))
    model.graph.output.append(onnx.helper.make_tensor_value_info(CUT, onnx.TensorProto.FLOAT, None))
    return bytes(model.SerializeToString())


class CutBackbone:
    """RGB 224 float batch -> (cut tensor NHWC float16, embedding, probs) via onnxruntime."""

    def __init__(self, bundle_dir: Path = BACKBONE, threads: int = 2) -> None:
        # A raw session, not app.runtime: OnnxModel.run returns only a bundle's probs and
        # embedding, and the cut tensor here is an intermediate one added as an output.
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        self.session = ort.InferenceSession(
            cut_model_bytes(bundle_dir), opts, providers=["CPUExecutionProvider"]
        )

    def __call__(self, batch: npt.NDArray[np.float32]) -> tuple[np.ndarray, ...]:
        cut, emb, probs = self.session.run([CUT, "embedding", "probs"], {"image": batch})
        return cut.transpose(0, 2, 3, 1).astype(np.float16), emb, probs


def view_array(picture: Picture, style: str, view: str, seed: int) -> npt.NDArray[np.uint8]:
    """The picture as embed.style_features renders it: 'base' or 'aug<k>' seeded per picture."""
    if view == "base":
        return base_array(picture, SIZE)
    rng = np.random.default_rng([view_seed(view), list(STYLES).index(style), seed])
    return augment(picture, SIZE, rng)


@dataclass
class CutSet:
    cut: npt.NDArray[np.float16]  # N x 7 x 7 x 192
    emb: npt.NDArray[np.float32]  # N x 1280 (the ONNX embedding, for parity)
    bird_mass: npt.NDArray[np.float32]
    paths: tuple[str, ...]


def cache_file(style: str, view: str, bundle_dir: Path = BACKBONE) -> Path:
    """Keyed like embed's cache: rendering version, backbone sha256, this cache's version."""
    from app.bundle import load_bundle

    sha = load_bundle(bundle_dir).metadata.artifact.sha256[:12]
    key = f"r{RENDER_VERSION}-{sha}-v{CACHE_VERSION}"
    return data_root() / "emoji-finetune-cache" / key / f"{style}-{view}.npz"


def cut_features(
    style: str, view: str, backbone: CutBackbone | None = None, batch: int = 32
) -> CutSet:
    """Cut tensors of a style's pictures (base: all; aug0: embed.aug_subset), cached."""
    from training.imagenet import BIRD_INDICES

    path = cache_file(style, view)
    if path.is_file():
        z = np.load(path)
        return CutSet(z["cut"], z["emb"], z["bird_mass"], tuple(z["paths"].tolist()))
    pics = [p for p in load_catalog(styles=[style]) if p.style == style]
    idx = list(range(len(pics))) if view == "base" else aug_subset(pics, view)
    backbone = backbone or CutBackbone()
    t0 = time.perf_counter()
    cuts, embs, masses = [], [], []
    for s in range(0, len(idx), batch):
        part = idx[s : s + batch]
        x = np.stack([view_array(pics[i], style, view, i) for i in part]).astype(np.float32)
        c, e, p = backbone(x)
        cuts.append(c)
        embs.append(e)
        masses.append(p[:, np.asarray(BIRD_INDICES)].sum(axis=1))
    base = data_root()
    rel = np.asarray([str(pics[i].path.relative_to(base)) for i in idx])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    out = CutSet(np.concatenate(cuts), np.concatenate(embs), np.concatenate(masses), tuple(rel))
    np.savez(tmp, cut=out.cut, emb=out.emb, bird_mass=out.bird_mass, paths=rel)
    tmp.replace(path)
    logger.info("%s %s: %d pictures in %.0f s", style, view, len(idx), time.perf_counter() - t0)
    return out


def fill_cache(views: Sequence[str] = ("base", "aug0")) -> None:
    backbone = CutBackbone()
    for view in views:
        for style in STYLES:
            cut_features(style, view, backbone)
