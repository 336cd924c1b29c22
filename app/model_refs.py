"""How clients name a served model: `name` (a taught model's newest version) or `name@version`,
and the 404 that says what is served when a name matches nothing. No state: the registry
(app.registry) looks names up and hands what it holds to `missing_model`."""

from __future__ import annotations

from collections.abc import Callable, Collection

from app.errors import ModelNotFound
from app.loaded import version_key

VERSION_SEP = "@"
MAX_NAMES_SHOWN = 20  # a 404 names at most this many served models


def split_ref(name: str) -> tuple[str, str]:
    """`name` or `name@version` -> (name, version or ""); `name@` names nothing (404), never
    "every version" or "the newest"."""
    base, sep, version = name.partition(VERSION_SEP)
    if sep and not version:
        raise ModelNotFound(
            f"{short_repr(name)} has an empty version: use {short_repr(base)} for the newest "
            f"version or 'NAME{VERSION_SEP}N' for version N."
        )
    return base, version


def short_repr(name: str, limit: int = 100) -> str:
    """repr of a client-given name, cut to `limit` characters (a 10,000-character name made a
    20 KB 404)."""
    return repr(name) if len(name) <= limit else repr(name[:limit]) + f"... ({len(name):,} chars)"


def missing_model(
    name: str,
    *,
    shipped_version: str | None,
    versions: Collection[str],
    served: Callable[[], list[str]],
) -> ModelNotFound:
    """The 404 for a name no served model answers to (neither loading nor refused): the
    versions there are when only the version is wrong (`shipped_version` of a shipped model of
    that name, `versions` of a taught one), else the names `served()` lists, the first
    MAX_NAMES_SHOWN of them."""
    base, version = split_ref(name)
    if version and shipped_version is not None and not versions:
        return ModelNotFound(
            f"Model {base!r} has no version {short_repr(version)}. Versions: {shipped_version}."
        )
    if version and versions:
        return ModelNotFound(
            f"Model {base!r} has no version {short_repr(version)}. "
            f"Versions: {', '.join(sorted(versions, key=version_key))}."
        )
    names = served()
    shown = ", ".join(names[:MAX_NAMES_SHOWN]) or "none"
    if len(names) > MAX_NAMES_SHOWN:
        shown += f" and {len(names) - MAX_NAMES_SHOWN} more (GET /v1/models lists them)"
    return ModelNotFound(f"No model named {short_repr(name)}. Available: {shown}.")


def refused_model(name: str, refused_versions: list[str]) -> ModelNotFound:
    """`name` exists, but was refused (or, a taught name, every version of it was)."""
    if not refused_versions:
        return ModelNotFound(
            f"Model {name!r} exists but was refused when loading; the server log says why."
        )
    return ModelNotFound(
        f"Model {name!r} exists but every version of it was refused when loading "
        f"({', '.join(refused_versions)}); the server log says why. A taught model is "
        "refused while the build of the backbone it was taught on is not served: it is "
        "served again once that build is back; if the backbone was replaced by another "
        "build, teach it again."
    )
