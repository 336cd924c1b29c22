"""Annotated dependencies shared by the routers. All `async def`: FastAPI runs sync
dependencies in the thread pool, where they would queue behind decodes (probes included)."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Sequence
from typing import Annotated

from fastapi import Depends, Request

from app.api.guards import is_loopback
from app.api_keys import KEY_SPACE, key_file, matches
from app.catalog.service import CatalogService
from app.errors import Unauthorized
from app.registry import ModelRegistry
from app.settings import Settings

_OWS = re.compile(r"[ \t]+")  # HTTP's optional whitespace: spaces and tabs, nothing else


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_registry(request: Request) -> ModelRegistry:
    registry: ModelRegistry = request.app.state.registry
    return registry


async def get_catalogs(request: Request) -> CatalogService:
    service: CatalogService = request.app.state.catalogs
    return service


SettingsDep = Annotated[Settings, Depends(get_settings)]
RegistryDep = Annotated[ModelRegistry, Depends(get_registry)]
CatalogsDep = Annotated[CatalogService, Depends(get_catalogs)]


def presented_key(values: Callable[[str], Sequence[str]]) -> str | None:
    """The API key a request or call presents: `x-api-key`, else `authorization: Bearer <key>`
    (`values` lists a lower-case header's or gRPC metadata name's values). A key header sent
    more than once presents no key on either door: proxies and clients disagree on which copy
    counts (HTTP frameworks read the first, gRPC maps the last)."""
    keys = values("x-api-key")
    auths = values("authorization")
    if len(keys) > 1 or len(auths) > 1:
        return None
    # surrounding spaces and tabs are not part of a value (HTTP strips them; gRPC metadata did
    # not). Only those: values arrive decoded as Latin-1, where str.strip() also took \xa0 and
    # \x85, the last byte of UTF-8 letters such as 'à' (round 27: such keys never matched)
    key = keys[0].strip(KEY_SPACE) if keys else ""
    if key:
        return key
    parts = _OWS.split((auths[0] if auths else "").strip(KEY_SPACE), maxsplit=1)  # tabs too
    if len(parts) == 2 and parts[0].lower() == "bearer":
        return parts[1]
    return None


def accepted_keys(settings: Settings) -> tuple[bytes, ...]:
    """The keys the server accepts now, as UTF-8 bytes (none when it has none)."""
    if settings.api_key_file is not None:
        return key_file(str(settings.api_key_file)).keys()
    if settings.api_key is not None:
        return (settings.api_key.get_secret_value().encode("utf-8"),)
    return ()


def key_matches(presented: bytes | None, settings: Settings) -> bool:
    """Whether `presented` (the bytes the client sent) is an accepted API key (never true
    when none is set), compared in constant time."""
    if presented is None:
        return False
    return matches(presented, accepted_keys(settings))


def key_holder(request: Request, settings: Settings) -> bool:
    """Whether the request presents the configured API key (never true when none is set)."""
    presented = presented_key(request.headers.getlist)
    # Header values arrive decoded as Latin-1: back to the bytes the client sent (a non-ASCII
    # key sent by curl or a browser is UTF-8 on the wire).
    return key_matches(None if presented is None else presented.encode("latin-1"), settings)


def arrived_beyond_loopback(request: Request) -> bool:
    """The connection came in on a non-loopback local address (uvicorn started with
    --host 0.0.0.0 whatever IMGCLASS_HOST says, or a container's own interface)."""
    server = request.scope.get("server")
    if not server or not isinstance(server[0], str):
        return False  # a Unix socket
    try:
        return not ipaddress.ip_address(server[0].strip("[]")).is_loopback
    except ValueError:
        return False  # not an address (an in-process test client)


def writes_locked(settings: Settings, request: Request | None = None) -> bool:
    """No key, yet reachable beyond loopback: anyone on the network could write."""
    if settings.keyed or settings.allow_unauthenticated_writes:
        return False
    if settings.published_on is not None:  # a container's port, as the host publishes it
        return not is_loopback(settings.published_on)
    return not is_loopback(settings.host) or (
        request is not None and arrived_beyond_loopback(request)
    )


def open_writes_warning(settings: Settings) -> str | None:
    """The start-up warning for writes that need no key on a server reachable beyond loopback
    (IMGCLASS_ALLOW_UNAUTHENTICATED_WRITES=true), else None: nothing said so before."""
    where = settings.published_on if settings.published_on is not None else settings.host
    if settings.keyed or not settings.allow_unauthenticated_writes or is_loopback(where):
        return None
    return (
        f"writes need no API key and this server is reachable on {where}: anyone who can "
        "reach the port can add, change and delete catalogs and models; set IMGCLASS_API_KEY "
        "(and IMGCLASS_ALLOW_UNAUTHENTICATED_WRITES=false)"
    )


def key_required(settings: Settings, *, write: bool) -> bool:
    """What the browser page must know: does this kind of request need a key?"""
    if not settings.keyed:
        return False
    return write or settings.api_key_for_reads


def _check_key(request: Request, settings: Settings) -> None:
    if not settings.keyed or key_holder(request, settings):
        return
    raise Unauthorized(
        "This endpoint needs the API key: send it once, as 'X-API-Key: <key>' "
        "or 'Authorization: Bearer <key>'."
    )


async def require_write_key(request: Request, settings: SettingsDep) -> None:
    """Write endpoints need the API key whenever one is configured; without one, a server
    listening beyond loopback refuses writes unless explicitly opted out."""
    if writes_locked(settings, request):
        raise Unauthorized(
            "Writes are disabled: this server is reachable beyond loopback and has no API "
            "key. Set IMGCLASS_API_KEY=<a long random secret> (or IMGCLASS_API_KEY_FILE) and "
            "send it as "
            "'X-API-Key', or set IMGCLASS_ALLOW_UNAUTHENTICATED_WRITES=true to accept writes "
            "from anyone who can reach the port."
            + (
                f" (The port is published on {settings.published_on}: IMGCLASS_BIND.)"
                if settings.published_on is not None
                else ""
            )
        )
    _check_key(request, settings)


async def require_read_key(request: Request, settings: SettingsDep) -> None:
    """Read endpoints need the key only when api_key_for_reads is set."""
    if settings.api_key_for_reads:
        _check_key(request, settings)


WriteAuth = Depends(require_write_key)
ReadAuth = Depends(require_read_key)
