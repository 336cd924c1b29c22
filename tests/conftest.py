"""Shared fixtures: real tiny bundles exported from real Keras models, real photos, a live app."""

from __future__ import annotations

import fcntl
import functools
import hashlib
import importlib.metadata
import os
import shutil
import socket
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.cores import cpu_count
from app.main import create_app
from app.settings import Settings

pytest_plugins = ["tests.milvus_server"]

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(
    os.environ.get("IMGCLASS_TRAINING_DATA_DIR") or os.environ.get("IMGCLASS_DATA") or ROOT / "data"
)
FETCH_HINT = "run scripts/fetch-data (the README's test command does it)"

# The suite starts about a hundred Python processes (xdist workers, real servers, scripts), each
# importing app/ (and pytest re-rewriting every test module): without bytecode caches each of
# them compiles those sources again. Cache them (in the git-ignored __pycache__ folders) even
# where PYTHONDONTWRITEBYTECODE is set; child processes read the caches without writing.
sys.dont_write_bytecode = False
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
# One pytest process starts hundreds of apps: freezing the heap at each start-up would keep the
# reference cycles of every app torn down since (tests/app/test_heap.py turns it on).
os.environ.setdefault("IMGCLASS_GC_FREEZE", "false")

FAST_SUBSET = "not slow and not browser and not docker"


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """The fast subset (`-m "not slow and not browser and not docker"`) runs on every core
    with pytest-xdist (on one 2-core machine, 2026-12-04: 98-106 s on 2 workers, see README);
    `-n 0` runs it in one process, `-n N` chooses. Other selections are left as given: the
    browser, Docker and timing-heavy slow tests expect the machine to themselves."""
    if (
        config.pluginmanager.hasplugin("xdist")
        and config.getoption("numprocesses", None) is None
        and not hasattr(config, "workerinput")
        and not config.getoption("collectonly")
        and " ".join(str(config.getoption("markexpr") or "").split()) == FAST_SUBSET
        # the cores this process may use (affinity, cgroup quota), not the host's count
        and (n := min(cpu_count(), 4)) > 1
    ):
        config.option.numprocesses = n
        config.option.dist = "load"
        config.option.tx = ["popen"] * n


TINY_SEED = 1234
TINY_TRAIN_N = 3000


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def require(path: Path) -> Path:
    if not path.exists():
        pytest.fail(f"{path} is missing; {FETCH_HINT}")
    return path


@pytest.fixture(scope="session")
def photos_dir() -> Path:
    """Real photographs shipped inside PyPI packages (foolbox, scikit-image, ...)."""
    return require(DATA / "photos")


@pytest.fixture(scope="session")
def fashion_mnist():  # type: ignore[no-untyped-def]
    return _load_fashion_mnist()


@functools.cache  # the fixture and the tiny bundle's build read it once per process
def _load_fashion_mnist():  # type: ignore[no-untyped-def]
    from training.data import load_fashion_mnist

    require(DATA / "fashion-mnist")
    return load_fashion_mnist(DATA / "fashion-mnist")


