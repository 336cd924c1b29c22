"""`python -m app` with several workers (app.serve): the parent listens and deals connections
to the workers in turn, a dead worker is replaced, SIGTERM stops everything, a port in use
fails at once. Real processes, real sockets."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import psutil
import pytest

from app.cores import cpu_count
from app.worker_process import WORKER_FLAG
from tests.conftest import DATA, ROOT, free_port
from tests.live_server import LiveServer, grpc_env, live_server

pytestmark = pytest.mark.slow


def _env(workers: int) -> dict[str, str]:
    return {
        "IMGCLASS_MODELS_DIR": str(ROOT / "models"),
        "IMGCLASS_ENABLED_MODELS": '["digits"]',
        "IMGCLASS_LOAD_IN_BACKGROUND": "false",
        "IMGCLASS_WORKERS": str(workers),
    }


def _server_pid(port: int) -> int:
    """The supervising parent: the `python -m app` process that listens on `port`."""
    for proc in psutil.process_iter(["cmdline"]):
        if (proc.info["cmdline"] or [])[-2:] == ["-m", "app"] and any(
            c.laddr.port == port for c in _listening(proc)
        ):
            return proc.pid
    raise AssertionError(f"no `python -m app` parent listening on {port}")


def _workers(parent: int) -> list[psutil.Process]:
    try:
        kids = psutil.Process(parent).children()
    except psutil.NoSuchProcess:
        return []
    return [k for k in kids if WORKER_FLAG in k.cmdline()]


def _listening(proc: psutil.Process) -> list[object]:
    return [c for c in proc.net_connections("tcp") if c.status == psutil.CONN_LISTEN]


def _established(proc: psutil.Process, port: int) -> int:
    conns = proc.net_connections("tcp")
    return sum(1 for c in conns if c.status == psutil.CONN_ESTABLISHED and c.laddr.port == port)


def _split(port: int, parent: int, n: int) -> list[int]:
    """Open `n` keep-alive connections, each answered; how many each worker holds."""
    socks = []
    try:
        for _ in range(n):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
            assert s.recv(4096).startswith(b"HTTP/1.1 200")
            socks.append(s)
        return sorted(_established(w, port) for w in _workers(parent))
    finally:
        for s in socks:
            s.close()


def _wait(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server(tmp_path_factory.mktemp("serve"), _env(2), entry="app") as server:
        yield server


def test_the_parent_listens_and_deals_connections_evenly(two_workers: LiveServer) -> None:
    parent = _server_pid(two_workers.port)
    workers = _workers(parent)
    assert len(workers) == 2
    for w in workers:  # the workers listen on nothing: the parent hands them connections
        assert _listening(w) == []
    # 16 keep-alive connections from one client, each answered: dealt in turn, 8 per worker
    # (with the kernel's SO_REUSEPORT hash used before, an even split happened 1 time in 5 and
    # all 16 on one worker 2 times in 2**16); the parent keeps no copy
    assert _split(two_workers.port, parent, 16) == [8, 8]
    assert _established(psutil.Process(parent), two_workers.port) == 0
    # each worker sized itself to its share of the cores
    serving = httpx.get(f"{two_workers.base}/v1/models/digits", timeout=10).json()["serving"]
    # the cores the server sees: affinity capped by a cgroup CPU quota (a CI container's
    # `--cpus` may allow fewer than its affinity lists)
    assert serving["workers"] == 2 and serving["pipelines"] == max(1, cpu_count() // 2)


def test_metrics_report_every_process_memory(two_workers: LiveServer) -> None:
    parent = _server_pid(two_workers.port)
    text = httpx.get(f"{two_workers.base}/metrics", timeout=10).text
    rows = [ln for ln in text.splitlines() if ln.startswith("imgclass_process_resident_memory")]
    roles = {}
    for row in rows:
        labels, value = row.rsplit(" ", 1)
        pid = int(labels.split('pid="')[1].split('"')[0])
        roles[pid] = labels.split('role="')[1].split('"')[0]
        assert float(value) > 10 * 2**20
    expected = {parent: "supervisor"} | {w.pid: "worker" for w in _workers(parent)}
    assert roles == expected


def test_a_dead_worker_is_replaced(two_workers: LiveServer) -> None:
    parent = _server_pid(two_workers.port)
    victim = _workers(parent)[0]
    victim.kill()
    victim.wait(10)
    _wait(
        lambda: len(_workers(parent)) == 2 and victim.pid not in [w.pid for w in _workers(parent)],
        30,
        "a replacement worker",
    )
    # the replacement gets connections once it has loaded (dealt to ready workers only)
    _wait(lambda: _split(two_workers.port, parent, 4) == [2, 2], 60, "the replacement to serve")
    for _ in range(6):  # new connections: whichever worker takes them answers
        with httpx.Client(timeout=10) as c:
            assert c.get(f"{two_workers.base}/readyz").status_code == 200
    assert "exited with -9; starting another" in two_workers.log_text()


def test_sigterm_stops_every_worker(tmp_path: Path) -> None:
    with live_server(tmp_path, _env(2), entry="app") as server:
        parent = psutil.Process(_server_pid(server.port))
        workers = _workers(parent.pid)
        # The metrics folder the server made for its workers (none was given): removed at
        # exit, not left in /tmp by every start (301 were there from earlier runs).
        metrics_dir = Path(workers[0].environ()["PROMETHEUS_MULTIPROC_DIR"])
        assert metrics_dir.is_dir()
        parent.send_signal(signal.SIGTERM)
        assert parent.wait(40) == 0
        _, alive = psutil.wait_procs(workers, timeout=10)
        assert not alive
        assert not metrics_dir.exists()
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{server.base}/healthz", timeout=2)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_port_in_use_fails_at_once(tmp_path: Path, workers: int) -> None:
    """With one worker too (uvicorn now runs on the socket the dealing parent binds)."""
    port = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen(1)
        env = {**os.environ, **_env(workers), "IMGCLASS_PORT": str(port)}
        env["IMGCLASS_DATA_DIR"] = str(tmp_path / "data")
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "app"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 3
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr
    assert time.monotonic() - started < 30


def test_cuda_where_it_is_missing_fails_at_once_in_one_line(tmp_path: Path) -> None:
    """README: IMGCLASS_PROVIDERS=cuda without CUDA stops start-up with an error. It did, but
    only after every worker had failed three times: six tracebacks, over 200 lines."""
    from app.runtime import CUDA, available_providers

    if CUDA in available_providers():
        pytest.skip("this onnxruntime has CUDA: the setting is honoured")
    env = {**os.environ, **_env(2), "IMGCLASS_PORT": str(free_port())}
    env.update(IMGCLASS_PROVIDERS="cuda", IMGCLASS_DATA_DIR=str(tmp_path / "data"))
    done = subprocess.run(
        [sys.executable, "-m", "app"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "IMGCLASS_PROVIDERS=cuda but this onnxruntime build has no CUDA" in done.stderr
    assert "Traceback" not in done.stderr and "worker process" not in done.stderr


def test_workers_accept_only_once_loaded(tmp_path: Path) -> None:
    """The parent listens before the workers start, so a request may reach a worker at once:
    it must wait for that worker's models, never get 503 "still loading" (a client that saw
    /readyz 200 from one worker would otherwise be refused by the other)."""
    port = free_port()
    env = {**os.environ, **_env(2), "IMGCLASS_PORT": str(port)}
    env["IMGCLASS_DATA_DIR"] = str(tmp_path / "data")
    env["IMGCLASS_LOAD_IN_BACKGROUND"] = "true"  # the workers must override it
    with (tmp_path / "server.log").open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "app"], cwd=ROOT, env=env, stdout=log, stderr=log
        )
    try:
        statuses: list[int] = []
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and (not statuses or statuses[-1] != 200):
            try:
                with httpx.Client(timeout=60) as c:  # a new connection each time
                    statuses.append(c.get(f"http://127.0.0.1:{port}/readyz").status_code)
            except httpx.ConnectError:  # the parent has not bound the socket yet
                time.sleep(0.05)
        assert statuses and set(statuses) == {200}, statuses
        # a client that starts as soon as /readyz answers gets its connections dealt evenly:
        # none was dealt before both workers had loaded
        assert _split(port, proc.pid, 8) == [4, 4]
        for _ in range(20):  # whichever worker a new connection reaches is ready
            with httpx.Client(timeout=60) as c:
                assert c.get(f"http://127.0.0.1:{port}/readyz").status_code == 200
    finally:
        proc.terminate()
        proc.wait(40)


def _in_flight(base: str, model: str) -> float:
    text = httpx.get(f"{base}/metrics", timeout=10).text
    prefix = f'imgclass_requests_in_flight{{model="{model}"}} '
    rows = [ln for ln in text.splitlines() if ln.startswith(prefix)]
    return float(rows[0].split()[-1]) if rows else 0.0


def test_a_killed_workers_requests_leave_the_in_flight_gauge(two_workers: LiveServer) -> None:
    # In-flight requests and queue depth are summed over the workers' files (livesum); a worker
    # killed mid-request cannot take its values out, so the supervisor must (measured before:
    # the gauge stayed at 1 for good after a worker was killed holding one request).
    parent = _server_pid(two_workers.port)
    sock = socket.create_connection(("127.0.0.1", two_workers.port), timeout=10)
    try:  # a predict whose body never finishes arriving: in flight until its worker dies
        sock.sendall(
            b"POST /v1/models/digits/predict HTTP/1.1\r\nHost: localhost\r\n"
            b"Content-Type: image/png\r\nContent-Length: 100000\r\n\r\n" + b"\x89PNG"
        )
        _wait(lambda: _in_flight(two_workers.base, "digits") == 1, 10, "the request in flight")
        local = sock.getsockname()[1]
        owner = next(
            w
            for w in _workers(parent)
            if any(c.raddr and c.raddr.port == local for c in w.net_connections("tcp"))
        )
        owner.kill()
        owner.wait(10)
    finally:
        sock.close()
    _wait(lambda: len(_workers(parent)) == 2, 30, "a replacement worker")
    _wait(lambda: _split(two_workers.port, parent, 4) == [2, 2], 60, "the replacement to serve")
    for _ in range(4):  # whichever worker answers the scrape, the sum no longer counts it
        assert _in_flight(two_workers.base, "digits") == 0


def test_workers_stop_when_the_parent_is_killed(tmp_path: Path) -> None:
    """Only the parent accepts: workers whose parent died (kill -9, no SIGTERM to pass on)
    finish what they hold and exit instead of staying behind as orphans."""
    with live_server(tmp_path, _env(2), entry="app") as server:
        parent = psutil.Process(_server_pid(server.port))
        workers = _workers(parent.pid)
        assert len(workers) == 2
        parent.kill()
        _gone, alive = psutil.wait_procs(workers, timeout=20)
        assert alive == [], [p.pid for p in alive]


@pytest.mark.parametrize(
    ("bad", "said"),
    [
        ({"IMGCLASS_ENABLED_MODELS": "digits"}, "IMGCLASS_ENABLED_MODELS is not valid JSON"),
        ({"IMGCLASS_ALLOWED_HOSTS": "api.example"}, "IMGCLASS_ALLOWED_HOSTS is not valid JSON"),
        ({"IMGCLASS_VECTOR_STORE": "bogus://x"}, "IMGCLASS_VECTOR_STORE: 'bogus://x': use"),
        ({"IMGCLASS_HOST": ""}, "IMGCLASS_HOST: "),
        ({"IMGCLASS_GRPC_PORT": "SAME"}, "IMGCLASS_GRPC_PORT is IMGCLASS_PORT"),
        ({"IMGCLASS_HOST": "999.1.1.1"}, "cannot listen on 999.1.1.1:"),
        # round 24: a typo served nothing, and /readyz said 503 without a word why
        ({"IMGCLASS_ENABLED_MODELS": '["prodcuts"]'}, "IMGCLASS_ENABLED_MODELS names 'prodcuts'"),
        # round 27: an empty key refused every write with a 401 no client could get past
        ({"IMGCLASS_API_KEY": "  "}, "IMGCLASS_API_KEY: is empty"),
        ({"IMGCLASS_API_KEY_FILE": "/nonexistent/keys"}, "cannot read IMGCLASS_API_KEY_FILE="),
        (
            {"IMGCLASS_API_KEY_FILE": "/dev/null"},
            "IMGCLASS_API_KEY_FILE=/dev/null is not a regular",
        ),
        ({"IMGCLASS_API_KEY": "a", "IMGCLASS_API_KEY_FILE": "/x"}, "set IMGCLASS_API_KEY or"),
        # round 44: a traceback in the parent (a file), in every worker (a read-only folder)
        (
            {"PROMETHEUS_MULTIPROC_DIR": "/dev/null"},
            "PROMETHEUS_MULTIPROC_DIR=/dev/null cannot hold the metrics files: it is not a folder",
        ),
    ],
)
def test_a_bad_setting_stops_the_start_in_one_line(
    tmp_path: Path, bad: dict[str, str], said: str
) -> None:
    """Fuzz round 22: a list variable not in JSON, an unknown vector store (in every worker),
    the gRPC port equal to the HTTP port, an empty host, an address that cannot be bound:
    tracebacks, a half-started server or a log line without `not started`. Now one line and
    a non-zero exit before any worker starts."""
    port = free_port()
    env = {**os.environ, **_env(1), "IMGCLASS_PORT": str(port)}
    env["IMGCLASS_DATA_DIR"] = str(tmp_path / "data")
    env.update({k: str(port) if v == "SAME" else v for k, v in bad.items()})
    done = subprocess.run(
        [sys.executable, "-m", "app"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode in (2, 3), done.stderr[-2000:]
    assert f"imgclass: not started: {said}" in done.stderr, done.stderr[-2000:]
    assert "Traceback" not in done.stderr


@pytest.mark.slow  # a server of its own
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_one_worker_stops_on_a_signal_with_status_0_and_no_traceback(
    tmp_path: Path, signum: int
) -> None:
    """Round 27: Ctrl-C on a one-process server ended in a KeyboardInterrupt traceback (status
    -2) and SIGTERM in status 143, where the dealing parent of several exits 0. Round 44:
    SIGHUP (a terminal closed) killed it at once, cutting off the upload in flight; each
    signal lets that upload finish and be answered."""
    picture = (DATA / "photos" / "foolbox" / "fashionMNIST_00_9.png").read_bytes()
    with live_server(tmp_path, _env(1), entry="app") as server:
        parent = psutil.Process(_server_pid(server.port))
        with socket.create_connection(("127.0.0.1", server.port)) as upload:
            upload.sendall(
                b"POST /v1/models/digits/predict HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: image/png\r\nContent-Length: %d\r\n\r\n"
                % len(picture)
                + picture[:10]
            )
            time.sleep(0.5)  # in flight
            parent.send_signal(signum)
            time.sleep(0.5)
            upload.sendall(picture[10:])
            upload.settimeout(10)
            answer = upload.recv(64)
        assert answer.startswith(b"HTTP/1.1 200"), answer
        assert parent.wait(timeout=20) == 0
    assert "Traceback" not in server.log_text(), server.log_text()[-2000:]


@pytest.mark.slow  # a server of its own
def test_ctrl_c_on_the_terminal_lets_every_worker_shut_down_cleanly(tmp_path: Path) -> None:
    """Round 27: a terminal's Ctrl-C reaches every process of the group and the parent then
    sends each worker SIGTERM; uvicorn took the two as "quit now" and skipped the app's
    shutdown (teach jobs, catalogs, gRPC) in 9 of 16 workers. Workers leave SIGINT to it."""
    port = free_port()
    env = {**os.environ, **_env(2), "IMGCLASS_PORT": str(port), "IMGCLASS_LOG_LEVEL": "INFO"}
    env["IMGCLASS_DATA_DIR"] = str(tmp_path / "data")
    log = tmp_path / "server.log"
    for _ in range(3):
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "app"],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, as a terminal gives
            )
        try:
            deadline = time.monotonic() + 60
            while not _answers(f"http://127.0.0.1:{port}/readyz"):
                assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
            os.killpg(proc.pid, signal.SIGINT)
            assert proc.wait(timeout=20) == 0
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        text = log.read_text(errors="replace")
        assert text.count("Application shutdown complete") == 2, text[-2000:]
        assert "Traceback" not in text


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def test_an_upload_still_arriving_at_a_stop_gets_its_body_timeout(tmp_path: Path) -> None:
    """Round 28: the parent killed its workers 30 s after SIGTERM whatever the body timeout
    (60 s by default), so an upload still arriving was cut with no answer and the worker's
    shutdown never ran. The parent now waits the body timeout and 10 s more: the upload gets
    its 408 (at the body timeout, 35 s here) and the server exits 0."""
    env = {**_env(2), "IMGCLASS_BODY_TIMEOUT_S": "35"}
    with live_server(tmp_path, env, entry="app") as server:
        parent = psutil.Process(_server_pid(server.port))
        with socket.create_connection(("127.0.0.1", server.port)) as upload:
            upload.sendall(
                b"POST /v1/models/digits/predict HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: image/png\r\nContent-Length: 100000\r\n\r\n\x89PNG"
            )
            time.sleep(0.5)
            parent.send_signal(signal.SIGTERM)
            started, answer = time.monotonic(), b""
            upload.settimeout(1.0)
            while time.monotonic() - started < 60:
                with contextlib.suppress(TimeoutError):
                    upload.sendall(b"\0")  # one byte a second: alive, never done
                try:
                    chunk = upload.recv(65536)
                except TimeoutError:
                    continue
                except OSError:
                    break
                if not chunk:
                    break
                answer += chunk
            took = time.monotonic() - started
        assert answer.startswith(b"HTTP/1.1 408"), (round(took, 1), answer[:80])
        assert 30 < took < 45
        assert parent.wait(30) == 0


@pytest.mark.parametrize("after_s", [0.3, 1.0])  # importing, then (here) loading the models
def test_workers_still_loading_when_the_parent_is_killed_exit_quietly(
    tmp_path: Path, after_s: float
) -> None:
    """Round 40: workers whose parent was killed while they loaded went on loading (about 200
    MB each), then each failed with two tracebacks (a broken pipe when saying ready). Now
    they are sent SIGTERM when the parent dies and exit without a word of error."""
    env = {**os.environ, **_env(2), "IMGCLASS_PORT": str(free_port())}
    env.pop("IMGCLASS_ENABLED_MODELS")  # the five shipped models: seconds of loading
    env["IMGCLASS_DATA_DIR"] = str(tmp_path / "data")
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "app"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        _wait(lambda: len(_workers(proc.pid)) == 2, 30, "two workers")
        workers = _workers(proc.pid)
        time.sleep(after_s)
        proc.kill()
        proc.wait(10)
        _gone, alive = psutil.wait_procs(workers, timeout=15)
        assert alive == [], [p.pid for p in alive]
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text(errors="replace")
    assert "Traceback" not in text and "Error" not in text, text[-3000:]


def test_interpreter_flags_reach_the_parent_after_its_restart_and_the_workers(
    tmp_path: Path,
) -> None:
    """`python -O -m app`: the parent restarts itself to preload jemalloc (app.allocator); it
    dropped the flags, so the parent and its workers ran without -O (round 40)."""
    port = free_port()
    env = {**os.environ, **_env(2), "IMGCLASS_PORT": str(port), "IMGCLASS_ALLOCATOR": "auto"}
    env["IMGCLASS_DATA_DIR"] = str(tmp_path / "data")
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-O", "-m", "app"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while not _answers(f"http://127.0.0.1:{port}/readyz"):
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        parent = psutil.Process(proc.pid)
        assert "-O" in parent.cmdline()[1:3], parent.cmdline()
        workers = _workers(proc.pid)
        assert len(workers) == 2
        assert all("-O" in w.cmdline()[1:4] for w in workers), [w.cmdline() for w in workers]
    finally:
        proc.terminate()
        proc.wait(30)


def _wait_ready(proc: subprocess.Popen[str] | subprocess.Popen[bytes], port: int) -> None:
    deadline = time.monotonic() + 60
    while not _answers(f"http://127.0.0.1:{port}/readyz"):
        assert proc.poll() is None, proc.returncode
        assert time.monotonic() < deadline, "not ready in 60 s"
        time.sleep(0.2)


def test_a_server_started_with_its_output_closed_serves(tmp_path: Path) -> None:
    """`python -m app >&-`: uvicorn's logging failed on the missing stdout and the server never
    started (round 40); the closed streams now point at /dev/null."""
    port = free_port()
    env = {**os.environ, **_env(2), "IMGCLASS_PORT": str(port)}
    env["IMGCLASS_DATA_DIR"] = str(tmp_path / "data")
    proc = subprocess.Popen(
        ["bash", "-c", f"exec {sys.executable} -m app >&- 2>&-"], cwd=ROOT, env=env
    )
    try:
        _wait_ready(proc, port)
        assert len(_workers(proc.pid)) == 2
    finally:
        proc.terminate()
        assert proc.wait(30) == 0


def test_the_dealing_parent_is_a_lean_process_with_the_same_pid_and_command(
    tmp_path: Path,
) -> None:
    """Round 41: the parent execs into app.dealer once it has checked the settings and bound
    the port: same pid, still `python -m app`, without pydantic, uvicorn or the web stack (it
    held 46-47 MiB for the server's lifetime, now about 19)."""
    port = free_port()
    env = {**os.environ, **_env(2), "IMGCLASS_PORT": str(port)}
    env["IMGCLASS_DATA_DIR"] = str(tmp_path / "data")
    proc = subprocess.Popen([sys.executable, "-m", "app"], cwd=ROOT, env=env)
    try:
        _wait_ready(proc, port)
        assert _server_pid(port) == proc.pid  # `-m app` listening, the pid started
        maps = Path(f"/proc/{proc.pid}/maps").read_text()
        for lib in ("pydantic_core", "onnxruntime", "_imaging", "uvloop"):
            assert lib not in maps, lib
        assert all("IMGCLASS_DEALER" not in w.environ() for w in _workers(proc.pid))
    finally:
        proc.terminate()
        assert proc.wait(30) == 0


def test_a_hand_over_the_system_refuses_deals_from_the_starting_process(tmp_path: Path) -> None:
    """An exec that fails (an environment over the kernel's limit, E2BIG) leaves the starting
    process to deal, as it did before round 41, with one line saying so."""
    port = free_port()
    env = {**os.environ, **_env(2), "IMGCLASS_PORT": str(port), "IMGCLASS_ALLOCATOR": "glibc"}
    env["IMGCLASS_DATA_DIR"] = str(tmp_path / "data")
    code = (
        "import errno, os, app.__main__\n"
        "def refused(*args):\n"
        "    raise OSError(errno.E2BIG, os.strerror(errno.E2BIG))\n"
        "os.execve = refused\n"
        "app.__main__.main()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        _wait_ready(proc, port)
        assert len(_workers(proc.pid)) == 2
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert "dealing from the starting process (Argument list too long)" in err


def test_a_server_started_right_after_the_parent_is_killed_gets_the_grpc_port(
    tmp_path: Path,
) -> None:
    """Round 40: after `kill -9` of the parent, a worker still finishing an upload kept the
    gRPC port listening until the upload ended (here its 408 at the body timeout), and a new
    server started then was refused (`cannot listen on ...: Address already in use`). Now a
    stopping worker takes no new gRPC call and lets the port go at once; the upload still
    gets its answer."""
    grpc_port = free_port()
    env = grpc_env(grpc_port, 2, IMGCLASS_BODY_TIMEOUT_S="8")
    (tmp_path / "old").mkdir()
    (tmp_path / "new").mkdir()
    with live_server(tmp_path / "old", env, entry="app") as old:
        parent = psutil.Process(_server_pid(old.port))
        workers = _workers(parent.pid)
        with socket.create_connection(("127.0.0.1", old.port)) as upload:
            upload.sendall(
                b"POST /v1/models/digits/predict HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: image/png\r\nContent-Length: 100000\r\n\r\n\x89PNG"
            )
            time.sleep(0.5)  # in flight in one worker
            parent.kill()
            t0 = time.monotonic()
            _wait(
                lambda: not any(
                    c.laddr.port == grpc_port for w in workers if w.is_running()
                    for c in _listening(w)
                ),
                2,
                "the old workers to let the gRPC port go",
            )  # fmt: skip
            assert any(w.is_running() for w in workers)  # the upload is still in flight
            with live_server(tmp_path / "new", env, entry="app"):
                with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
                    check = channel.unary_unary("/grpc.health.v1.Health/Check")
                    assert check(b"", timeout=5) == b"\x08\x01"  # SERVING: the new server
                upload.settimeout(10)
                answer = upload.recv(64)
            assert answer.startswith(b"HTTP/1.1 408"), answer
            assert time.monotonic() - t0 < 10
        _gone, alive = psutil.wait_procs(workers, timeout=5)
        assert alive == []
