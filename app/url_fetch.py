"""Fetch an image by URL without becoming an SSRF proxy.

Every hop (the URL and each redirect) is checked the same way: scheme (https unless http is
allowed), no credentials in the URL, the host allow-list, then DNS, and every address the
name resolves to must be public (not private, loopback, link-local - cloud metadata lives at
169.254.169.254 -, multicast, reserved, shared or unspecified; IPv4-mapped IPv6 is judged as
the IPv4 it carries). The connection goes to the address that was checked (the Host header
and TLS name stay the URL's), so a second DNS answer cannot swap in another target. Bytes and
the whole fetch's time are capped. Stdlib only; blocking (run it in a worker thread).
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Final
from urllib.parse import quote, urljoin, urlsplit

from app.errors import PayloadTooLarge, ServiceError
from app.numtext import ascii_uint

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]
REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})
_CHUNK: Final = 64 * 1024
USER_AGENT: Final = "imgclass-url-fetch/1"


class UrlNotAllowed(ServiceError):
    status: ClassVar[int] = 422
    slug: ClassVar[str] = "url-not-allowed"
    title: ClassVar[str] = "Image URL not allowed"


class UrlFetchFailed(ServiceError):
    status: ClassVar[int] = 422
    slug: ClassVar[str] = "url-fetch-failed"
    title: ClassVar[str] = "Image URL could not be fetched"


@dataclass(frozen=True)
class FetchPolicy:
    enabled: bool = False
    allow_http: bool = False
    allowed_hosts: Sequence[str] = ()  # empty: any public host
    private_allowlist: Sequence[str] = ()  # hosts, IPs or CIDRs exempt from the public rule
    max_bytes: int = 20 * 1024 * 1024
    timeout_s: float = 5.0
    max_redirects: int = 3
    resolver: Resolver | None = field(default=None, compare=False)  # tests and DNS overrides


def system_resolver(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise UrlFetchFailed(f"The image URL's host {host!r} does not resolve.") from exc
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def is_public(ip: IPAddress) -> bool:
    if isinstance(ip, ipaddress.IPv6Address):
        # An IPv4 address inside IPv6 is judged as that IPv4: mapped (::ffff:a.b.c.d) and 6to4
        # (2002:aabb:ccdd::/48, which ipaddress calls global: 2002:7f00:1:: passed the check
        # and a host with a 6to4 route sends it to 127.0.0.1). Deprecated site-local fec0::/10
        # is still routed inside some networks; ipaddress calls it global too.
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is not None:
            return is_public(embedded)
        if ip.is_site_local:
            return False
    return ip.is_global and not ip.is_multicast and not ip.is_reserved


def _host_matches(host: str, patterns: Sequence[str]) -> bool:
    for pattern in patterns:
        p = pattern.strip().lower().rstrip(".")
        if p == host or (p.startswith("*.") and host.endswith(p[1:])):
            return True
    return False


def _exempt(host: str, ip: IPAddress, literal: bool, allowlist: Sequence[str]) -> bool:
    """A non-public address is allowed only for a host named in the allow-list (exact or
    *.suffix), or for an IP-literal URL inside a listed address or CIDR. A name is never
    exempt just because it resolves to a listed address: that is the DNS trick refused here."""
    if _host_matches(host, allowlist):
        return True
    if not literal:
        return False
    for entry in allowlist:
        try:
            if ip in ipaddress.ip_network(entry.strip().strip("[]"), strict=False):
                return True
        except ValueError:
            continue
    return False


@dataclass(frozen=True)
class _Target:
    scheme: str
    host: str  # lower-case, no brackets
    port: int
    path: str  # path + query
    ip: str  # the checked address to connect to


def check_url(url: str, policy: FetchPolicy) -> _Target:
    """Everything that decides whether a URL may be fetched; the address to connect to."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UrlNotAllowed(f"Not a valid URL: {exc}.") from exc
    scheme = parts.scheme.lower()
    allowed = ("https", "http") if policy.allow_http else ("https",)
    if scheme not in allowed:
        raise UrlNotAllowed(
            f"Only {' and '.join(allowed)} image URLs are fetched"
            + ("" if policy.allow_http else " (IMGCLASS_URL_ALLOW_HTTP=true allows http)")
            + f"; got {scheme or 'no scheme'!r}."
        )
    if parts.username is not None or parts.password is not None:
        raise UrlNotAllowed("Image URLs may not carry credentials (user:password@).")
    host = (parts.hostname or "").lower().rstrip(".")
    if not host:
        raise UrlNotAllowed("The image URL has no host.")
    if not host.isascii():  # an internationalised name: its ASCII (IDNA) form goes on the wire
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError as exc:
            raise UrlNotAllowed(f"The image URL's host is not a valid domain name: {exc}.") from exc
    if policy.allowed_hosts and not _host_matches(host, policy.allowed_hosts):
        raise UrlNotAllowed(
            f"The host {host!r} is not in IMGCLASS_URL_ALLOWED_HOSTS; images are fetched only "
            "from the hosts listed there."
        )
    port = port or (443 if scheme == "https" else 80)
    literal = True
    try:
        addresses = [ipaddress.ip_address(host)]
    except ValueError:
        literal = False
        resolve = policy.resolver or system_resolver
        try:
            addresses = [ipaddress.ip_address(a.split("%")[0]) for a in resolve(host, port)]
        except ValueError as exc:
            raise UrlFetchFailed(f"{host!r} resolved to an invalid address.") from exc
    if not addresses:
        raise UrlFetchFailed(f"The image URL's host {host!r} does not resolve.")
    for ip in addresses:
        if not is_public(ip) and not _exempt(host, ip, literal, policy.private_allowlist):
            raise UrlNotAllowed(
                f"The image URL's host {host!r} resolves to {ip}, which is not a public address "
                "(private, loopback, link-local, metadata, multicast or reserved): not fetched."
            )
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return _Target(scheme, host, port, _request_target(path), str(addresses[0]))


