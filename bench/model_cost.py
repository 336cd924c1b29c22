"""Time per image of bundles' graphs, measured side by side in one run.

Each graph runs batch 1 on one onnxruntime thread (what one of the server's pipelines gives a
request on this machine), on the same prepared images; the graphs take turns (interleaved
rounds), so a change in machine load hits all of them alike. Prints the median ms per image
per bundle and its ratio to the first bundle given.

CLI: ``python -m bench.model_cost models/imagenet models/bird [--rounds 40]``; a bundle
directory of an earlier version works too (e.g. ``git show v1:models/bird/model.onnx``
written next to a copy of its metadata).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

import onnxruntime as ort

from app.bundle import load_bundle
from tests.images import rectangles


def _session(path: Path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def measure(bundles: Sequence[Path], rounds: int, per_round: int = 10) -> list[float]:
    """Median ms per image of each bundle's graph over `rounds` interleaved rounds."""
    loaded = [load_bundle(b, verify_hash=False) for b in bundles]
    sessions = [_session(b.model_path) for b in loaded]
    if any((b.metadata.input.height, b.metadata.input.width) != (224, 224) for b in loaded):
        raise ValueError("only 224x224 RGB bundles (the imagenet family) are compared")
    images = rectangles(per_round, seed=1)  # a CNN's time does not depend on the content
    for s, b in zip(sessions, loaded, strict=True):  # warm-up
        s.run(None, {b.metadata.input.name: images[:1]})
    times: list[list[float]] = [[] for _ in sessions]
    for _ in range(rounds):
        for i, (s, b) in enumerate(zip(sessions, loaded, strict=True)):
            name = b.metadata.input.name
            t0 = time.perf_counter()
            for k in range(per_round):
                s.run(None, {name: images[k : k + 1]})
            times[i].append(1000 * (time.perf_counter() - t0) / per_round)
    return [statistics.median(t) for t in times]


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("bundles", type=Path, nargs="+")
    ap.add_argument("--rounds", type=int, default=40)
    args = ap.parse_args(argv)
    ms = measure(args.bundles, args.rounds)
    print(f"| bundle | ms per image (batch 1, 1 thread, median of {args.rounds} rounds) | "
          f"x {args.bundles[0]} |")  # fmt: skip
    print("|---|---:|---:|")
    for b, m in zip(args.bundles, ms, strict=True):
        print(f"| {b} | {m:.2f} | {m / ms[0]:.2f} |")


if __name__ == "__main__":
    main()
