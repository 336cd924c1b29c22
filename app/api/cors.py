"""Starlette's CORS middleware with a refused preflight answered as problem+json (Starlette
sends 'Disallowed CORS origin' as text/plain)."""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response

from app.api.problems import problem_response


class ProblemCORSMiddleware(CORSMiddleware):
    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code != 400:
            return response
        what = bytes(response.body).decode("utf-8", "replace").removeprefix("Disallowed CORS ")
        headers = {
            k: v for k, v in response.headers.items() if k.lower().startswith("access-control-")
        }
        headers["Vary"] = "Origin"
        return problem_response(
            400,
            "CORS preflight refused",
            f"This cross-origin request's {what} is not allowed: origins are the ones in "
            "IMGCLASS_CORS_ORIGINS; methods GET, POST and DELETE.",
            "cors-preflight-refused",
            headers=headers,
        )