# Characters a request target may hold as they are (RFC 3986 reserved and unreserved, and '%' of
# the escapes already there); the rest is percent-encoded as UTF-8, as browsers send it.
_TARGET_SAFE = "/?:@!$&'()*+,;=-._~%[]"


def _request_target(path: str) -> str:
    """The path and query as an ASCII request target: 'café.png' -> 'caf%C3%A9.png'
    (http.client refuses non-ASCII: that was a 500), spaces and controls escaped too."""
    try:
        return quote(path, safe=_TARGET_SAFE)
    except UnicodeEncodeError as exc:  # an unpaired surrogate: not text
        raise UrlNotAllowed("The image URL's path or query is not valid Unicode.") from exc


class _Abortable:
    """Shut the connection's socket down from another thread: every blocked read or write on
    it returns at once (close() alone would not wake a thread blocked in recv)."""

    pinned: socket.socket | None = None  # the connected socket, kept after http.client lets go
    aborted: bool = False

    def abort(self) -> None:
        self.aborted = True
        sock = self.pinned
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class _PinnedHTTP(_Abortable, http.client.HTTPConnection):
    def __init__(self, target: _Target, timeout: float) -> None:
        super().__init__(target.host, target.port, timeout=timeout)
        self._ip = target.ip

    def connect(self) -> None:
        self.sock = self.pinned = socket.create_connection((self._ip, self.port), self.timeout)
        if self.aborted:  # the watchdog fired while connecting
            self.abort()


class _PinnedHTTPS(_Abortable, http.client.HTTPSConnection):
    def __init__(self, target: _Target, timeout: float, context: ssl.SSLContext) -> None:
        super().__init__(target.host, target.port, timeout=timeout, context=context)
        self._ip = target.ip
        self._ctx = context

    def connect(self) -> None:
        sock = self.pinned = socket.create_connection((self._ip, self.port), self.timeout)
        if self.aborted:
            self.abort()
        # Certificate and SNI are checked against the URL's host name, not the address.
        self.sock = self.pinned = self._ctx.wrap_socket(sock, server_hostname=self.host)


def _remaining(deadline: float, url: str) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise UrlFetchFailed(f"Fetching {url} took longer than the limit; not used.")
    return left


