"""The documented rule of every /v1 parameter that names something (a catalog, an item, a model),
checked in one place for every route: a name that breaks it cannot exist, so it is a 422 that
gives the pattern, on reads and writes alike. Before round 42 `GET /v1/catalogs/Bad-Name` was a
404 ("no catalog"), `DELETE /v1/models/Bad-Name` a 422, `?catalog=Bad` on predict a 404.

The OpenAPI document states the same rules (app/api/openapi.py reads NAME_RULES). /v2 is left
alone: the Open Inference Protocol gives model names no pattern, and a model that does not exist
is its 404.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute

from app.api.query_names import parameters, per_route, raise_after_key_checks
from app.catalog.names import CATALOG_NAME_RE, ITEM_ID_RE
from app.model_refs import VERSION_SEP, short_repr


@dataclass(frozen=True)
class NameRule:
    where: str  # "path" or "query"
    param: str
    prefix: str  # the route paths it applies to ("": every /v1 route)
    pattern: re.Pattern[str]
    max_length: int | None
    what: str  # for the message: "a catalog name"

    def schema(self) -> dict[str, Any]:
        """The rule as JSON Schema keywords for the parameter's string schema."""
        out: dict[str, Any] = {"pattern": self.pattern.pattern}
        if self.max_length is not None:
            out["maxLength"] = self.max_length
        return out


_CATALOG: Final = (
    "a catalog name: 1-64 lowercase letters, digits, '-' or '_', first a letter or digit"
)
_ITEM: Final = "an item id: 1-128 letters, digits, '.', '_', ':' or '-', first a letter or digit"
_MODEL_REF: Final = re.compile(CATALOG_NAME_RE.pattern.removesuffix("$") + f"({VERSION_SEP}.+)?$")
_MODEL: Final = (
    "a model name: 1-64 lowercase letters, digits, '-' or '_', first a letter or digit, "
    f"then {VERSION_SEP}VERSION or nothing"
)

# The first rule whose (where, param) is the parameter's and whose prefix its route's path starts
# with applies.
NAME_RULES: Final = (
    NameRule("path", "name", "/v1/catalogs/", CATALOG_NAME_RE, 64, _CATALOG),
    NameRule("path", "name", "/v1/models/", _MODEL_REF, None, _MODEL),
    NameRule("query", "catalog", "", CATALOG_NAME_RE, 64, _CATALOG),
    NameRule("path", "item_id", "", ITEM_ID_RE, 128, _ITEM),
    NameRule("query", "item_id", "", ITEM_ID_RE, 128, _ITEM),
    NameRule("query", "id", "", ITEM_ID_RE, 128, _ITEM),
)


def rule_for(where: str, param: str, route_path: str) -> NameRule | None:
    return next(
        (
            r
            for r in NAME_RULES
            if (r.where, r.param) == (where, param) and route_path.startswith(r.prefix)
        ),
        None,
    )


def rules_of(route_path: str, declared: Iterable[tuple[str, str]]) -> tuple[NameRule, ...]:
    """The rules of the (where, name) parameters a route of `route_path` declares."""
    found = (rule_for(where, name, route_path) for where, name in declared)
    return tuple(r for r in found if r is not None)


_OF_ROUTE: dict[int, tuple[APIRoute, tuple[NameRule, ...]]] = {}


def _route_rules(route: APIRoute) -> tuple[NameRule, ...]:
    """rules_of `route`'s parameters, worked out once per route."""
    return per_route(_OF_ROUTE, route, lambda r: rules_of(r.path, parameters(r.dependant)))


def malformed(
    rules: tuple[NameRule, ...], path_params: Mapping[str, Any], query: Mapping[str, str]
) -> RequestValidationError | None:
    """The 422 for each given name that breaks its rule, or None."""
    errors = []
    for rule in rules:
        value = (path_params if rule.where == "path" else query).get(rule.param)
        if isinstance(value, str) and not rule.pattern.fullmatch(value):
            errors.append(
                {
                    "type": "string_pattern_mismatch",
                    "loc": (rule.where, rule.param),
                    "msg": f"{short_repr(value, 64)} is not {rule.what} (pattern {rule.pattern.pattern})",
                    "input": value[:64],
                }
            )
    return RequestValidationError(errors) if errors else None


async def well_formed_names(request: Request) -> None:
    """The dependency: a 422 for each name that breaks its documented rule, after the route's
    own key check (a keyless request to a keyed route is told about the key, not the name)."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return
    exc = malformed(_route_rules(route), request.path_params, request.query_params)
    if exc is not None:
        await raise_after_key_checks(request, route, exc)
