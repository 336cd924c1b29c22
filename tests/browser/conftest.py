"""Browser-test fixtures: a real uvicorn server on real bundles, driven by Debian's Chromium.

Needs /usr/bin/chromium and the `playwright` package (scripts/setup-browser installs both);
without them every browser test is skipped with that hint. No browser is ever downloaded.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.conftest import DATA, ROOT, export_tiny, fit_tiny, free_port, require
from tests.live_server import running_process

CHROMIUM = Path(os.environ.get("IMGCLASS_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SETUP_HINT = "run scripts/setup-browser"
ARTIFACTS = ROOT / "test-artifacts" / "browser"
# Small enough that a real photo (skimage astronaut.png, 790 kB) is refused with a 413.
MAX_IMAGE_BYTES = 300_000
SERVER_START_TIMEOUT_S = 90

DESKTOP = {"viewport": {"width": 1280, "height": 900}}
PHONE = {
    "viewport": {"width": 390, "height": 844},
    "device_scale_factor": 2,
    "is_mobile": True,
    "has_touch": True,
}


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _export_tiny_seven(out: Path) -> None:
    """A second, binary bundle (`tiny-seven`: MNIST 'seven' vs the rest) so the page has two
    models to switch between and a yes/no verdict to show. Same recipe as `tiny_models_dir`."""
    from app.bundle import Metrics
    from training.data import load_mnist

    require(DATA / "mnist")
    data = load_mnist(DATA / "mnist")
    n = 4000
    x = data.x_train[:n].astype(np.float32)
    y = (data.y_train[:n] == 7).astype(np.int64)
    model = fit_tiny(x, y, 2, epochs=3)
    x_test = data.x_test[:1000].astype(np.float32)
    y_test = (data.y_test[:1000] == 7).astype(np.int64)
    pred = (model.predict(x_test, verbose=0)[:, 1] >= 0.5).astype(np.int64)
    tp = int(((pred == 1) & (y_test == 1)).sum())
    export_tiny(
        model,
        out,
        name="tiny-seven",
        labels=("not_seven", "seven"),
        parity_inputs=x_test[:64],
        description="Is it a handwritten seven? Tiny binary CNN on MNIST (browser-test fixture)",
        metrics=Metrics(
            dataset="MNIST",
            split="test",
            n_samples=1000,
            accuracy=float((pred == y_test).mean()),
            precision=tp / max(1, int((pred == 1).sum())),
            recall=tp / max(1, int((y_test == 1).sum())),
            threshold=0.5,
            positive_label="seven",
            evaluated_with="keras",
        ),
        data_source=f"MNIST train[:{n}], one-vs-rest on 7",
        epochs=3,
    )


@pytest.fixture(scope="session")
def browser_models_dir(tiny_models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One models folder: the `tiny` fixture bundle, every committed bundle in models/, and,
    when that makes fewer than two, a binary `tiny-seven` bundle exported here."""
    out = tmp_path_factory.mktemp("browser-models")
    from app.bundle import BundleError, load_bundle

    sources = [p.parent for p in sorted(tiny_models_dir.glob("*/metadata.json"))]
    for committed in sorted((ROOT / "models").glob("*/metadata.json")):
        try:
            load_bundle(committed.parent)  # a bundle being rewritten right now is left out
        except BundleError:
            continue
        sources.append(committed.parent)
    for src in sources:
        if not (out / src.name).exists():
            # Real files, not a symlinked folder: the registry refuses a bundle that resolves
            # outside its models folder. Hard links where the file system allows (no copy).
            shutil.copytree(src.resolve(), out / src.name, copy_function=_link_or_copy)
    if len(list(out.glob("*/metadata.json"))) < 2:
        _export_tiny_seven(out)
    return out