def fetch_image(
    url: str,
    policy: FetchPolicy,
    *,
    deadline: float | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> bytes:
    """The body of `url` (after at most policy.max_redirects checked redirects)."""
    if not policy.enabled:
        raise UrlNotAllowed(
            "Image URLs are not fetched by this server (IMGCLASS_URL_FETCH_ENABLED=false); "
            "send the image bytes (multipart, raw body or base64 'b64')."
        )
    deadline = deadline if deadline is not None else time.monotonic() + policy.timeout_s
    context = ssl_context or ssl.create_default_context()
    current = url
    for _hop in range(policy.max_redirects + 1):
        target = check_url(current, policy)
        timeout = _remaining(deadline, url)
        conn: _PinnedHTTP | _PinnedHTTPS = (
            _PinnedHTTPS(target, timeout, context)
            if target.scheme == "https"
            else _PinnedHTTP(target, timeout)
        )
        # A socket timeout bounds each read, not the whole exchange: a server that drips one
        # header line (or one '100 Continue') a second would hold the fetch for minutes. The
        # watchdog shuts the connection down when the fetch's time is up, wherever it is.
        watchdog = threading.Timer(timeout, conn.abort)
        watchdog.daemon = True
        watchdog.start()
        try:
            got = _exchange(conn, target, current, policy.max_bytes, deadline, url)
            if conn.aborted:  # a body cut short by the watchdog reads as a short body
                raise TimeoutError
        except (OSError, http.client.HTTPException) as exc:
            if isinstance(exc, TimeoutError) or time.monotonic() >= deadline:
                raise UrlFetchFailed(
                    f"Fetching {url} took longer than the limit; not used."
                ) from exc
            raise UrlFetchFailed(f"Fetching {current} failed: {exc.__class__.__name__}.") from exc
        finally:
            watchdog.cancel()
            conn.close()
        if isinstance(got, bytes):  # the body
            return got
        try:  # a redirect's Location
            current = urljoin(current, got)
        except ValueError as exc:
            raise UrlFetchFailed(f"{current} redirected to an invalid URL: {exc}.") from exc
    raise UrlFetchFailed(f"{url} redirected more than {policy.max_redirects} times.")


def _exchange(
    conn: _PinnedHTTP | _PinnedHTTPS,
    target: _Target,
    current: str,
    limit: int,
    deadline: float,
    url: str,
) -> bytes | str:
    """One request: the body (bytes), or where it redirects to (str)."""
    conn.request(
        "GET",
        target.path,
        headers={"User-Agent": USER_AGENT, "Accept": "image/*", "Accept-Encoding": "identity"},
    )
    response = conn.getresponse()
    if response.status in REDIRECTS:
        location = response.getheader("Location")
        if not location:
            raise UrlFetchFailed(f"{current} redirected without a Location.")
        try:  # http.client reads header bytes as Latin-1; servers send UTF-8 there
            return location.encode("latin-1").decode("utf-8")
        except UnicodeError:
            return location
    if response.status != 200:
        raise UrlFetchFailed(f"{current} answered HTTP {response.status}.")
    return _read_capped(response, limit, deadline, conn.pinned, url)


def _read_capped(
    response: http.client.HTTPResponse,
    limit: int,
    deadline: float,
    sock: socket.socket | None,
    url: str,
) -> bytes:
    length = ascii_uint((response.getheader("Content-Length") or "").strip())
    if length is not None and length > limit:
        raise PayloadTooLarge(
            f"The image at the URL is {length:,} bytes; the limit is {limit:,}.",
            limit_bytes=limit,
        )
    chunks: list[bytes] = []
    total = 0
    while True:
        # http.client hands the socket to the response (conn.sock may be None by now); the
        # timeout of each read is what is left of the whole fetch's time.
        if sock is not None:
            sock.settimeout(_remaining(deadline, url))
        chunk = response.read1(_CHUNK)
        if not chunk:
            return b"".join(chunks)
        total += len(chunk)
        if total > limit:
            raise PayloadTooLarge(
                f"The image at the URL is larger than the limit of {limit:,} bytes.",
                limit_bytes=limit,
            )
        chunks.append(chunk)
