"""Body parsing cost: app.api.forms.read_form (streaming, limits checked per chunk) against
Starlette's request.form on the same in-memory multipart body (one 90 KB file in 64 KiB
chunks, as uvicorn delivers them). Prints microseconds per parse and the ratio.

Usage: .venv/bin/python bench/form_parsing.py [N]
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from typing import Any

from starlette.requests import Request

from app.api.forms import BodyLimits, read_form

BOUNDARY = b"xyzBOUNDARY"
PAYLOAD = os.urandom(90_000)
BODY = (
    b"--" + BOUNDARY + b'\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n'
    b"Content-Type: image/jpeg\r\n\r\n" + PAYLOAD + b"\r\n--" + BOUNDARY + b"--\r\n"
)
CHUNKS = [BODY[i : i + 65536] for i in range(0, len(BODY), 65536)]
LIMITS = BodyLimits(total=32 << 20, file_bytes=20 << 20, files=32)


def make_request() -> Request:
    chunks = iter(CHUNKS)

    async def receive() -> dict[str, Any]:
        chunk = next(chunks, None)
        return {"type": "http.request", "body": chunk or b"", "more_body": chunk is not None}

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/",
        "query_string": b"",
        "state": {},
        "headers": [
            (b"content-type", b"multipart/form-data; boundary=" + BOUNDARY),
            (b"content-length", str(len(BODY)).encode()),
        ],
    }
    return Request(scope, receive)


async def ours(n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        form = await read_form(make_request(), LIMITS)
        assert len(form.files[0].data) == len(PAYLOAD)
    return (time.perf_counter() - t0) / n


async def starlette(n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        form = await make_request().form(max_files=32)
        upload: Any = form["file"]
        assert len(await upload.read()) == len(PAYLOAD)
        await form.close()
    return (time.perf_counter() - t0) / n


async def main(n: int) -> None:
    await ours(50)
    await starlette(50)
    a, b = await ours(n), await starlette(n)
    print(f"| parser | us per parse (90 KB file, n={n}) |\n|---|---|")
    print(
        f"| app.api.forms.read_form | {a * 1e6:.0f} |\n| Starlette request.form | {b * 1e6:.0f} |"
    )
    print(f"ratio ours / Starlette: {a / b:.2f}")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000))
