"""The documentation's examples, run as written against a real server, so the docs cannot rot.

Every fenced ```bash / ```sh / ```python block of README.md and docs/*.md is either run here or
listed in SKIPPED with the reason it cannot be (Docker, a GPU, an hour of training, ...). One
real server (`python -m app`: the shipped bundles in models/, a temporary data folder, a free
loopback port in 8900-8999) answers them all; the only rewrite is its address (`localhost:8000`
and `127.0.0.1:8000` -> the test's port). Blocks run from the repository root, in document
order per file, one server and one data folder for all files (their catalog and model names
differ; the shipped `products` catalog that the README builds is reused by docs/similarity.md).
Each bash block runs in one bash process, with the shell variables the file's earlier blocks
set (`KEY=...`), as in the reader's terminal; the examples' own commands that use the data
folder (`scripts/build-products-catalog`, `python -m training teach`) see the server's
`IMGCLASS_DATA_DIR`, as under `scripts/serve`.

Each command must exit 0; every HTTP answer curl gets must be 2xx unless ERROR_STATUS says
which error the docs show; a bare `curl` must print JSON; CHECKS holds what the text around
an example says its answer is. A SKIPPED, CHECKS or ERROR_STATUS key that no longer matches an
example fails the fast test below, so the lists cannot go stale; a new block that is neither
run nor listed is run, and a curl in an untagged fence fails. Needs `scripts/fetch-data` (the
photos, Fashion-MNIST and emoji art the examples send). Each block's script and raw output are
left in the test's tmp_path.
"""

from __future__ import annotations

import ast
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT
from tests.live_server import running_process

DOC_FILES = [
    "README.md",
    *sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").glob("*.md")),
]
RUN_LANGS = frozenset({"bash", "sh", "shell", "python"})
PORTS = range(8900, 9000)
DOC_HOSTS = ("localhost:8000", "127.0.0.1:8000")
BLOCK_TIMEOUT_S = 150

# (file, a substring of the block) -> why the test cannot run it. Each key must match exactly
# one runnable block (test_skip_and_check_keys_match_the_docs).
SKIPPED: dict[tuple[str, str], str] = {
    ("README.md", "scripts/serve   # install"): (
        "installs packages and starts a server on the fixed port 8000 (scripts/serve), and runs "
        "the whole suite, this test included (scripts/test); the test's own server stands in"
    ),
    ("README.md", "training/configs/products.yaml"): (
        "trains with TensorFlow for 30+ minutes and overwrites models/products"
    ),
    ("README.md", "training/configs/santa.yaml"): (
        "needs the reader's own photo folder data/santa (no Santa photos are reachable offline) "
        "and overwrites models/santa"
    ),
    ("README.md", "docker compose up -d --build"): "needs a Docker engine (scripts/ci-docker)",
    ("docs/deployment.md", "docker compose build"): "needs a Docker engine (scripts/ci-docker)",
    ("docs/deployment.md", "docker compose logs -f api"): (
        "needs a Docker engine; its curl is the same predict the README's API tour runs"
    ),
    ("docs/deployment.md", "docker run -d --name imgclass"): "needs a Docker engine",
    ("docs/deployment.md", "--profile gpu"): "needs Docker, an NVIDIA GPU and CUDA 13",
    ("docs/deployment.md", "--profile milvus"): "needs Docker and a Milvus server",
    ("docs/deployment.md", "--profile monitoring"): "needs Docker (Prometheus image)",
    ("docs/transfer-learning.md", "training/configs/santa.yaml"): (
        "needs the reader's own photo folder data/santa and overwrites models/santa"
    ),
}


# (file, a substring of one command) -> the error status the docs show for it (none at present:
# every example shows a success).
ERROR_STATUS: dict[tuple[str, str], int] = {}


@dataclass
class Ran:
    """One command's result: exit status, stdout, stderr and the HTTP statuses curl got."""

    command: str
    rc: int
    out: str
    err: str
    http: list[int] = field(default_factory=list)

    def json(self) -> Any:
        return json.loads(self.out)


def _top(ran: Ran, i: int = 0) -> str:
    return str(ran.json()["results"][i]["predictions"][0]["label"])


def _lines(n: int) -> Callable[[Ran], None]:
    def check(ran: Ran) -> None:
        lines = ran.out.splitlines()
        assert len(lines) == n and lines[0] == "{", ran.out

    return check


