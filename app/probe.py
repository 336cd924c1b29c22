"""`python -m app.probe`: the container's health check. Exit 0 when this machine's server says
ready (GET /readyz 200), else 1; over HTTPS when IMGCLASS_TLS_CERTFILE is set.

Standard library only (it runs every 15 s in the container). The certificate is not checked:
the probe talks to 127.0.0.1, which the certificate, made for the service's public name,
does not name.
"""

from __future__ import annotations

import os
import ssl
import sys
import urllib.error
import urllib.request


def ready(timeout_s: float = 4.0) -> bool:
    try:  # read as the Settings read it (" 8000 ", "+8000" and "8_000" are 8000)
        port = int(os.environ.get("IMGCLASS_PORT", "8000"))
    except ValueError:
        return False  # the server would not have started either
    tls = bool(os.environ.get("IMGCLASS_TLS_CERTFILE", "").strip())  # empty: no TLS
    url = f"{'https' if tls else 'http'}://127.0.0.1:{port}/readyz"
    context = None
    if tls:
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE  # see above
    try:
        with urllib.request.urlopen(url, timeout=timeout_s, context=context) as answer:
            return bool(answer.status == 200)
    except (OSError, urllib.error.URLError):  # refused, 503 (HTTPError), timeout, TLS
        return False


if __name__ == "__main__":
    sys.exit(0 if ready() else 1)
