"""Taught bundles on disk under concurrency: publishes and deletes from many threads (the same
flock serialises processes) never reuse a version number and never fail on each other's
folders (both were 500s: a delete's rmdir of .staging under another delete's rename, and the
deleted-versions record rewritten by whichever delete came last)."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from app.bundle import Metrics, load_bundle
from app.teach.compose import (
    Room,
    TaughtSpec,
    check_model_name,
    delete_taught,
    delete_version,
    versions_on_disk,
    write_taught,
)
from app.teach.errors import TaughtModelLimit
from app.teach.head import Head
from tests.conftest import ROOT


@pytest.fixture(scope="module")
def spec_for() -> object:
    backbone = load_bundle(ROOT / "models" / "products")
    dim = backbone.metadata.outputs.embedding.dim  # type: ignore[union-attr]
    head = Head(weights=np.zeros((dim, 2)), bias=np.zeros(2), l2=0.0, iterations=0)

    def make(name: str) -> tuple[TaughtSpec, Head]:
        spec = TaughtSpec(
            name=name,
            labels=("a", "b"),
            backbone=backbone,
            catalog="c",
            n_items=4,
            metrics=Metrics(dataset="catalog c", split="cross-validation", n_samples=4),
            description="a test head (zero weights)",
            seed=0,
            training_time_s=0.0,
            notes="",
        )
        return spec, head

    return make


def _run_all(jobs: list[object]) -> list[BaseException]:
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(jobs))

    def run(job: object) -> None:
        barrier.wait()
        try:
            job()  # type: ignore[operator]
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(j,)) for j in jobs]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return errors


@pytest.mark.parametrize("round_", range(4))  # a race: several rounds to meet it
def test_concurrent_deletes_and_publishes(tmp_path: Path, spec_for, round_: int) -> None:  # type: ignore[no-untyped-def]
    root = tmp_path / "models"
    for name in ("a", "b", "c", "d"):
        for _ in range(3):
            write_taught(root, *spec_for(name), summary=())
    assert versions_on_disk(root, "a") == ["1", "2", "3"]
    errors = _run_all(
        [
            lambda: delete_version(root, "a", "3"),
            lambda: delete_version(root, "a", "1"),
            lambda: delete_taught(root, "b"),
            lambda: delete_taught(root, "c"),
            lambda: delete_version(root, "d", "2"),
            lambda: write_taught(root, *spec_for("d"), summary=()),
            lambda: write_taught(root, *spec_for("d"), summary=()),
        ]
    )
    assert errors == []
    assert versions_on_disk(root, "a") == ["2"]
    assert versions_on_disk(root, "b") == versions_on_disk(root, "c") == []
    assert versions_on_disk(root, "d") == ["1", "3", "4", "5"]
    # The highest deleted number of 'a' is 3, whichever delete wrote last.
    assert write_taught(root, *spec_for("a"), summary=())[1] == "4"
    assert write_taught(root, *spec_for("b"), summary=())[1] == "4"


@pytest.mark.parametrize("name", ["m2\n", "ok\n", "a\nb", " a", "a "])
def test_names_with_line_breaks_or_spaces_are_refused(name: str) -> None:
    # re's `$` matches before a final newline: 'm2\n' was served as a model.
    with pytest.raises(Exception, match="Invalid model name"):
        check_model_name(name)


def test_versions_and_models_kept_are_bounded_under_the_lock(tmp_path: Path, spec_for) -> None:  # type: ignore[no-untyped-def]
    root = tmp_path / "models"
    room = Room(max_models=2, max_versions=3)
    # Eight concurrent publishes of one name: exactly three fit, the others are refused.
    errors = _run_all([lambda: write_taught(root, *spec_for("a"), (), room) for _ in range(8)])
    assert versions_on_disk(root, "a") == ["1", "2", "3"]
    assert len(errors) == 5 and all(isinstance(e, TaughtModelLimit) for e in errors)
    assert "already has 3 versions" in str(errors[0]) and "DELETE /v1/models/a@1" in str(errors[0])
    write_taught(root, *spec_for("b"), (), room)
    with pytest.raises(TaughtModelLimit, match="2 taught models are kept"):
        write_taught(root, *spec_for("c"), (), room)
    # Deleting makes room again; version numbers are still never reused.
    delete_version(root, "a", "1")
    assert write_taught(root, *spec_for("a"), (), room)[1] == "4"
    delete_taught(root, "b")
    assert write_taught(root, *spec_for("c"), (), room)[1] == "1"
