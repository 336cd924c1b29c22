"""The threshold of a taught yes/no model (round 26 audit): with 2-3 positives the best-F1 cut
on the held-out scores fell to 0.0, so the served `decision` said yes to every picture while
the report (about the most probable label) looked fine. It now stays at 0.5, the most probable
label the figures describe, until each side has 10 held-out pictures, and a tuned one stays
within 0.05-0.95 and never flags everything."""

from __future__ import annotations

import numpy as np
from fastapi.testclient import TestClient

from app.teach.yes_no import MIN_TO_TUNE, TUNED_RANGE, yes_no_threshold
from tests.app.teach.conftest import BAG, SNEAKER, make_catalog, wait_job


def test_too_few_held_out_pictures_keep_the_even_odds() -> None:
    scores = np.array([0.01, 0.02, 0.03] + [0.001] * 30)  # a fold head that saw 2 positives
    is_pos = np.array([True] * 3 + [False] * 30)
    threshold, how, warning = yes_no_threshold(scores, is_pos, "santa")
    assert threshold == 0.5 and "most probable label" in how
    assert warning is not None and "3 held-out 'santa' and 30 other" in warning
    rng = np.random.default_rng(0)
    enough = rng.random(2 * MIN_TO_TUNE)
    is_pos = np.arange(2 * MIN_TO_TUNE) < MIN_TO_TUNE
    assert yes_no_threshold(enough, is_pos, "santa")[2] is None  # tuned, no warning


def test_a_tuned_threshold_stays_within_its_range_and_never_flags_everything() -> None:
    is_pos = np.array([True] * 12 + [False] * 40)
    low = np.concatenate([np.full(12, 0.02), np.full(40, 0.001)])  # best cut near 0.01
    threshold, how, _ = yes_no_threshold(low, is_pos, "santa")
    assert threshold == TUNED_RANGE[0] and "best F1" in how
    mixed = np.concatenate([np.full(12, 0.03), np.full(40, 0.04)])  # any cut flags them all
    assert yes_no_threshold(mixed, is_pos, "santa")[0] == 0.5
    high = np.concatenate([np.full(12, 0.999), np.full(40, 0.9985)])
    assert yes_no_threshold(high, is_pos, "santa")[0] == TUNED_RANGE[1]


def test_a_yes_no_model_from_three_positives_does_not_say_yes_to_everything(
    teach_client: TestClient, fm_pngs: dict[int, list[bytes]]
) -> None:
    c = teach_client
    make_catalog(c, "few", {"santa": fm_pngs[SNEAKER][:3], "not_santa": fm_pngs[BAG][:30]})
    r = c.post("/v1/catalogs/few/train", json={"model": "few-santa"})
    job = wait_job(c, r.headers["location"])
    assert job["status"] == "succeeded", job
    m = job["result"]["metrics"]
    assert m["threshold"] == 0.5 and m["positive_label"] == "santa"
    assert any("stays at 0.5" in w for w in job["warnings"]), job["warnings"]
    assert {"decision_precision", "decision_recall", "decision_accuracy"} <= set(m["extra"])
    files = [("file", (f"{i}.png", p, "image/png")) for i, p in enumerate(fm_pngs[BAG][40:50])]
    results = c.post("/v1/models/few-santa/predict", files=files).json()["results"]
    said_yes = sum(r["decision"]["is_positive"] for r in results)
    assert said_yes <= 2, [r["decision"] for r in results]  # bags are not Santas
