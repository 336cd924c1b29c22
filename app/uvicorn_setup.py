"""uvicorn's settings for the app, however it is run (one process, a dealt worker, or uvicorn's
own workers). Kept apart from app.serve so the dealing parent never imports uvicorn."""

from __future__ import annotations

from typing import Any

import uvicorn

from app.http_guard import HeadGuardedProtocol
from app.tls_files import TlsFiles


def uvicorn_options(log_level: str, tls: TlsFiles | None = None) -> dict[str, Any]:
    """uvicorn's settings for the app, however it is run; `tls` serves HTTPS."""
    return {
        "app": "app.main:create_app",
        "factory": True,
        "log_level": log_level.lower(),
        "access_log": False,  # the app logs each request itself
        "http": HeadGuardedProtocol,  # each request's head timed and capped (app/http_guard.py)
        "ws": "none",  # no WebSocket endpoint: the guard refuses the handshake with a 400
        "ssl_certfile": None if tls is None else tls.cert,
        "ssl_keyfile": None if tls is None else tls.key,
        "ssl_keyfile_password": None if tls is None else tls.password(),
    }


def uvicorn_config(log_level: str, tls: TlsFiles | None = None) -> uvicorn.Config:
    """uvicorn's settings for a worker (uvicorn_options)."""
    return uvicorn.Config(**uvicorn_options(log_level, tls))
