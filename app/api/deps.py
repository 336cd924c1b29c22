"""Annotated dependencies shared by the routers."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request

from app.errors import Unauthorized
from app.registry import ModelRegistry
from app.settings import Settings


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_registry(request: Request) -> ModelRegistry:
    registry: ModelRegistry = request.app.state.registry
    return registry


SettingsDep = Annotated[Settings, Depends(get_settings)]
RegistryDep = Annotated[ModelRegistry, Depends(get_registry)]


def _presented_key(request: Request) -> str | None:
    key = request.headers.get("x-api-key")
    if key:
        return key
    auth = request.headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() == "bearer" and token:
        return token.strip()
    return None


def _check_key(request: Request, settings: Settings) -> None:
    if settings.api_key is None:
        return
    presented = _presented_key(request)
    expected = settings.api_key.get_secret_value()
    if presented is None or not hmac.compare_digest(presented.encode(), expected.encode()):
        raise Unauthorized(
            "This endpoint needs the API key: send it as 'X-API-Key: <key>' "
            "or 'Authorization: Bearer <key>'."
        )


def require_write_key(request: Request, settings: SettingsDep) -> None:
    """Write endpoints need the API key whenever one is configured."""
    _check_key(request, settings)


def require_read_key(request: Request, settings: SettingsDep) -> None:
    """Read endpoints need the key only when api_key_for_reads is set."""
    if settings.api_key_for_reads:
        _check_key(request, settings)


WriteAuth = Depends(require_write_key)
ReadAuth = Depends(require_read_key)