@pytest.fixture(scope="session")
def server(browser_models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The real service (uvicorn subprocess, background loading) on a free loopback port."""
    tmp = tmp_path_factory.mktemp("browser-server")
    port = free_port()
    env = {
        **os.environ,
        "IMGCLASS_MODELS_DIR": str(browser_models_dir),
        "IMGCLASS_DATA_DIR": str(tmp / "service-data"),
        "IMGCLASS_WARMUP_RUNS": "1",
        "IMGCLASS_MAX_IMAGE_BYTES": str(MAX_IMAGE_BYTES),
        "IMGCLASS_LOG_LEVEL": "WARNING",
        # Used once the `wardrobe` fixture has made that catalog (similarity feature).
        "IMGCLASS_DEFAULT_CATALOGS": '{"tiny": "wardrobe"}',
    }
    cmd = [
        sys.executable, "-m", "uvicorn", "app.main:create_app", "--factory",
        "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    with running_process(
        cmd, f"{base}/readyz", tmp / "server.log", SERVER_START_TIMEOUT_S, cwd=ROOT, env=env
    ):
        yield base


@pytest.fixture(scope="session")
def api(server: str) -> Iterator[httpx.Client]:
    """Plain HTTP client on the same server: the ground truth the page must agree with."""
    with httpx.Client(base_url=server, timeout=30) as c:
        yield c


@pytest.fixture(scope="session")
def models(api: httpx.Client) -> list[dict[str, Any]]:
    body = api.get("/v1/models").json()
    assert len(body["models"]) >= 2, body
    return list(body["models"])


@pytest.fixture(scope="session")
def wardrobe(api: httpx.Client, photos: Path) -> str | None:
    """A catalog `wardrobe` for model `tiny` (the tiny model's default catalog), holding
    Fashion-MNIST photos 01-19; None when the server has no catalogs API."""
    from training.data import FASHION_MNIST_CLASSES

    if api.get("/v1/catalogs").status_code == 404:
        return None
    r = api.post(
        "/v1/catalogs",
        json={"name": "wardrobe", "model": "tiny", "description": "Fashion-MNIST samples"},
    )
    assert r.status_code == 201, r.text
    paths = sorted((photos / "foolbox").glob("fashionMNIST_*.png"))[1:]
    labels = [FASHION_MNIST_CLASSES[int(p.stem.rsplit("_", 1)[1])] for p in paths]
    files = [("file", (p.name, p.read_bytes(), "image/png")) for p in paths]
    r = api.post("/v1/catalogs/wardrobe/items", files=files, data={"label": labels})
    assert r.status_code == 201, r.text
    return "wardrobe"


@pytest.fixture(scope="session", autouse=True)
def _require_browser() -> None:
    """Skip before anything is trained or started when the browser stack is missing."""
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} is missing; {SETUP_HINT}")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.skip(f"the playwright package is missing; {SETUP_HINT}")


@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    """Chromium, closed when the browser tests are done. Not session-wide: while Playwright's
    sync API is open, its event loop counts as running in the main thread, and every later
    test that calls asyncio.run() (tests/app, in another order) fails with "cannot be called
    from a running event loop"."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


class PageErrors(list[str]):
    """Uncaught exceptions and console errors seen by a page; a test fails if any occur."""


def _open(browser: Any, server: str, **context_args: Any) -> tuple[Any, Any, PageErrors]:
    # Playwright's wait_for_function compiles its predicate with eval, which the page's
    # Content-Security-Policy forbids (app/security_headers.py), so the harness lifts the
    # policy; tests/browser/test_csp.py drives the page with it enforced.
    context_args.setdefault("bypass_csp", True)
    context = browser.new_context(base_url=server, **context_args)
    context.set_default_timeout(15_000)
    page = context.new_page()
    errors = PageErrors()
    page.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
    # Turn on file-chooser interception now: when expect_file_chooser() turns it on itself, a
    # chooser opened by a key press can beat it and never be reported (a Playwright race).
    page.on("filechooser", lambda chooser: None)

    def on_console(msg: Any) -> None:
        # Failed requests for expected 4xx answers are logged by Chromium as console errors.
        if msg.type == "error" and "Failed to load resource" not in msg.text:
            errors.append(f"console: {msg.text}")

    page.on("console", on_console)
    return context, page, errors


@pytest.fixture
def open_page(browser: Any, server: str) -> Iterator[Any]:
    """open_page(**context_args) -> a page at `/` with the model list loaded."""
    opened: list[tuple[Any, PageErrors]] = []

    def _factory(**context_args: Any) -> Any:
        args = {**DESKTOP, **context_args}
        context, page, errors = _open(browser, server, **args)
        opened.append((context, errors))
        page.goto("/")
        page.wait_for_selector("#model-select:not([disabled])")
        return page

    yield _factory
    problems = [e for _, errors in opened for e in errors]
    for context, _ in opened:
        context.close()
    assert not problems, problems


@pytest.fixture(scope="session")
def photos() -> Path:
    return require(DATA / "photos")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.browser)


def fill_teach_form(page: Any, model: str, files: dict[str, list[str]]) -> None:
    """The Teach section: model name, the products backbone, one class per label (the page
    starts with two) with its picture files."""
    page.locator("#teach").scroll_into_view_if_needed()
    page.wait_for_function("document.querySelectorAll('#teach-backbone option').length > 0")
    page.fill("#teach-name", model)
    page.select_option("#teach-backbone", "products")
    classes = page.locator("#teach .teach-class")
    for i, (label, paths) in enumerate(files.items()):
        classes.nth(i).locator(".teach-class-name").fill(label)
        classes.nth(i).locator("input[type=file]").set_input_files(paths)