def _neighbors(k: int, label: str | None = None) -> Callable[[Ran], None]:
    def check(ran: Ran) -> None:
        body = ran.json()
        assert len(body["neighbors"]) == k, body
        if label:
            assert {n["label"] for n in body["neighbors"]} == {label}, body

    return check


def _similar(k: int) -> Callable[[Ran], None]:
    def check(ran: Ran) -> None:
        result = ran.json()["results"][0]
        assert len(result["similar"]) == k and result["predictions"], result

    return check


def _added(n: int) -> Callable[[Ran], None]:
    def check(ran: Ran) -> None:
        assert ran.http == [201] and ran.json()["added"] == n, ran.out

    return check


def _created(name: str) -> Callable[[Ran], None]:
    def check(ran: Ran) -> None:
        assert ran.http == [201] and ran.json()["name"] == name, ran.out

    return check


def _readme_products(ran: Ran) -> None:
    body = ran.json()
    assert body["name"] == "products" and body["labels"][9] == "Ankle boot", body


def _readme_top3(ran: Ran) -> None:  # the abridged response below it: Ankle boot, top_k 3
    body = ran.json()
    assert body["top_k"] == 3 and len(body["results"][0]["predictions"]) == 3, body
    assert _top(ran) == "Ankle boot", body


def _readme_batch(ran: Ran) -> None:
    body = ran.json()
    assert [r["filename"] for r in body["results"]] == [
        "fashionMNIST_01_2.png",
        "fashionMNIST_09_7.png",
    ], body
    assert [_top(ran, 0), _top(ran, 1)] == ["Pullover", "Sneaker"], body


def _readme_catalog_built(ran: Ran) -> None:
    assert re.search(r"catalog 'products': 10,000 items", ran.out), ran.out


def _skip_duplicates(ran: Ran) -> None:  # the answer shown under it
    body = ran.json()
    assert ran.http == [201], ran.out
    assert body["added"] == 1 and body["duplicates_skipped"] == 1, body
    dup = body["duplicates"][0]
    assert dup["index"] == 0 and dup["label"] == "Sneaker" and dup["score"] >= 0.99999, body


def _item_search(ran: Ran) -> None:
    _neighbors(5, "Sneaker")(ran)
    assert ran.json()["query_item_id"] == "fmnist-test-00042", ran.out


def _triton_readme(ran: Ran) -> None:  # "['0.666760:243:bull mastiff', ...]"
    cells = ast.literal_eval(ran.out.strip())  # a printed list of str
    assert len(cells) == 5 and cells[0].split(":", 2)[1:] == ["243", "bull mastiff"], ran.out


def _triton_operations(ran: Ran) -> None:
    lines = ran.out.splitlines()
    assert len(lines) == 5 and lines[0].split(" ", 1)[1] == "bull mastiff", ran.out


def _teach_zip(ran: Ran) -> None:
    body = ran.json()
    # 200, not 201: a zip is committed in batches, so part of it may be in either way
    assert ran.http == [200] and body["added"] == {"bird": 20, "fruit": 18, "vehicle": 50}, body
    assert body["skipped"] == [], body


def _teach_train(ran: Ran) -> None:  # "202 + Location of the job"
    head = ran.out.lower()
    assert ran.http == [202] and re.search(r"^location: /v1/jobs/\S+", head, re.M), ran.out


def _teach_job(ran: Ran) -> None:
    job = ran.json()["jobs"][0]
    assert job["model"] == "my-kinds" and job["status"] == "succeeded", job


def _teach_predict(ran: Ran) -> None:
    _similar(5)(ran)
    assert _top(ran) == "bird", ran.out  # an eagle drawn in a style it was not taught


def _teach_resend(ran: Ran) -> None:  # nothing added: 200, every picture a copy
    body = ran.json()
    assert ran.http == [200] and sum(body["added"].values()) == 0, body
    assert body["duplicates_skipped"] == 88 == len(body["duplicates"]), body


def _teach_cli(ran: Ran) -> None:
    assert "taught bird-or-not v1 -> " in ran.out and "yes/no model: 'bird'" in ran.out, ran.out


def _santa_decision(ran: Ran) -> None:
    decision = ran.json()
    assert decision["positive_label"] and isinstance(decision["is_positive"], bool), decision


