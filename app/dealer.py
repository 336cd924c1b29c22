"""The dealing parent of `python -m app` (several workers, or TLS): app.start checks the
settings, binds the port, and execs into this with both kept (app/__main__.py chooses).

Why a fresh interpreter: this process lives as long as the server and does no more than accept
connections, deal them to the workers and keep the workers running (app.serve.Supervisor). The
start had imported pydantic, pydantic-settings, uvicorn and the settings checks, 46-47 MiB
resident for the server's lifetime; here only the standard library and the dealing modules are
imported (app.serve, app.worker_process, app.worker_slots, app.multiproc, app.log_format).
"""

from __future__ import annotations

import json
import os
import socket
import sys
from typing import Any, Final, NoReturn

DEALER_ENV: Final = "IMGCLASS_DEALER"  # what app.start hands over (JSON); gone once read


def main() -> None:
    deal(json.loads(os.environ.pop(DEALER_ENV)))


def deal(spec: dict[str, Any]) -> NoReturn:
    """Deal the connections of the listening socket `spec` names until the server stops."""
    from app.heavy_decode import HEAVY_LOCK_ENV
    from app.log_format import configure_app_logger
    from app.multiproc import multiprocess_metrics
    from app.serve import Supervisor

    listener = socket.socket(fileno=int(spec["listener"]))
    listener.set_inheritable(False)  # the workers get their connections one at a time
    configure_app_logger(str(spec["log_format"]), str(spec["log_level"]))
    workers = int(spec["workers"])
    # Several workers share their Prometheus metrics through files; set up before they start.
    with multiprocess_metrics(workers) as shared:
        if shared is not None:  # and one lock for large whole-picture decodes (app.heavy_decode)
            os.environ[HEAVY_LOCK_ENV] = str(shared / "heavy-decode.lock")
        supervisor = Supervisor(
            str(spec["host"]),
            int(spec["port"]),
            workers,
            str(spec["log_level"]),
            stop_grace_s=float(spec["stop_grace_s"]),
        )
        supervisor.adopt(listener)
        sys.exit(supervisor.run())
