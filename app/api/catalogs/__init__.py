"""Catalog endpoints: named image collections searched by a model's embeddings.

routes.py (catalogs), items.py, search.py; parsing.py reads item descriptions, shaping.py
builds the HTTP shapes and URLs, openapi.py holds the hand-written body documentation.
"""

from __future__ import annotations

from fastapi import APIRouter

from app.api.catalogs import items, routes, search

router = APIRouter()
router.include_router(routes.router)
router.include_router(items.router)
router.include_router(search.router)