# (file, a substring of one command; for a python block, of the block) -> what the text around
# it says the answer is, beyond "exit 0, 2xx, JSON".
CHECKS: dict[tuple[str, str], Callable[[Ran], None]] = {
    ("README.md", "v1/models | python3 -m json.tool | head -40"): _lines(40),
    ("README.md", "curl -s localhost:8000/v1/models/products\n"): _readme_products,
    ("README.md", "predict?top_k=3"): _readme_top3,
    ("README.md", "-F file=@data/photos/foolbox/fashionMNIST_01_2.png"): _readme_batch,
    ("README.md", "--data-binary @data/photos/foolbox/fashionMNIST_09_7.png"): (
        lambda ran: None if _top(ran) == "Sneaker" else pytest.fail(ran.out)
    ),
    ("README.md", "openapi.json | python3 -m json.tool | head -20"): _lines(20),
    ("README.md", "scripts/build-products-catalog "): _readme_catalog_built,
    ("README.md", "products/search?k=10"): _neighbors(10),
    ("README.md", "predict?similar=10"): _similar(10),
    ("README.md", '"name": "photos"'): _created("photos"),
    ("README.md", "label=cat"): _added(1),
    ("README.md", "tritonclient"): _triton_readme,
    ("docs/operations.md", "tritonclient"): _triton_operations,
    ("docs/similarity.md", '"name": "shoes"'): _created("shoes"),
    ("docs/similarity.md", "label=Sandal"): _added(2),
    ("docs/similarity.md", "search?k=5"): _neighbors(5),
    ("docs/similarity.md", '"item_id": "fmnist-test-00042"'): _item_search,
    ("docs/similarity.md", "predict?similar=5"): _similar(5),
    ("docs/similarity.md", "skip_duplicates=true"): _skip_duplicates,
    ("docs/teach.md", '"name":"emoji-kinds"'): _created("emoji-kinds"),
    ("docs/teach.md", "-F label=bird "): _added(2),
    ("docs/teach.md", "-F label=fruit "): _added(2),
    ("docs/teach.md", "emoji-kinds/items:zip\n"): _teach_zip,
    ("docs/teach.md", "curl -i"): _teach_train,
    ("docs/teach.md", "curl 'localhost:8000/v1/jobs?model=my-kinds&limit=1'"): _teach_job,
    ("docs/teach.md", "my-kinds/predict?similar=5"): _teach_predict,
    ("docs/teach.md", "items:zip?skip_duplicates=true"): _teach_resend,
    ("docs/teach.md", "--name bird-or-not"): _teach_cli,
    ("docs/transfer-learning.md", "santa/predict"): _santa_decision,
}


@dataclass(frozen=True)
class Block:
    file: str
    line: int  # of the opening fence
    lang: str
    text: str

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"

    def commands(self) -> list[str]:
        """Logical lines: `\\` continuations joined, blank and comment-only lines dropped."""
        out: list[str] = []
        current = ""
        for line in self.text.splitlines():
            current += line + "\n"
            if line.endswith("\\"):
                continue
            if current.strip() and not current.lstrip().startswith("#"):
                out.append(current)
            current = ""
        if current.strip():
            out.append(current)
        return out


FENCE = re.compile(
    r"^(?P<indent>[ \t]*)```(?P<lang>[^\s`]*)[^\n]*\n(?P<body>.*?)^[ \t]*```", re.M | re.S
)


def doc_blocks(files: list[str] = DOC_FILES) -> list[Block]:
    """Every fenced block of a language we run, in document order."""
    blocks = []
    for name in files:
        text = (ROOT / name).read_text()
        for m in FENCE.finditer(text):
            lang = m.group("lang").lower()
            if lang in RUN_LANGS:
                line = text.count("\n", 0, m.start()) + 1
                blocks.append(Block(name, line, lang, m.group("body")))
    return blocks


def skip_reason(block: Block) -> str | None:
    for (name, needle), reason in SKIPPED.items():
        if name == block.file and needle in block.text:
            return reason
    return None


def check_for(block: Block, command: str) -> Callable[[Ran], None] | None:
    for (name, needle), check in CHECKS.items():
        if name == block.file and needle in (block.text if block.lang == "python" else command):
            return check
    return None


