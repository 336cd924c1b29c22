"""The load generators bench/load.py drives (Debian `hey` and `wrk`, loopback only, bounded in
time) and a readiness-probe watcher, each returning what one cell of the table needs.

Why two clients: on a 2-core machine the client shares the cores with the server, so its own CPU
per request lowers what the server can reach. `hey` (Go) costs about 0.35 ms of CPU per request
here and reports every request (status, latency, new dials) in its CSV, which the overload
figures need: 503 counts and latencies, accepted p99. `wrk` (C, one thread) costs about 0.08 ms
per request but reports only totals (requests, non-2xx, socket errors, one latency histogram of
every response), so it gives throughput with less of the client in the measurement.
"""

from __future__ import annotations

import csv
import http.client
import io
import re
import statistics
import subprocess
import threading
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

BOUNDARY = "imgclassbenchboundary"


@dataclass
class Cell:
    ok: int
    rps: float
    p50: float
    p99: float
    s503: int
    other: int
    dials: int
    p50_503: float  # how long a refusal took to arrive
    p99_503: float
    probe_p99: float = float("nan")  # GET /readyz during the cell, ms


def p99(values: list[float]) -> float:
    """The 99th percentile; one value is its own percentile, none gives NaN."""
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=100)[98]


def hey(url: str, body: Path, clients: int, seconds: float) -> Cell:
    cmd = ["hey", "-z", f"{seconds}s", "-c", str(clients), "-m", "POST", "-o", "csv"]
    cmd += ["-T", f"multipart/form-data; boundary={BOUNDARY}", "-D", str(body), url]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60, check=True)
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    ok = [float(r["response-time"]) * 1e3 for r in rows if r["status-code"] == "200"]
    refused = [float(r["response-time"]) * 1e3 for r in rows if r["status-code"] == "503"]
    s503 = len(refused)
    dials = sum(float(r["DNS+dialup"]) > 0 for r in rows)
    return Cell(
        ok=len(ok),
        rps=len(ok) / seconds,
        p50=statistics.median(ok) if ok else float("nan"),
        p99=p99(ok),
        s503=s503,
        other=len(rows) - len(ok) - s503,
        dials=max(0, dials - clients),
        p50_503=statistics.median(refused) if refused else float("nan"),
        p99_503=p99(refused),
    )


@dataclass
class WrkCell:
    requests: int
    ok: int  # 2xx
    rps: float  # 2xx per second
    non2xx: int
    socket_errors: int
    p50: float  # ms, over every response (2xx and not)
    p99: float


_UNIT_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}
_SCRIPT = """-- written by bench/clients.py
local f = assert(io.open([[{path}]], "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "multipart/form-data; boundary={boundary}"
"""


def _ms(value: str, unit: str) -> float:
    return float(value) * _UNIT_MS[unit]


def parse_wrk(text: str) -> WrkCell:
    """Totals from wrk's report (run with --latency)."""
    done = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)\b", text)
    if done is None:
        raise ValueError(f"no request count in wrk's output:\n{text}")
    requests, seconds = int(done.group(1)), _ms(done.group(2), done.group(3)) / 1e3
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    bad = int(non2xx.group(1)) if non2xx else 0
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    errors = sum(int(g) for g in sock.groups()) if sock else 0
    pct = {
        p: _ms(v, u) for p, v, u in re.findall(r"^\s+(\d+)%\s+([\d.]+)(us|ms|s|m)\s*$", text, re.M)
    }
    ok = requests - bad
    return WrkCell(
        requests=requests,
        ok=ok,
        rps=ok / seconds if seconds else float("nan"),
        non2xx=bad,
        socket_errors=errors,
        p50=pct.get("50", float("nan")),
        p99=pct.get("99", float("nan")),
    )


def wrk(url: str, body: Path, clients: int, seconds: float) -> WrkCell:
    """`clients` keep-alive connections on one wrk thread, each POSTing `body` back to back."""
    script = body.with_suffix(".lua")
    script.write_text(_SCRIPT.format(path=body.resolve(), boundary=BOUNDARY))
    cmd = ["wrk", "-t", "1", "-c", str(clients), "-d", f"{seconds:g}s", "--timeout", "10s"]
    cmd += ["--latency", "-s", str(script), url]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60, check=True)
    return parse_wrk(out.stdout)


class ProbeWatch:
    """GET a probe every 100 ms on a fresh connection while a cell runs (as an orchestrator
    would), recording how long each answer took. Plain `http.client`: an httpx client per
    probe would cost the bench more CPU than the server spends answering it."""

    def __init__(self, url: str) -> None:
        parts = urllib.parse.urlsplit(url)
        self.host, self.port, self.path = parts.hostname or "127.0.0.1", parts.port, parts.path
        self.ms: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _once(self) -> float:
        t0 = time.perf_counter()
        conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
        try:
            conn.request("GET", self.path)
            resp = conn.getresponse()
            resp.read()
            ok = resp.status == 200
        except OSError:
            ok = False
        finally:
            conn.close()
        return (time.perf_counter() - t0) * 1e3 if ok else 10_000.0

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            self.ms.append(self._once())

    def __enter__(self) -> ProbeWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def p99(self) -> float:
        return p99(self.ms)
