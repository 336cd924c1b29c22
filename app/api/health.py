"""Liveness and readiness probes: `async def`, so they never wait for a thread-pool slot
behind decodes and forward passes, and cheap (no I/O, no locks held long)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from typing import Any, Final

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from app.api.deps import RegistryDep, SettingsDep
from app.draining import stopping
from app.registry import ModelRegistry
from app.schemas import Health, Readiness, RefusedModel
from app.settings import Settings

router = APIRouter(tags=["health"])
REOPEN_S: Final = 2.0
_reopened = [0.0]  # when a store that could not be opened was last tried again


def server_ready(registry: ModelRegistry, settings: Settings) -> bool:
    """Every bundle loaded and at least one served (and none refused, with
    require_all_models)."""
    ready = registry.loading_finished and bool(registry.names()) and not stopping()
    return ready and not (settings.require_all_models and registry.refused())


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """The process is alive and answering (says nothing about models)."""
    return Health(status="ok")


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}})
async def readyz(request: Request, registry: RegistryDep, settings: SettingsDep) -> JSONResponse:
    """200 once every bundle has been loaded and warmed up (refused bundles are named; why
    is in the log and, for API-key holders, in /v1/models); 503 while loading, when no model
    could be loaded, with require_all_models when any bundle was refused, or when the data
    folder, or its catalogs, teach or models folder, was removed or replaced under the running
    server (catalogs and teaching then answer 503; a load balancer should send traffic to a
    replica that still has it), and while the catalog store opens. A full or read-only data
    folder (or one of its folders, on a volume of its own) is reported in `storage` but keeps
    the server ready: predictions work, writes answer 507/503. A few system calls, no lock."""
    refused = registry.refused()
    names = registry.names()
    folders = request.app.state.data_folders  # the data folder first, then its own folders
    seen = [folder.intact() for folder in folders]  # each one, so each learns what is there
    storage_ok = all(seen)
    catalogs = request.app.state.catalogs
    catalogs_started = catalogs.started.is_set()  # store opened, or tried
    store = _store_state(catalogs) if catalogs_started else "opening"
    ready = server_ready(registry, settings) and storage_ok and catalogs_started
    if ready:
        status = "ready"
    elif stopping():
        status = "stopping"  # SIGTERM: finishing what is in flight, take no more
    elif not registry.loading_finished or not catalogs_started:
        status = "loading"
    else:
        status = "unavailable" if storage_ok else "storage-unavailable"
    body = Readiness(
        status=status,
        models=names,
        loading=registry.pending(),
        refused=[RefusedModel(name=n) for n in sorted(refused)],
        # full or read-only: still ready (predictions work), said so for operators
        storage=_worst(folder.writes() for folder in folders) if storage_ok else "unavailable",
        catalog_store=store,
        detail=_why_no_model(registry, settings) if status == "unavailable" else None,
    )
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)


def _store_state(catalogs: Any) -> str:
    """'open' or 'unavailable', as the store is now: a Milvus that did not answer is asked
    again in the background (`reachable`), and one that could not be opened at start-up is
    opened again, at most every REOPEN_S, requests or none (round 43: a replica started during
    an outage said "unavailable" for over 140 s after Milvus was back, until a catalog request
    reached each of its workers)."""
    if catalogs.opened:
        return "open" if catalogs.store.reachable() else "unavailable"
    if catalogs.store.kind == "milvus" and time.monotonic() - _reopened[0] > REOPEN_S:
        _reopened[0] = time.monotonic()
        threading.Thread(target=catalogs.warm, name="catalog-open", daemon=True).start()
    return "unavailable"


def _why_no_model(registry: ModelRegistry, settings: Settings) -> str | None:
    """Why loading ended without serving: a mistyped IMGCLASS_MODELS_DIR looked like an
    endless load, said only in a log line (round 32). Names no path (a private detail)."""
    unpolled = (
        " It is not looked at again (IMGCLASS_MODEL_POLL_SECONDS=0): a bundle loads when a "
        "request names it, or at a restart."
        if settings.model_poll_seconds == 0
        else ""
    )
    if not registry.names():
        folder = registry.models_dir
        if not folder.is_dir():
            return "The models folder (IMGCLASS_MODELS_DIR) does not exist or is not a folder." + (
                unpolled
                or " Models are served once it holds bundles (it is looked at "
                "again every few seconds)."
            )
        if not registry.refused():
            waiting = any((d / "metadata.json").is_file() for d in registry.discover())
            if waiting and unpolled:
                return "The models folder holds bundles not loaded yet." + unpolled
            return "The models folder (IMGCLASS_MODELS_DIR) holds no model bundle."
        return "Every model bundle was refused; the server log says why."
    if settings.require_all_models and registry.refused():
        return "A model bundle was refused and IMGCLASS_REQUIRE_ALL_MODELS is on."
    return None


def _worst(states: Iterable[str]) -> str:
    """The data folder's and its own folders' write states, the worst first: `catalogs` on a
    volume of its own, full or read-only, was "ok" (only the data folder was read, round 31)."""
    seen = set(states)
    return next((s for s in ("read-only", "full") if s in seen), "ok")
