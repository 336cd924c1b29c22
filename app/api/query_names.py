"""Query parameters a /v1 route does not take are a 422, not ignored; whole numbers are digits.

FastAPI ignores a query parameter it was not told about, so a misspelt `?lable=shoe` on an
items upload stored the item unlabelled and `?topk=1` answered five labels, both with a 200.
Routers take `known_query_only` as a dependency; it compares the request's parameter names with
those the route (and its dependencies) declares. The predict hot path (app.api.predict) checks
its own through PredictQuery. A request the route's own key check refuses gets that 401 first:
included routers' dependencies run before the route's, so a keyed server answered a keyless
`GET /v1/models?x=1` with a 422 listing the parameters (round 41). /v2 takes none (`no_query`:
a 400 in the protocol's shape; round 42).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, Final, NoReturn, TypeVar

from fastapi import Request
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BeforeValidator

from app.api.deps import require_read_key, require_write_key
from app.numtext import ascii_uint

_KEY_CHECKS: Final = (require_read_key, require_write_key)


def parameters(dependant: Dependant) -> Iterator[tuple[str, str]]:
    """("path" or "query", name) of each parameter `dependant` and its dependencies read."""
    yield from (("path", p.alias) for p in dependant.path_params)
    yield from (("query", p.alias) for p in dependant.query_params)
    for sub in dependant.dependencies:
        yield from parameters(sub)


T = TypeVar("T")


def per_route(
    cache: dict[int, tuple[APIRoute, T]], route: APIRoute, make: Callable[[APIRoute], T]
) -> T:
    """`make(route)`, worked out once per route (APIRoute is not hashable: kept by identity,
    with the route itself to pin its id; two methods of one path are two routes)."""
    hit = cache.get(id(route))
    if hit is None or hit[0] is not route:
        hit = cache[id(route)] = (route, make(route))
    return hit[1]


_DECLARED: dict[int, tuple[APIRoute, frozenset[str]]] = {}


def _query_names(route: APIRoute) -> frozenset[str]:
    return frozenset(name for where, name in parameters(route.dependant) if where == "query")


def declared(route: APIRoute) -> frozenset[str]:
    """The query parameter names `route` reads."""
    return per_route(_DECLARED, route, _query_names)


def unknown_query_error(
    unknown: Sequence[tuple[str, str]], known: frozenset[str]
) -> RequestValidationError:
    takes = ", ".join(sorted(known)) or "no query parameters"
    return RequestValidationError(
        [
            {
                "type": "extra_forbidden",
                "loc": ("query", name[:64]),
                "msg": f"not a parameter of this route; it takes {takes}",
                "input": value[:64],
            }
            for name, value in unknown[:5]
        ]
    )


async def known_query_only(request: Request) -> None:
    """Raise a 422 naming each query parameter the matched route does not declare."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute) or not request.query_params:
        return
    known = declared(route)
    unknown = [(k, v) for k, v in request.query_params.multi_items() if k not in known]
    if unknown:
        await raise_after_key_checks(request, route, unknown_query_error(unknown, known))


async def raise_after_key_checks(request: Request, route: APIRoute, exc: Exception) -> NoReturn:
    """Raise `exc`, but first the 401 the route's own key check would give."""
    settings = request.app.state.settings
    for check in _key_checks(route.dependant):
        await check(request, settings)
    raise exc


async def no_query(request: Request) -> None:
    """For /v2: the Open Inference Protocol defines no query parameter, and neither tritonclient
    (unless its caller passes `query_params`) nor the KServe SDK sends one, so one is a client's
    mistake: a 400 naming it (RequestValidationError, rendered so by app.api.v2), after the key
    check. Routes outside the document (the catch-all's 404 and 405) are not checked."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute) or not route.include_in_schema or not request.query_params:
        return
    exc = unknown_query_error(request.query_params.multi_items(), frozenset())
    await raise_after_key_checks(request, route, exc)


def _key_checks(dependant: Dependant) -> Iterator[Callable[..., Any]]:
    for sub in dependant.dependencies:
        if sub.call in _KEY_CHECKS:
            yield sub.call
        yield from _key_checks(sub)


def _digits(value: object) -> object:
    """A query integer as text: 1-18 ASCII digits and nothing else. pydantic's lax parsing read
    `1_0` as 10 and took `1.0`, `+1` and ` 1` (round 26)."""
    if isinstance(value, str):
        number = ascii_uint(value)
        if number is None:
            raise ValueError("must be a whole number written with the digits 0-9 only")
        return number
    return value


# After Query(...) in an Annotated query parameter (its bounds stay in the OpenAPI schema).
DIGITS: Final = BeforeValidator(_digits)
