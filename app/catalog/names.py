"""Catalog and item name patterns, apart from app.catalog.types so that Settings can check a
name without importing numpy, onnxruntime and the rest (the dealing parent imports Settings:
with those imports it held 33 MiB more)."""

from __future__ import annotations

import re
from typing import Final

CATALOG_NAME_RE: Final = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
ITEM_ID_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
