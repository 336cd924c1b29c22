"""The start of `python -m app` (app/__main__.py): the settings, checked, then the server.

One worker: uvicorn in this process. Several (the default on a multi-core CPU, see
app.cores.resolve_workers), or TLS: this process binds the port, tells the workers their count
through IMGCLASS_WORKERS (each sizes its pipelines, threads, queues and decodes to its share of
the cores) and hands over to app.dealer by exec, which deals the connections to them in turn.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import FrameType
from typing import NoReturn

import uvicorn
from pydantic import ValidationError
from pydantic_settings import SettingsError

from app.allocator import check_loaded, reexec_with_jemalloc
from app.api_keys import check_key_file
from app.bundle_files import check_enabled
from app.cores import cores_per_worker, resolve_workers
from app.dealer import DEALER_ENV, deal
from app.draining import DrainingServer
from app.errors import ConfigurationError
from app.fsutil import check_listable, check_writable
from app.heavy_decode import HEAVY_LOCK_ENV
from app.multiproc import check_multiprocess_dir, multiprocess_metrics
from app.serve import (
    STOP_AFTER_BODY_S,
    STOP_GRACE_S,
    bind_listener,
    dealing_supported,
)
from app.settings import Settings
from app.tls_files import check_tls
from app.uvicorn_setup import uvicorn_config, uvicorn_options


def _gpu(providers: str) -> bool:
    """Whether forward passes run on CUDA. A setting that cannot be honoured (`cuda` without
    it) raises here, before any worker starts: each would fail alike, three times."""
    if providers == "cpu" or (providers == "auto" and not _cuda_library_present()):
        return False
    from app.runtime import CUDA, choose_providers  # onnxruntime, never TensorFlow

    return CUDA in choose_providers(providers)


def _cuda_library_present() -> bool:
    """Whether the installed onnxruntime ships its CUDA provider library, read from its folder
    without importing it: this process only deals connections, and importing onnxruntime (and
    numpy) to learn that a CPU build has no CUDA held 30 MiB here for the server's lifetime."""
    spec = importlib.util.find_spec("onnxruntime")
    folders = spec.submodule_search_locations if spec is not None else None
    return any(any(Path(f, "capi").glob("*providers_cuda*")) for f in folders or ())


def _settings() -> Settings:
    """The Settings, or a one-line reason per bad IMGCLASS_* variable and exit status 2 (a
    pydantic traceback told an operator less)."""
    try:
        return Settings()
    except SettingsError as exc:  # a list or map variable that is not JSON
        print(f"imgclass: not started: {_variable(str(exc))}", file=sys.stderr)
        sys.exit(2)
    except ValidationError as exc:
        for err in exc.errors():
            where = "_".join(str(p) for p in err["loc"]).upper()
            name = f"IMGCLASS_{where}: " if where else ""
            msg = err["msg"].removeprefix("Value error, ")
            print(f"imgclass: not started: {name}{msg}", file=sys.stderr)
        sys.exit(2)


def _variable(message: str) -> str:
    """pydantic-settings names the field (`error parsing value for field "enabled_models"
    from source ...`): say which variable, and that lists and maps are JSON."""
    field = message.split('field "', 1)[-1].split('"', 1)[0] if 'field "' in message else ""
    name = f"IMGCLASS_{field.upper()}" if field else "a variable"
    return f'{name} is not valid JSON (lists and maps are JSON: \'["digits"]\', \'{{"a": "b"}}\')'


def _cannot_listen(settings: Settings, exc: OSError) -> NoReturn:
    print(
        f"imgclass: not started: cannot listen on {settings.host}:{settings.port}: "
        f"{exc.strerror or exc}",
        file=sys.stderr,
    )
    sys.exit(3)


