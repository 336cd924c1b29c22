"""bench.soak: the trend arithmetic it reports, and a short real run against `python -m app`."""

from __future__ import annotations

import random
import re

import pytest

from bench.soak import main
from bench.soak_stats import Sample, fit, resource_row
from bench.soak_workload import Call, unexpected


def test_fit_recovers_a_slope_under_noise_and_gives_its_scatter() -> None:
    rng = random.Random(0)
    ts = [i / 60 for i in range(600)]  # ten minutes, one sample a second
    ys = [500 + 0.8 * t + rng.gauss(0, 2.0) for t in ts]
    slope, stderr, sd = fit(ts, ys)
    assert slope == pytest.approx(0.8, abs=4 * stderr)
    assert 0 < stderr < 0.2
    assert sd == pytest.approx(2.0, rel=0.15)
    flat, _, flat_sd = fit(ts, [500.0] * len(ts))
    assert flat == 0 and flat_sd == 0


def test_resource_row_leaves_the_warm_up_out_of_the_slope() -> None:
    # Threads climb during the first 20% (warm-up), then stay: slope 0 after it, +2 a minute
    # from the start.
    samples = [Sample(t, 300.0, 30, min(9 + t // 6, 24)) for t in range(600)]
    row = resource_row(samples, "threads", warm_s=120, total_s=600)
    assert (row["start"], row["warm"], row["peak"], row["end"]) == (9, 24, 24, 24)
    assert row["slope"] == 0
    leaking = [Sample(t, 300.0 + t / 60, 30, 24) for t in range(600)]  # +1 MB a minute
    assert resource_row(leaking, "rss_mb", 120, 600)["slope"] == pytest.approx(1.0)


def test_unexpected_flags_5xx_no_answer_and_the_wrong_class() -> None:
    ok = [Call(0, "predict", "2xx", 200, 1.0), Call(0, "bad", "4xx", 413, 1.0)]
    bad = [
        Call(0, "predict", "2xx", 503, 1.0),
        Call(0, "predict", "2xx", 0, 1.0),  # transport error
        Call(0, "bad", "4xx", 200, 1.0),
        Call(0, "bad", "4xx", 500, 1.0),
        Call(0, "predict", "2xx", 422, 1.0),
    ]
    assert not any(map(unexpected, ok)) and all(map(unexpected, bad))


@pytest.mark.slow
def test_a_short_soak_of_a_real_server_answers_every_request_and_reports(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = ["--minutes", "0.25", "--clients", "2", "--teach-every", "5"]
    code = main([*args, "--models", "products", "digits", "--strict"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "no 5xx, no transport errors" in out
    assert "| RSS MB |" in out and "| open fds |" in out and "| threads |" in out
    assert "| bad: " in out  # bad requests were sent (and, with --strict, all got a 4xx)
    taught = re.search(r"a teach job every 5 s \((\d+) done\)", out)
    assert taught and int(taught.group(1)) >= 1, out  # teach jobs ran end to end
    assert "| teach: predict deleted | 4xx |" in out
    assert "(clean)" in out