def fit_tiny(x: np.ndarray, y: np.ndarray, num_classes: int, epochs: int):  # type: ignore[no-untyped-def]
    """The fixture recipe: `tiny_cnn`, seeded, Adam 2e-3, a few epochs on a few thousand
    images (seconds on a CPU)."""
    import keras

    from training.architectures import create_model

    keras.utils.set_random_seed(TINY_SEED)
    model = create_model("tiny_cnn", (28, 28, 1), num_classes)
    model.compile(
        optimizer=keras.optimizers.Adam(2e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    model.fit(x, y, epochs=epochs, batch_size=64, verbose=0)
    return model


def export_tiny(  # type: ignore[no-untyped-def]
    model,
    out: Path,
    *,
    name: str,
    labels: Sequence[str],
    parity_inputs: np.ndarray,
    description: str,
    metrics,
    data_source: str,
    epochs: int,
) -> None:
    """Export a `fit_tiny` model as a 28x28 gray bundle through training.export."""
    from app.bundle import InputSpec
    from training.export import export_bundle

    export_bundle(
        model,
        out_dir=out,
        name=name,
        labels=labels,
        input_spec=InputSpec(height=28, width=28, channels=1, color="gray"),
        parity_inputs=parity_inputs,
        description=description,
        metrics=[metrics],
        provenance={
            "data_source": data_source,
            "architecture": "tiny_cnn",
            "epochs": epochs,
            "seed": TINY_SEED,
        },
    )


@pytest.fixture(scope="session")
def tiny_models_dir() -> Path:
    """A models/ folder holding one real bundle, `tiny`: a small CNN trained for a few seconds
    on 3,000 Fashion-MNIST training images and exported through training.export.

    Built once for what builds it (`_tiny_key`: the training and bundle sources, this file, the
    library versions) and kept under .cache/ (git-ignored): importing TensorFlow, training and
    exporting took 9-11 s of every run's first minute, one worker building while the others
    waited. A fresh checkout (CI) builds it. Processes share it under a lock; the first to take
    it builds into a folder of its own and renames it into place. Tests treat it as
    read-only."""
    folder = TINY_CACHE / _tiny_key()
    TINY_CACHE.mkdir(parents=True, exist_ok=True)
    with open(TINY_CACHE / "build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not (folder / "tiny" / "metadata.json").exists():
            # built from other sources, or left by a build that was killed (none runs now)
            for stale in [*TINY_CACHE.glob("tiny-*"), *TINY_CACHE.glob("building-*")]:
                shutil.rmtree(stale, ignore_errors=True)
            building = Path(tempfile.mkdtemp(dir=TINY_CACHE, prefix="building-"))
            _build_tiny(building)
            os.replace(building, folder)
    return folder


TINY_CACHE = ROOT / ".cache" / "test-bundles"


def _tiny_key() -> str:
    """What the tiny bundle is built from: the sources that train, export and describe it and
    the versions of the libraries that run them."""
    digest = hashlib.sha256()
    sources = [
        Path(__file__),
        *(ROOT / "training").rglob("*.py"),
        *(ROOT / "app").glob("bundle*.py"),
        ROOT / "app" / "card.py",
        ROOT / "app" / "metrics.py",
    ]
    for path in sorted(sources):
        digest.update(path.relative_to(ROOT).as_posix().encode() + b"\0" + path.read_bytes())
    libraries = ("keras", "tensorflow", "tf2onnx", "onnx", "onnxruntime", "numpy")
    versions = {
        f"{dist.metadata['Name'].lower()}=={dist.version}"
        for dist in importlib.metadata.distributions()
        if dist.metadata["Name"].lower().split("-")[0] in libraries  # tensorflow-cpu too
    }
    digest.update("\0".join(sorted(versions)).encode())
    return f"tiny-{digest.hexdigest()[:16]}"


def _build_tiny(out: Path) -> None:
    from app.bundle import Metrics

    data = _load_fashion_mnist()
    x = data.x_train[:TINY_TRAIN_N].astype(np.float32)
    model = fit_tiny(x, data.y_train[:TINY_TRAIN_N], len(data.class_names), epochs=4)
    x_test = data.x_test[:1000].astype(np.float32)
    _, acc = model.evaluate(x_test, data.y_test[:1000], verbose=0)
    export_tiny(
        model,
        out,
        name="tiny",
        labels=data.class_names,
        parity_inputs=x_test[:64],
        description="Tiny test CNN on Fashion-MNIST (test fixture)",
        metrics=Metrics(
            dataset="Fashion-MNIST",
            split="test[:1000]",
            n_samples=1000,
            accuracy=float(acc),
            evaluated_with="keras",
        ),
        data_source=f"Fashion-MNIST train[:{TINY_TRAIN_N}]",
        epochs=4,
    )


def make_settings(models_dir: Path, tmp: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "models_dir": models_dir,
        "data_dir": tmp / "service-data",
        "load_in_background": False,
        "warmup_runs": 1,
        "access_log": False,
        # Starlette's TestClient sends Host: testserver.
        "allowed_hosts": ["testserver", "localhost", "127.0.0.1"],
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def client(tiny_models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """A live app serving the tiny bundle through the real onnxruntime session."""
    settings = make_settings(tiny_models_dir, tmp_path_factory.mktemp("svc"))
    with TestClient(create_app(settings)) as c:
        yield c
