"""The tables bench/soak.py prints: resources over the run, requests by operation and status
class, and predict latency in the first fifth of the run against the last."""

from __future__ import annotations

import collections
import statistics

from bench.clients import p99
from bench.soak_stats import Sample, percentile, resource_row
from bench.soak_workload import Call, unexpected


def report_resources(samples: list[Sample], warm_s: float, total_s: float, taught: int) -> None:
    print(
        "| resource | start | after warm-up | peak | end | median 2nd fifth | median last fifth "
        "| slope after warm-up, per min (std err) | residual sd |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    rows = {}
    for key, label, f in (
        ("rss_mb", "RSS MB", ".1f"),
        ("fds", "open fds", ".0f"),
        ("threads", "threads", ".0f"),
    ):
        r = rows[key] = resource_row(samples, key, warm_s, total_s)
        print(
            f"| {label} | {r['start']:{f}} | {r['warm']:{f}} | {r['peak']:{f}} | {r['end']:{f}} "
            f"| {r['fifth2']:{f}} | {r['fifth5']:{f}} | {r['slope']:+.3f} ({r['se']:.3f}) | {r['sd']:.2f} |"
        )
    rss, span = rows["rss_mb"], (samples[-1].t - warm_s) / 60
    print(
        f"\nRSS after warm-up: {rss['slope']:+.3f} MB/min (std err {rss['se']:.3f}, which understates: "
        f"samples are autocorrelated), i.e. {rss['slope'] * span:+.1f} MB over the {span:.1f} measured "
        f"minutes against a residual sd of {rss['sd']:.1f} MB; median of the last fifth vs the second: "
        f"{rss['fifth5'] - rss['fifth2']:+.1f} MB ({rss['fifth5'] / rss['fifth2']:.3f}x); if it went "
        f"on linearly: {rss['slope'] * 60 * 24:+.0f} MB a day"
    )
    grown = rows["threads"]["end"] - rows["threads"]["warm"]
    if taught:
        print(
            f"threads after warm-up {grown:+.0f} while {taught} taught models were made, used and "
            f"deleted after it ({grown / taught:+.2f} per model)"
        )


def report_requests(calls: list[Call], minutes: float) -> None:
    by_op: dict[str, list[Call]] = collections.defaultdict(list)
    for c in calls:
        by_op[c.op].append(c)
    print(
        "| operation | expect | n | 2xx | 4xx | 5xx | no answer | unexpected | statuses | p50 ms | p99 ms |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---|---:|---:|")
    for op in sorted(by_op, key=lambda o: (o.startswith(("bad", "teach")), o)):
        cs = by_op[op]
        cls = collections.Counter(c.status // 100 for c in cs)
        codes = " ".join(
            f"{s}x{n}" for s, n in sorted(collections.Counter(c.status for c in cs).items())
        )
        ms = [c.ms for c in cs]
        print(
            f"| {op} | {cs[0].expect} | {len(cs)} | {cls[2]} | {cls[4]} | {cls[5]} | {cls[0]} "
            f"| {sum(map(unexpected, cs))} | {codes} | {statistics.median(ms):.1f} | {p99(ms):.1f} |"
        )
    t = collections.Counter(c.status // 100 for c in calls)
    print(
        f"\nrequests: {len(calls):,} in {minutes:.1f} min ({len(calls) / (minutes * 60):.1f}/s): "
        f"2xx {t[2]:,}, 3xx {t[3]}, 4xx {t[4]:,}, 5xx {t[5]}, no answer {t[0]}"
    )


def report_latency(calls: list[Call], total_s: float) -> None:
    preds = [c for c in calls if c.op == "predict" and c.status == 200]
    print("predict, one image (200s): the first fifth of the run against the last fifth")
    print(
        "| model | n first | p50 ms | p99 ms | n last | p50 ms | p99 ms | p50 last/first | p99 last/first |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for m in [*sorted({c.model for c in preds}), "all"]:
        mine = [c for c in preds if m in ("all", c.model)]
        first = [c.ms for c in mine if c.t < total_s / 5]
        last = [c.ms for c in mine if c.t >= total_s * 4 / 5]
        a50, a99, b50, b99 = (percentile(v, q) for v in (first, last) for q in (50, 99))
        print(
            f"| {m} | {len(first)} | {a50:.1f} | {a99:.1f} | {len(last)} | {b50:.1f} | {b99:.1f} "
            f"| {b50 / a50:.2f} | {b99 / a99:.2f} |"
        )