def test_skip_and_check_keys_match_the_docs() -> None:
    """Each SKIPPED key names exactly one block and each CHECKS key exactly one run command (or
    python block): a key whose example was edited away or reworded fails here."""
    blocks = doc_blocks()
    assert {b.file for b in blocks} >= {"README.md", "docs/similarity.md", "docs/teach.md"}
    for (name, needle), reason in SKIPPED.items():
        hits = [b.where for b in blocks if b.file == name and needle in b.text]
        assert len(hits) == 1, f"SKIPPED {(name, needle)} ({reason}) matches {hits or 'no block'}"
    run = [b for b in blocks if skip_reason(b) is None]
    for name, needle in [*CHECKS, *ERROR_STATUS]:
        hits = [
            f"{b.where}: {c.strip()[:60]}"
            for b in run
            if b.file == name
            for c in ([b.text] if b.lang == "python" else b.commands())
            if needle in c
        ]
        assert len(hits) == 1, f"key {(name, needle)} matches {hits or 'no run example'}"


def test_no_server_example_hides_in_an_untagged_block() -> None:
    """A curl command in a fence without a language (or another one) would not be run here:
    tag it ```bash (and run it, or list it in SKIPPED)."""
    hidden = []
    for name in DOC_FILES:
        text = (ROOT / name).read_text()
        for m in FENCE.finditer(text):
            if m.group("lang").lower() not in RUN_LANGS:
                hidden += [
                    f"{name}:{text.count(chr(10), 0, m.start()) + 1}: {line.strip()}"
                    for line in m.group("body").splitlines()
                    if re.match(r"\s*(curl|wget|http) ", line)
                ]
    assert not hidden, hidden


def test_blocks_split_into_commands() -> None:
    block = Block("x.md", 1, "bash", "# c\nA=1   # set\n\ncurl -s a \\\n  -F b\n# d\necho $A\n")
    assert block.commands() == ["A=1   # set\n", "curl -s a \\\n  -F b\n", "echo $A\n"]


def rewrite_address(text: str, port: int) -> str:
    for host in DOC_HOSTS:
        text = text.replace(host, f"{host.rsplit(':', 1)[0]}:{port}")
    return text


def free_doc_port() -> int:
    # Under pytest-xdist each worker starts its own doc server: each looks from its own place in
    # the range, so two never pick the same free port and race to bind it.
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    start = int(worker) * 10 % len(PORTS) if worker.isdigit() else 0
    for port in [*PORTS[start:], *PORTS[:start]]:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    pytest.fail(f"no free port in {PORTS}")


@dataclass(frozen=True)
class Server:
    port: int
    env: dict[str, str]
    log: Path


@pytest.fixture(scope="module")
def doc_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("docs-examples")
    port = free_doc_port()
    env = {
        **os.environ,
        "IMGCLASS_HOST": "127.0.0.1",
        "IMGCLASS_PORT": str(port),
        "IMGCLASS_MODELS_DIR": str(ROOT / "models"),
        "IMGCLASS_DATA_DIR": str(tmp / "service-data"),
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    log = tmp / "server.log"
    cmd = [sys.executable, "-m", "app"]
    ready = f"http://127.0.0.1:{port}/readyz"
    with running_process(cmd, ready, log, 120, cwd=ROOT, env=env):
        yield Server(port, env, log)


MARK = "@@doc-example"
CURL_WRAPPER = (
    # Record the HTTP status of every curl call on stderr; stdout stays what the reader sees.
    "curl() { command curl -w '%{stderr}\\n" + MARK + ' http %{http_code}\\n\' "$@"; }\n'
)


ASSIGNED = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)=", re.M)