def _std_streams() -> None:
    """Standard streams that were closed (`python -m app >&-`) point at /dev/null: uvicorn's
    logging failed on a missing stdout, and a socket given a closed descriptor's number would
    have received what is printed there (round 40)."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)  # the lowest free descriptor: this one
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
            os.set_inheritable(fd, True)  # kept by the jemalloc restart and the workers
    if sys.stdout is None:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - for the process's lifetime
    if sys.stderr is None:
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115


def main() -> None:
    _std_streams()
    settings = _settings()
    try:
        check_tls(settings.tls)
        if settings.api_key_file is not None:
            check_key_file(str(settings.api_key_file))
        # one jemalloc arena per core of a worker's share (on a GPU, one worker: fewer)
        arenas = cores_per_worker(resolve_workers(settings.workers, gpu=False))
        reexec_with_jemalloc(settings.allocator, arenas)  # returns when nothing is to be done
        check_loaded(settings.allocator)
        check_writable(settings.data_dir)  # else every worker fails alike, with a traceback
        check_multiprocess_dir()
        check_listable(settings.models_dir, "IMGCLASS_MODELS_DIR")
        check_enabled(settings.models_dir, settings.enabled_models)
        if settings.grpc_port:
            from app.grpc_ports import check_grpc_port, check_grpc_tls, claim_grpc_port

            if settings.grpc_port == settings.port:
                raise ConfigurationError("IMGCLASS_GRPC_PORT is IMGCLASS_PORT: give it its own")
            check_grpc_port(settings.host, settings.grpc_port, alone=True)
            claim_grpc_port(settings.host, settings.grpc_port)  # held until this process ends
            check_grpc_tls(settings.tls)
        gpu = _gpu(settings.providers)
    except ConfigurationError as exc:
        print(f"imgclass: not started: {exc}", file=sys.stderr)
        sys.exit(2)
    workers = resolve_workers(settings.workers, gpu)
    os.environ["IMGCLASS_WORKERS"] = str(workers)  # read by each worker's Settings
    if dealing_supported() and (workers > 1 or settings.tls is not None):
        _hand_over(settings, workers)
    # Several workers share their Prometheus metrics through files; set up before they start.
    with multiprocess_metrics(workers) as shared:
        if shared is not None:  # and one lock for large whole-picture decodes (app.heavy_decode)
            os.environ[HEAVY_LOCK_ENV] = str(shared / "heavy-decode.lock")
        _serve(settings, workers)


def _stopped(_signum: int, _frame: FrameType | None) -> None:
    sys.exit(0)


def _serve(settings: Settings, workers: int) -> None:
    if workers == 1 and (settings.tls is None or not dealing_supported()):
        # One process: uvicorn on the socket the dealing parent would bind, so `::` listens
        # on IPv4 and IPv6 alike with one worker or several (asyncio's own bind made it
        # IPv6-only). With TLS one worker is dealt its connections too: only there is the
        # handshake bounded (10 s; uvicorn's listener leaves asyncio's 60 s, fuzz round 22).
        try:
            listener = bind_listener(settings.host, settings.port)
        except OSError as exc:
            _cannot_listen(settings, exc)
        config = uvicorn_config(settings.log_level, settings.tls)
        config.host, config.port = settings.host, settings.port
        # uvicorn raises the signal that stopped it again once it has shut down; with these
        # handlers it ends the process with status 0, as the dealing parent does (SIGINT was
        # a KeyboardInterrupt traceback, SIGTERM status 143; round 27)
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, _stopped)
        DrainingServer(config).run(sockets=[listener])
        return
    # Several processes on a system that cannot pass sockets between processes
    # (app.serve.dealing_supported): uvicorn's own workers, one shared socket.
    uvicorn.run(
        host=settings.host,
        port=settings.port,
        workers=workers,
        **uvicorn_options(settings.log_level, settings.tls),
    )


def _hand_over(settings: Settings, workers: int) -> NoReturn:
    """Bind the port (a port in use fails here, once), then become the dealing parent: exec
    into app.dealer with the listening socket (and the gRPC port's claim) kept, same process
    id and command line. The checks above needed pydantic, uvicorn and the settings; the
    dealer does not, and holds 19 MiB instead of 46-47 for the server's lifetime (round 41).
    The dealer raises its open-file limit itself (Supervisor.adopt)."""
    try:
        listener = bind_listener(settings.host, settings.port)
    except OSError as exc:
        _cannot_listen(settings, exc)
    listener.set_inheritable(True)
    if settings.grpc_port:
        from app.grpc_ports import keep_claims

        keep_claims()
    spec = {
        "listener": listener.fileno(),
        "host": settings.host,
        "port": settings.port,
        "workers": workers,
        "log_level": settings.log_level,
        "log_format": settings.log_format,
        # an upload still arriving at a stop may take the body timeout (round 28: the
        # workers were killed at 30 s, before the default 60 s body timeout)
        "stop_grace_s": max(STOP_GRACE_S, settings.body_timeout_s + STOP_AFTER_BODY_S),
    }
    env = {**os.environ, DEALER_ENV: json.dumps(spec)}
    # -O, -X ... kept, as the jemalloc restart keeps them (app.allocator)
    flags: list[str] = getattr(subprocess, "_args_from_interpreter_flags", list)()
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(sys.executable, [sys.executable, *flags, "-m", "app", *sys.argv[1:]], env)
    except OSError as exc:  # E2BIG, EAGAIN ...: deal from this process, as before round 41
        print(f"imgclass: dealing from the starting process ({exc.strerror})", file=sys.stderr)
        deal(spec)


if __name__ == "__main__":
    main()
