"""Starlette's CORS middleware with a refused preflight answered as problem+json (Starlette
sends 'Disallowed CORS origin' as text/plain)."""

from __future__ import annotations

from typing import Final

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response

from app.api.problems import problem_response

# Answer headers a page on an allowed origin may read, besides the CORS-safelisted ones: where
# a created thing or a job is, when to retry, validators and ranges, the request id, the inference
# protocol's binary header length, a download's file name (round 26: none could be read).
EXPOSED_HEADERS: Final = (
    "Location",
    "Retry-After",
    "ETag",
    "Content-Range",
    "Accept-Ranges",
    "Content-Disposition",
    "X-Request-Id",
    "Inference-Header-Content-Length",
    "Allow",
    "X-Image-Format",  # POST /v1/preview
    "X-Image-Size",
)


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
