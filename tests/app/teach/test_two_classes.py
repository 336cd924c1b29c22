"""Two taught classes: a yes/no decision only when asked for or when one label is the "no" side.

Real Fashion-MNIST test images through the shipped `products` backbone and the real API (no
mocked model). "Sneaker" vs "Sandal" is a choice between two categories: it used to get a
threshold for its first label, so a sneaker was answered "not Sandal" (and the page showed
"✕ Not Sandal").
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.teach import cli as teach_cli
from tests.app.teach.conftest import BAG, SANDAL, SNEAKER, make_catalog, wait_job
from tests.conftest import ROOT

TAUGHT = 10  # pictures per class in the catalog; pictures [40:50] are never taught


def teach(c: TestClient, catalog: str, model: str, **options: Any) -> dict[str, Any]:
    r = c.post(f"/v1/catalogs/{catalog}/train", json={"model": model, **options})
    assert r.status_code == 202, r.text
    job = wait_job(c, r.headers["location"])
    assert job["status"] == "succeeded", job
    result: dict[str, Any] = job["result"]
    return result


def predict(c: TestClient, model: str, images: list[bytes]) -> list[dict[str, Any]]:
    files = [("file", (f"{i}.png", d, "image/png")) for i, d in enumerate(images)]
    r = c.post(f"/v1/models/{model}/predict", files=files)
    assert r.status_code == 200, r.text
    results: list[dict[str, Any]] = r.json()["results"]
    return results


def card(c: TestClient, model: str) -> str:
    data = Path(c.app.state.settings.data_dir)  # type: ignore[attr-defined]
    return (data / "models" / model / "1" / "README.md").read_text()


def test_two_ordinary_categories_are_ranked_without_a_decision(
    teach_client: TestClient, fm_pngs: dict[int, list[bytes]]
) -> None:
    c = teach_client
    classes = {"Sneaker": fm_pngs[SNEAKER][:TAUGHT], "Sandal": fm_pngs[SANDAL][:TAUGHT]}
    make_catalog(c, "shoes", classes)
    result = teach(c, "shoes", "shoe-kind")
    m = result["metrics"]
    # Held-out figures are still reported, without a threshold.
    assert m["threshold"] is None and m["positive_label"] is None, m
    assert m["n_samples"] == 2 * TAUGHT and 0 <= m["accuracy"] <= 1
    assert {p["label"] for p in m["per_class"]} == {"Sneaker", "Sandal"}
    assert sum(map(sum, m["confusion"])) == 2 * TAUGHT
    assert "threshold" not in (m["notes"] or "")

    info = c.get("/v1/models/shoe-kind").json()
    assert info["num_classes"] == 2
    assert all(x.get("threshold") is None for x in info["metrics"]), info["metrics"]

    held = fm_pngs[SNEAKER][40:50] + fm_pngs[SANDAL][40:50]
    truth = ["Sneaker"] * 10 + ["Sandal"] * 10
    results = predict(c, "shoe-kind", held)
    assert all(r["decision"] is None for r in results), results[0]
    top = [r["predictions"][0]["label"] for r in results]
    assert sum(t == g for t, g in zip(truth, top, strict=True)) >= 18, top
    assert all(len(r["predictions"]) == 2 for r in results)

    text = card(c, "shoe-kind")
    assert "not a yes/no question" in text and "no `decision`" in text


def test_a_negative_looking_label_makes_a_yes_no_model_as_before(
    teach_client: TestClient, fm_pngs: dict[int, list[bytes]]
) -> None:
    c = teach_client
    classes = {"santa": fm_pngs[SNEAKER][:TAUGHT], "not_santa": fm_pngs[BAG][:TAUGHT]}
    make_catalog(c, "santas", classes)
    result = teach(c, "santas", "my-santa")
    m = result["metrics"]
    assert m["positive_label"] == "santa" and 0 <= m["threshold"] <= 1, m
    assert "threshold = best F1" in m["notes"]
    # the summary says what the served decision did (metrics.precision/recall average both
    # classes, of the most probable label: read for the decision's before round 42)
    said = [s for s in result["summary"] if "served decision" in s]
    recall, precision = m["extra"]["decision_recall"], m["extra"]["decision_precision"]
    assert said == [
        f"At its threshold ({m['threshold']:.3g}) the served decision found "
        f"{round(recall * TAUGHT)} of {TAUGHT} held-out santa pictures (recall {recall:.0%}) "
        f"and was right in {round(recall * TAUGHT)} of the {round(recall * TAUGHT / precision)} "
        f"it flagged (precision {precision:.0%})"
    ], result["summary"]
    assert said[0] in card(c, "my-santa")

    results = predict(c, "my-santa", [fm_pngs[SNEAKER][45], fm_pngs[BAG][45]])
    yes, no = (r["decision"] for r in results)
    assert yes["positive_label"] == no["positive_label"] == "santa"
    assert yes["threshold"] == no["threshold"] == m["threshold"]
    assert (yes["label"], yes["is_positive"]) == ("santa", True), yes
    assert (no["label"], no["is_positive"]) == ("not_santa", False), no
    assert "A yes/no model: `santa` when its probability is at least" in card(c, "my-santa")


def test_a_requested_positive_label_makes_a_yes_no_model_as_before(
    teach_client: TestClient, fm_pngs: dict[int, list[bytes]]
) -> None:
    """positive_label asks for the decision; with the first label ("Sandal") this is also the
    bundle earlier versions wrote without being asked, and it is served the same way."""
    c = teach_client
    classes = {"Sneaker": fm_pngs[SNEAKER][:TAUGHT], "Sandal": fm_pngs[SANDAL][:TAUGHT]}
    make_catalog(c, "shoes", classes)
    m = teach(c, "shoes", "sandal-or-not", positive_label="Sandal")["metrics"]
    assert m["positive_label"] == "Sandal" and m["threshold"] is not None, m

    results = predict(c, "sandal-or-not", [fm_pngs[SANDAL][45], fm_pngs[SNEAKER][45]])
    sandal, sneaker = (r["decision"] for r in results)
    assert (sandal["label"], sandal["is_positive"]) == ("Sandal", True), sandal
    assert (sneaker["label"], sneaker["is_positive"]) == ("Sneaker", False), sneaker
    assert sneaker["positive_label"] == "Sandal"


@pytest.mark.slow
def test_cli_summarises_other_backbones_and_still_logs_real_refusals(
    tmp_path: Path, fm_pngs: dict[int, list[bytes]], capsys: pytest.CaptureFixture[str]
) -> None:
    """`python -m training teach` loads only its backbone: taught models on another one are one
    line, not an error each; a broken bundle is still an error. Two ordinary classes say so."""
    import subprocess

    service = tmp_path / "service"
    folder = tmp_path / "pictures"
    for label, cls in (("Sneaker", SNEAKER), ("Sandal", SANDAL)):
        (folder / label).mkdir(parents=True)
        for i, data in enumerate(fm_pngs[cls][:4]):
            (folder / label / f"{i}.png").write_bytes(data)
    base = ["--data-dir", str(folder), "--service-data", str(service)]
    base += ["--models-dir", str(ROOT / "models")]
    for name in ("shoes-a", "shoes-b"):  # two taught models on `products`
        assert teach_cli.main([*base, "--name", name]) == 0
    out = capsys.readouterr().out
    assert "two categories, no yes/no threshold" in out, out
    broken = service / "models" / "broken" / "1"
    broken.mkdir(parents=True)
    (broken / "metadata.json").write_text(json.dumps({"name": "broken"}))

    cmd = [sys.executable, "-m", "training", "teach", *base, "--name", "photo-shoes"]
    cmd += ["--backbone", "imagenet", "--positive-label", "Sneaker"]
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "shoes-a" not in run.stderr and "shoes-b" not in run.stderr, run.stderr
    assert "refusing bundle broken@1" in run.stderr, run.stderr
    assert run.stdout.count("not loading") == 1, run.stdout
    assert "not loading 2 taught model version(s) on other backbones (products 2)" in run.stdout
    assert "yes/no model: 'Sneaker' when its score >=" in run.stdout, run.stdout
