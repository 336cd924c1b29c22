"""The server process as bench/soak.py samples it (RSS, open fds and threads from /proc) and
the arithmetic over the samples: least-squares slope, percentiles, medians of the fifths."""

from __future__ import annotations

import os
import re
import statistics
import threading
import time
from dataclasses import dataclass
from pathlib import Path

# -- sampling the server process ---------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    t: float  # seconds since the load started
    rss_mb: float
    fds: int
    threads: int


def read_proc(pid: int) -> tuple[float, int, int]:
    """(RSS MB, open fds, threads) of `pid` from /proc."""
    status = Path(f"/proc/{pid}/status").read_text()
    rss_kb = int(re.search(r"^VmRSS:\s+(\d+)", status, re.M).group(1))  # type: ignore[union-attr]
    threads = int(re.search(r"^Threads:\s+(\d+)", status, re.M).group(1))  # type: ignore[union-attr]
    return rss_kb / 1024, len(os.listdir(f"/proc/{pid}/fd")), threads


def sample_loop(
    pid: int, t0: float, out: list[Sample], stop: threading.Event, every: float
) -> None:
    next_t = time.monotonic()
    while not stop.is_set():
        try:
            out.append(Sample(time.monotonic() - t0, *read_proc(pid)))
        except (OSError, AttributeError):  # the process is gone
            return
        next_t += every
        stop.wait(max(0.0, next_t - time.monotonic()))


# -- analysis ---------------------------------------------------------------------------------


def fit(ts: list[float], ys: list[float]) -> tuple[float, float, float]:
    """Least squares y = a + b t: (slope b, its standard error, residual standard deviation)."""
    nan = float("nan")
    if len(ts) < 3 or len(set(ts)) < 2:
        return nan, nan, nan
    mt, my = statistics.fmean(ts), statistics.fmean(ys)
    sxx = sum((t - mt) ** 2 for t in ts)
    b = sum((t - mt) * (y - my) for t, y in zip(ts, ys, strict=True)) / sxx
    sse = sum((y - my - b * (t - mt)) ** 2 for t, y in zip(ts, ys, strict=True))
    sd = (sse / (len(ts) - 2)) ** 0.5
    return b, sd / sxx**0.5, sd


def percentile(values: list[float], q: int) -> float:
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def resource_row(
    samples: list[Sample], key: str, warm_s: float, total_s: float
) -> dict[str, float]:
    """start, after warm-up, peak, end, medians of the 2nd and last fifths, slope per minute
    after the warm-up with its standard error, residual sd."""
    ys = [float(getattr(s, key)) for s in samples]
    after = [(s.t / 60, y) for s, y in zip(samples, ys, strict=True) if s.t >= warm_s]
    slope, se, sd = fit([t for t, _ in after], [y for _, y in after])

    def median_in(lo: float, hi: float) -> float:
        vals = [y for s, y in zip(samples, ys, strict=True) if lo <= s.t / total_s < hi]
        return statistics.median(vals) if vals else float("nan")

    warm = after[0][1] if after else float("nan")
    return {
        "start": ys[0],
        "warm": warm,
        "peak": max(ys),
        "end": ys[-1],
        "fifth2": median_in(0.2, 0.4),
        "fifth5": median_in(0.8, 2.0),
        "slope": slope,
        "se": se,
        "sd": sd,
    }
