"""`python -m app.probe`: the container's health check. Exit 0 when this machine's server says
ready (GET /readyz 200), else 1; over HTTPS when IMGCLASS_TLS_CERTFILE is set, on the address
IMGCLASS_HOST names (loopback when it names every interface).

Standard library only (it runs every 15 s in the container). The certificate is not checked:
the probe talks to a local address, which the certificate, made for the service's public
name, does not name.
"""

from __future__ import annotations

import os
import ssl
import sys
import urllib.error
import urllib.request


def readyz_url() -> str | None:
    """The URL of this machine's /readyz as the Settings name it, or None when IMGCLASS_PORT
    is not a port (the server would not have started either)."""
    try:  # read as the Settings read it (" 8000 ", "+8000" and "8_000" are 8000)
        port = int(os.environ.get("IMGCLASS_PORT", "8000"))
    except ValueError:
        return None
    tls = bool(os.environ.get("IMGCLASS_TLS_CERTFILE", "").strip())  # empty: no TLS
    host = os.environ.get("IMGCLASS_HOST", "127.0.0.1").strip().strip("[]")
    if host in ("", "0.0.0.0", "::"):  # every interface: loopback is one of them
        host = "127.0.0.1"
    host = f"[{host}]" if ":" in host else host
    return f"{'https' if tls else 'http'}://{host}:{port}/readyz"


def ready(timeout_s: float = 4.0) -> bool:
    url = readyz_url()
    if url is None:
        return False
    context = None
    if url.startswith("https:"):
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE  # see above
    try:
        with urllib.request.urlopen(url, timeout=timeout_s, context=context) as answer:
            return bool(answer.status == 200)
    except (OSError, urllib.error.URLError, ValueError):  # refused, 503, timeout, TLS, URL
        return False


if __name__ == "__main__":
    sys.exit(0 if ready() else 1)
