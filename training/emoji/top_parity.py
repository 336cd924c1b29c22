"""The composed served graph checked against Keras: the members' final models scored in Keras
(sigmoid of their mean logit; bird: combined with the ImageNet bird mass as the bird graph
does), and parity of the ONNX graph with them on cached cut tensors and end to end on rendered
pictures through the server's runtime. top_bundle.write refuses a graph that differs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from app.bundle import BundleMetadata
from training.emoji.catalog import STYLES
from training.emoji.tasks import TASKS
from training.emoji.top_summary import sigmoid


def keras_scores(
    finals: Sequence[dict[str, Any]],
    cut: npt.NDArray[Any],
    task: str = "santa",
    combine: tuple[float, npt.NDArray[Any]] | None = None,
) -> npt.NDArray[np.float64]:
    """P(task) of the members' final models on cut tensors in Keras: sigmoid of the mean of
    their logits (what the served graph computes); `combine` (threshold t, bird mass):
    max(mass, sigmoid(mean logit - logit t)), as the bird graph."""
    from training.emoji.top_ship import keras_logits

    z = np.mean([keras_logits(f, cut, task) for f in finals], axis=0)
    if combine is None:
        return sigmoid(z)
    from training.emoji.compose import threshold_logit

    t, mass = combine
    return np.maximum(np.asarray(mass, np.float64), sigmoid(z - threshold_logit(t)))


def parity(
    model_bytes: bytes,
    finals: Sequence[dict[str, Any]],
    meta: BundleMetadata,
    task: str = "santa",
    combine_threshold: float | None = None,
) -> dict[str, float]:
    """Composed ONNX vs Keras: on cached (float16) cut tensors through the cut subgraph, and
    end to end on rendered pictures through the server's runtime (Keras fed the float32 cut
    tensors of the same pictures from the imagenet graph). bird: the ImageNet bird mass (the
    imagenet graph's own top, unchanged) is taken from the graph being checked on the cut
    tensors and from the imagenet graph end to end."""
    import onnxruntime as ort

    from training.emoji.catalog import data_root, load_catalog
    from training.emoji.render import base_array
    from training.emoji.top_cache import CUT, CutBackbone, cut_features
    from training.emoji.top_graph import cut_subgraph
    from training.imagenet import BIRD_INDICES
    from training.serving_eval import open_model

    label = TASKS[task].label
    cs = cut_features("twemoji", "base")
    cat = {str(p.path.relative_to(data_root())): p for p in load_catalog(styles=["twemoji"])}
    positives = [i for i, r in enumerate(cs.paths) if label(cat[r]) == 1]
    rows = np.r_[np.arange(0, len(cs.paths), 15), positives]
    cut = cs.cut[rows]
    outs = ["probs"] if combine_threshold is None else ["probs", "comb_mass"]
    # A raw session, not app.runtime: the cut subgraph's input is the block15 tensor (NCHW),
    # not an image, and `comb_mass` is no bundle output, so OnnxModel would refuse it. The
    # served graph itself goes through the server's runtime below (open_model).
    sub = ort.InferenceSession(cut_subgraph(model_bytes, outs), providers=["CPUExecutionProvider"])
    got = sub.run(outs, {CUT: cut.astype(np.float32).transpose(0, 3, 1, 2)})
    comb = None if combine_threshold is None else (combine_threshold, got[1][:, 0])
    d_cut = float(np.abs(got[0][:, 1] - keras_scores(finals, cut, task, comb)).max())
    pics = [p for p in load_catalog(styles=list(STYLES)) if label(p) == 1][::6]
    two = ("noto", "openmoji-black")
    pics += [p for p in load_catalog(styles=list(two)) if p.style in two][::400]
    x = np.stack([base_array(p, 224) for p in pics]).astype(np.float32)
    served = open_model(model_bytes, metadata=meta, labels=TASKS[task].labels)
    p_full = served.run(x).probs[:, 1]
    exact, probs = CutBackbone().session.run([CUT, "probs"], {"image": x})
    mass = probs[:, np.asarray(BIRD_INDICES)].sum(axis=1)
    comb = None if combine_threshold is None else (combine_threshold, mass)
    want = keras_scores(finals, exact.transpose(0, 2, 3, 1), task, comb)
    d_full = float(np.abs(p_full - want).max())
    out = {
        "cut_rows": len(rows),
        "cut_max_abs": d_cut,
        "pictures": len(pics),
        "full_max_abs": d_full,
    }
    print(f"parity: cut subgraph vs Keras on {len(rows)} cached twemoji cut tensors: max |dP| "
          f"{d_cut:.2e}; served graph (onnxruntime) vs Keras on {len(pics)} rendered pictures: "
          f"max |dP| {d_full:.2e}")  # fmt: skip
    return out
