"""create_app(settings) -> FastAPI: lifespan, routers, error handlers, static page. No logic."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import Depends, FastAPI
from starlette.routing import Route

from app import __version__, draining, telemetry
from app.api import (
    access,
    api_docs,
    catalogs,
    health,
    metrics,
    models,
    openapi,
    predict,
    preview,
    teach,
    v2,
)
from app.api.big_answers import AnswerGate
from app.api.body_budget import BodyBudget
from app.api.cors import EXPOSED_HEADERS, ProblemCORSMiddleware
from app.api.deps import open_writes_warning
from app.api.guards import GuardMiddleware
from app.api.head import HeadAsGet
from app.api.heavy_bodies import HeavyBodyGate
from app.api.hotpath import ServingApp
from app.api.name_rules import well_formed_names
from app.api.overload import OverloadShedder
from app.api.page_assets import PageAssets
from app.api.problems import install_error_handlers
from app.api.query_names import known_query_only, no_query
from app.batching import Schedulers, serving_threads
from app.catalog.service import CatalogService
from app.fsutil import SERVICE_FOLDERS, make_service_folders, watch_data_folders
from app.heap import HeapTrimmer, freeze_loaded_heap
from app.logs import RequestObserver, configure_logging
from app.registry import ModelRegistry
from app.security_headers import SecurityHeaders
from app.settings import Settings
from app.teach.core import job_work, taught_root, withdraw_orphan
from app.teach.job_store import JobStore
from app.teach.jobs import JobRunner

logger = logging.getLogger(__name__)
STATIC_DIR = Path(__file__).parent / "static"


def _load_then_freeze(registry: ModelRegistry, freeze: bool) -> None:
    registry.load_all()
    if freeze:
        freeze_loaded_heap()  # full collections skip what start-up built (app/heap.py)


STORE_WAIT_S = 5.0  # how long a start-up that loads its models in the lifespan waits for it


def _open_then_warm(catalogs: CatalogService) -> None:
    catalogs.open()
    catalogs.warm()


def _log_address(settings: Settings) -> None:
    """`python -m app` with one worker (IMGCLASS_WORKERS=1, set by app/__main__.py) serves on
    a socket it bound itself, so uvicorn logs no "running on" line: this says where to go.
    Several workers: the dealing parent (app/serve.py) logs it; plain `uvicorn`: uvicorn does."""
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    scheme = "https" if settings.tls else "http"
    logger.info("serving on %s://%s:%d (page: /, API docs: /docs)", scheme, host, settings.port)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    # anyio imports its asyncio backend on first use: at a moment with every file descriptor
    # taken (fuzz round 14) that import failed and the request answered 500.
    import anyio._backends._asyncio  # noqa: F401

    configure_logging(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        registry: ModelRegistry = app.state.registry
        catalog_service: CatalogService = app.state.catalogs
        grpc_server = None  # bound first: a port in use stops start-up before any thread runs
        if settings.grpc_port:
            from app.grpc_oip import GrpcServer  # grpcio is loaded only when the port is set

            grpc_server = GrpcServer(app.state, asyncio.get_running_loop())
        # Not in the lifespan: a Milvus that took 45 s to answer after its restart kept
        # /healthz waiting that long (round 30), and with several workers, whose models load
        # in the lifespan, SIGTERM too (round 31). /readyz waits for it.
        threading.Thread(
            target=_open_then_warm, args=(catalog_service,), name="catalog-loader", daemon=True
        ).start()
        if settings.load_in_background:
            threading.Thread(
                target=_load_then_freeze,
                args=(registry, settings.gc_freeze),
                name="model-loader",
                daemon=True,
            ).start()
        else:
            registry.load_all()
            # a store that opens at once is open before the first request, as it was
            await asyncio.to_thread(catalog_service.started.wait, STORE_WAIT_S)
            if settings.gc_freeze:
                freeze_loaded_heap()
        registry.start_watching(settings.model_poll_seconds)
        app.state.teach.start()
        # jemalloc hands free pages back by itself; malloc_trim is glibc's (app/heap.py).
        allocator = metrics.ALLOCATOR  # read from /proc/self/maps once per process
        logger.info("C allocator: %s (IMGCLASS_ALLOCATOR=%s)", allocator, settings.allocator)
        if (open_writes := open_writes_warning(settings)) is not None:
            logger.warning(open_writes)
        trimmer = HeapTrimmer(settings.heap_trim_seconds if allocator == "glibc" else 0)
        trimmer.start()
        forget_grpc = None
        if grpc_server is not None:
            grpc_server.start()
            forget_grpc = draining.on_stop(grpc_server.health.stop)  # watchers hear it first
        if settings.workers == 1 and settings.tls is None:  # with TLS the dealing parent logs
            _log_address(settings)
        yield
        if grpc_server is not None and forget_grpc is not None:
            forget_grpc()
            await asyncio.to_thread(grpc_server.stop)
        trimmer.stop()
        app.state.teach.stop()
        registry.stop_watching()
        app.state.schedulers.close()
        catalog_service.close()
        telemetry.process_stopped()

    app = ServingApp(
        title="imgclass",
        version=__version__,
        summary="Image classification and visual similarity over HTTP, served with onnxruntime.",
        lifespan=lifespan,
        # /docs is our own page over a local Swagger UI (app/api/api_docs.py); no ReDoc.
        docs_url=None,
        redoc_url=None,
        swagger_ui_oauth2_redirect_url=None,
    )
    app.state.settings = settings
    app.router.redirect_slashes = False  # a trailing slash gets a 404 naming the path without it
    # /readyz and every writer: was the data folder, or a folder of the service's in it,
    # removed or replaced under the server?
    make_service_folders(settings.data_dir, SERVICE_FOLDERS)
    app.state.data_folders = watch_data_folders(settings.data_dir, SERVICE_FOLDERS)
    # Built here, not in the lifespan, so an impossible provider setting fails start-up at once.
    app.state.registry = ModelRegistry(
        settings.models_dir,
        taught_dir=taught_root(settings),
        providers=settings.providers,
        intra_op_threads=serving_threads(settings),
        warmup_runs=settings.warmup_runs,
        enabled=settings.enabled_models,
    )
    app.state.catalogs = CatalogService(settings, app.state.registry)
    app.state.teach = JobRunner(
        JobStore(settings.data_dir / "teach" / "jobs", withdraw_orphan(settings)),
        job_work(app.state.catalogs, app.state.registry, settings),
        max_queued=settings.teach_max_queued,
    )
    app.state.schedulers = Schedulers.from_settings(settings, app.state.registry.serving_names)
    # Never below the largest body a route accepts (a teach zip may be 200 MiB): a budget
    # smaller than that answered such a body "retry in 1 s" forever (a gRPC message too,
    # round 28).
    largest = max(settings.max_request_bytes, settings.teach_max_zip_bytes)
    if settings.grpc_port:
        largest = max(largest, settings.grpc_max_message_bytes)
    app.state.body_budget = BodyBudget(
        max(settings.max_body_bytes_in_flight, largest) if settings.max_body_bytes_in_flight else 0
    )
    app.state.heavy_bodies = HeavyBodyGate()
    app.state.answers = AnswerGate()
    install_error_handlers(app)
    # Added innermost first: headers -> access log -> CORS -> guards -> shedder -> HEAD ->
    # routes.
    app.add_middleware(HeadAsGet)  # innermost: the routes answer HEAD as GET, without a body
    # A full model queue is refused before routing (after the guards).
    app.add_middleware(
        OverloadShedder,
        schedulers=app.state.schedulers,
        pause_ms=settings.overload_pause_ms,
        max_pause_ms=settings.overload_pause_max_ms,
    )
    app.add_middleware(
        GuardMiddleware,
        allowed_hosts=settings.allowed_hosts,
        allowed_origins=settings.cors_origins,
    )
    if settings.cors_origins:
        app.add_middleware(
            ProblemCORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["*"],
            # what a page on an allowed origin may read besides the CORS-safelisted ones
            expose_headers=list(EXPOSED_HEADERS),
        )
    # Outermost: request id, metrics and the access log see every request, refused ones too.
    app.add_middleware(
        RequestObserver,
        known_models=app.state.registry.names,
        access_log=settings.access_log,
    )
    # Around everything: browser-hardening headers on every answer, refusals included.
    app.add_middleware(SecurityHeaders, keyed=settings.keyed)
    app.include_router(health.router)
    # a name that breaks its documented pattern, or a misspelt parameter, is a 422
    strict_query = [Depends(well_formed_names), Depends(known_query_only)]
    app.include_router(access.router, dependencies=strict_query)
    app.include_router(models.router, dependencies=strict_query)
    app.include_router(predict.router, dependencies=strict_query)
    app.include_router(preview.router, dependencies=strict_query)
    app.include_router(catalogs.router, dependencies=strict_query)
    app.include_router(teach.router, dependencies=strict_query)
    app.include_router(v2.router, dependencies=[Depends(no_query)])  # a 400 in the v2 shape
    app.include_router(metrics.router)
    # The predict hot path skips FastAPI's dependency machinery (app/api/predict.py); the
    # FastAPI declaration of the same path stays for the OpenAPI document.
    app.router.routes.insert(0, predict.predict_route)
    openapi.install(app)  # errors documented in the shapes they are sent in

    if (STATIC_DIR / "index.html").is_file():
        api_docs.install(app, STATIC_DIR)  # before /static: it mounts /static/swagger
        assets = PageAssets(STATIC_DIR)
        app.mount("/static", assets, name="static")
        app.router.routes.append(Route("/", assets.index, methods=["GET", "HEAD"]))
        favicon = assets.alias("favicon.svg")  # an SVG, served with its own type
        app.router.routes.append(Route("/favicon.ico", favicon, methods=["GET", "HEAD"]))

    return app
