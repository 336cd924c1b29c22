"""/docs: Swagger UI from this server's own copy, not a CDN, under the page's strict policy.

FastAPI's /docs and /redoc loaded Swagger UI and ReDoc from cdn.jsdelivr.net (and a favicon from
fastapi.tiangolo.com) and ran inline code: blank on a machine without internet access, and the
only answers that needed a looser Content-Security-Policy. Now /docs is app/static/api-docs.html,
whose start-up code is a file (app/static/api-docs.js), and Swagger UI's script and style sheet
come from the `fastapi-offline` package's copy (Swagger UI 5) at /static/swagger/. Not
`swagger-ui-bundle`: its Swagger UI 4.15 cannot show FastAPI's OpenAPI 3.1 document ("Unable to
render this definition"). /redoc is gone: one docs page is enough, and a request for it gets
the 404 that names /docs.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from fastapi import FastAPI
from starlette.routing import Mount, Route

from app.api.page_assets import PageAssets

SWAGGER_PREFIX = "/static/swagger"
# The two files the page loads; the package's others (ReDoc, a favicon) are not served.
SWAGGER_FILES = frozenset({"swagger-ui-bundle.js", "swagger-ui.css"})


def swagger_ui_dir() -> Path:
    """The folder of Swagger UI's files inside the installed fastapi-offline package (read as
    files only: nothing of that package is imported)."""
    spec = importlib.util.find_spec("fastapi_offline")
    if spec is None or spec.origin is None:
        raise RuntimeError(
            "the fastapi-offline package (Swagger UI for /docs) is missing: run scripts/install"
        )
    folder = Path(spec.origin).parent / "static"
    if not all((folder / name).is_file() for name in SWAGGER_FILES):
        raise RuntimeError(f"no Swagger UI files in {folder}: reinstall fastapi-offline")
    return folder


def install(app: FastAPI, static_dir: Path) -> None:
    """Route /docs and mount Swagger UI's files; call before the page's own /static mount."""
    assets = PageAssets(static_dir, index="api-docs.html")
    swagger = PageAssets(swagger_ui_dir(), only=SWAGGER_FILES)
    app.router.routes.append(Mount(SWAGGER_PREFIX, swagger, name="swagger"))
    app.router.routes.append(Route("/docs", assets.index, methods=["GET", "HEAD"]))
