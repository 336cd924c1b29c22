"""A picture prepared for the imagenet model in a fresh process, for the bench scripts that
compare what preparations cost (bench.avif, bench.png_bands): the median time of `runs`
preparations and the peak memory they add (VmHWM minus VmRSS before them, after a first
preparation has loaded the libraries and filled the caches).

Usage: .venv/bin/python -m bench.prepare_child PATH RUNS [--whole]  (prints "ms MiB"; --whole:
PNG banding off, Pillow decodes the whole picture)
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def in_child(path: Path, runs: int, whole: bool = False) -> tuple[float, float]:
    """(median ms, peak MiB added) of preparing the picture at `path` in a fresh process."""
    cmd = [sys.executable, "-m", "bench.prepare_child", str(path), str(runs)]
    out = subprocess.run(cmd + ["--whole"] * whole, cwd=ROOT, capture_output=True, text=True)
    if out.returncode:
        sys.exit(out.stderr)
    ms, mib = out.stdout.split()[-2:]
    return float(ms), float(mib)


def _status(key: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("path", type=Path)
    ap.add_argument("runs", type=int)
    ap.add_argument("--whole", action="store_true")
    args = ap.parse_args()
    from app import png_bands
    from app.bundle import load_bundle
    from app.imaging import ImageLimits, prepare

    if args.whole:
        png_bands.MIN_BYTES = 1 << 62  # type: ignore[misc]
    spec = load_bundle(ROOT / "models" / "imagenet").metadata.input
    data = args.path.read_bytes()
    prepare(data, spec, ImageLimits())  # warm: libraries loaded, caches filled
    before = _status("VmRSS")
    times = []
    for _ in range(args.runs):
        t = time.perf_counter()
        prepare(data, spec, ImageLimits())
        times.append(time.perf_counter() - t)
    print(statistics.median(times) * 1e3, (_status("VmHWM") - before) / 1024)


if __name__ == "__main__":
    main()