def run_bash(block: Block, server: Server, workdir: Path) -> list[Ran]:
    """Run a block's commands in one bash process, each followed by markers that split its
    stdout/stderr and record its exit status. Shell variables the file's earlier blocks set
    (`KEY=...`) are carried over, as in the reader's terminal."""
    commands = block.commands()
    state = workdir / "shell-variables"
    script = [CURL_WRAPPER, f"[ -f {state} ] && . {state}\n"]
    for i, command in enumerate(commands):
        script.append(f"printf '\\n{MARK} start {i}\\n'; printf '\\n{MARK} start {i}\\n' >&2\n")
        script.append(rewrite_address(command, server.port))
        script.append(f"printf '\\n{MARK} rc {i} %d\\n' $?\n")
    names = sorted({n for c in commands for n in ASSIGNED.findall(c)})
    if names:
        script.append(f"declare -p {' '.join(names)} >> {state} 2>/dev/null\n")
    path = workdir / f"{Path(block.file).stem}-{block.line}.sh"
    path.write_text("".join(script))
    proc = subprocess.run(
        ["bash", str(path)],
        cwd=ROOT,
        env=server.env,
        capture_output=True,
        text=True,
        timeout=BLOCK_TIMEOUT_S,
    )
    for suffix, text in (("out", proc.stdout), ("err", proc.stderr)):  # for a failure's reader
        path.with_suffix(f".{suffix}").write_text(text)
    outs = _split(proc.stdout, len(commands))
    errs = _split(proc.stderr, len(commands))
    rcs = {int(i): int(rc) for i, rc in re.findall(rf"^{MARK} rc (\d+) (\d+)$", proc.stdout, re.M)}
    results = []
    for i, command in enumerate(commands):
        err = errs[i]
        http = [int(code) for code in re.findall(rf"^{MARK} http (\d+)$", err, re.M)]
        err = re.sub(rf"\n?{MARK} http \d+\n", "\n", err).strip("\n")
        rc = rcs.get(i, -1)  # -1: never finished (bash stopped at a syntax error)
        results.append(Ran(command, rc, outs[i], err, http))
    if len(rcs) < len(commands):
        pytest.fail(
            f"{block.where}: bash stopped early ({proc.returncode}):\n{proc.stderr[-2000:]}"
        )
    return results


def _split(stream: str, n: int) -> list[str]:
    parts = [""] * n
    for m in re.finditer(
        rf"^{MARK} start (\d+)\n(.*?)(?=^{MARK} (?:start|rc) |\Z)", stream, re.M | re.S
    ):
        text = m.group(2)
        parts[int(m.group(1))] = text[:-1] if text.endswith("\n") else text
    return parts


def run_python(block: Block, server: Server, workdir: Path) -> list[Ran]:
    path = workdir / f"{Path(block.file).stem}-{block.line}.py"
    path.write_text(rewrite_address(block.text, server.port))
    proc = subprocess.run(
        [sys.executable, str(path)],
        cwd=ROOT,
        env=server.env,
        capture_output=True,
        text=True,
        timeout=BLOCK_TIMEOUT_S,
    )
    return [Ran(block.text, proc.returncode, proc.stdout, proc.stderr)]


def verify(block: Block, ran: Ran) -> None:
    what = (
        f"{block.where}: {ran.command.strip()}\nrc {ran.rc}, http {ran.http}\n"
        f"stdout: {ran.out[-1500:]}\nstderr: {ran.err[-1500:]}"
    )
    assert ran.rc == 0, what
    error = next(
        (s for (n, needle), s in ERROR_STATUS.items() if n == block.file and needle in ran.command),
        None,
    )
    if error is None:
        assert all(200 <= code < 300 for code in ran.http), what
    else:
        assert ran.http == [error], what
    bare_curl = re.match(r"\s*curl\s", ran.command) and "|" not in ran.command.split("#")[0]
    if bare_curl and " -i " not in ran.command and ran.out.strip():
        try:
            ran.json()
        except ValueError:
            pytest.fail(f"not JSON: {what}")
    check = check_for(block, ran.command)
    if check is not None:
        try:
            check(ran)
        except (AssertionError, KeyError, IndexError, TypeError, ValueError, SyntaxError) as exc:
            pytest.fail(f"{what}\n{type(exc).__name__}: {exc}")


def files_with_examples() -> list[str]:
    return sorted({b.file for b in doc_blocks() if skip_reason(b) is None}, key=DOC_FILES.index)


@pytest.mark.slow
@pytest.mark.parametrize("doc", files_with_examples())
def test_doc_examples_run_as_written(doc: str, doc_server: Server, tmp_path: Path) -> None:
    started = time.monotonic()
    blocks = [b for b in doc_blocks([doc]) if skip_reason(b) is None]
    assert blocks
    failures = []
    for block in blocks:
        runner = run_python if block.lang == "python" else run_bash
        try:
            for ran in runner(block, doc_server, tmp_path):
                try:
                    verify(block, ran)
                except (AssertionError, pytest.fail.Exception) as exc:
                    failures.append(str(exc))
        except pytest.fail.Exception as exc:
            failures.append(str(exc))
    assert not failures, "\n\n".join(failures)
    print(f"{doc}: {len(blocks)} blocks in {time.monotonic() - started:.1f} s")
