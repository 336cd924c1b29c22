"""The API keys a server accepts: `IMGCLASS_API_KEY` (one key), or `IMGCLASS_API_KEY_FILE`
(a Docker or Kubernetes secret: one key per line, blank lines and lines starting with `#`
skipped), which is read again within RECHECK_S of any change, so keys rotate without a
restart: add the new key on a line of its own, move the clients over, delete the old line.

A key file that cannot be read, holds no key or a line that cannot be a key stops start-up
with one line. Changed later into something that cannot be used (half written, deleted while a
secret is remounted), the keys last read stay in force and a warning is logged once per change;
a key file never turns into "no key", which would open writes to anyone. Keys are compared in
constant time, every key each time, and never logged: a refused line is named by its number.
"""

from __future__ import annotations

import hmac
import logging
import os
import threading
import time
from typing import Final

from app.errors import ConfigurationError
from app.fsutil import read_small_file

logger = logging.getLogger(__name__)

FILE_SETTING: Final = "IMGCLASS_API_KEY_FILE"
RECHECK_S: Final = 1.0  # the file's identity (inode, size, times) is looked at this often
MAX_FILE_BYTES: Final = 64 * 1024  # keys, not a misplaced log or archive
MAX_KEYS: Final = 100
MAX_KEY_BYTES: Final = 4096  # a header value a proxy still passes
KEY_SPACE: Final = " \t\r"  # what surrounds a key and is not part of it (HTTP's OWS, CR)


def parse_keys(raw: bytes, where: str) -> tuple[bytes, ...]:
    """The keys in a key file's bytes; ConfigurationError saying which line is wrong."""
    if len(raw) > MAX_FILE_BYTES:
        raise ConfigurationError(f"{where} is over {MAX_FILE_BYTES} bytes: it should hold keys")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigurationError(f"{where} is not UTF-8 text") from None
    keys: list[bytes] = []
    # lines end at \n only (\r before it is dropped): str.splitlines also splits at \v, \f,
    # \x1c-\x1e and U+2028, which made "secret\vx" the keys "secret" and "x" (round 27)
    for number, line in enumerate(text.removeprefix("\ufeff").split("\n"), start=1):
        key = line.strip(KEY_SPACE)
        if not key or key.startswith("#"):
            continue
        if any(ord(c) < 32 or ord(c) == 127 for c in key):
            raise ConfigurationError(
                f"{where}: line {number} holds a control character (a header cannot carry it)"
            )
        encoded = key.encode("utf-8")
        if len(encoded) > MAX_KEY_BYTES:
            raise ConfigurationError(f"{where}: line {number} is over {MAX_KEY_BYTES} bytes")
        keys.append(encoded)
    if not keys:
        raise ConfigurationError(f"{where} holds no key (one per line; # starts a comment)")
    if len(keys) > MAX_KEYS:
        raise ConfigurationError(f"{where} holds {len(keys)} keys; at most {MAX_KEYS}")
    return tuple(keys)


def _identity(st: os.stat_result) -> tuple[int, ...]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def read_key_file(path: str) -> tuple[tuple[bytes, ...], tuple[int, ...]]:
    """The file's keys and identity. ConfigurationError when it cannot be read, is not a
    regular file (a FIFO would block) or its content is not keys (`parse_keys`)."""
    where = f"{FILE_SETTING}={path}"
    raw, st = read_small_file(path, MAX_FILE_BYTES, where)
    return parse_keys(raw, where), _identity(st)


class KeyFile:
    """A key file's keys, read again when the file changes (looked at every RECHECK_S). Read
    first on first use; if it cannot be read then (start-up checked it, but a worker starts
    later), no key matches until it can."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._keys: tuple[bytes, ...] = ()
        self._seen: tuple[int, ...] = ()
        self._checked = -RECHECK_S
        self._lock = threading.Lock()

    def keys(self) -> tuple[bytes, ...]:
        now = time.monotonic()
        if now - self._checked < RECHECK_S:
            return self._keys
        with self._lock:
            if now - self._checked >= RECHECK_S:
                self._refresh()
                self._checked = time.monotonic()
            return self._keys

    def _refresh(self) -> None:
        try:
            seen = _identity(os.stat(self.path))
        except OSError as exc:
            seen = (-1, exc.errno or 0)
        if seen == self._seen:
            return
        self._seen = seen
        try:
            self._keys, self._seen = read_key_file(self.path)
        except ConfigurationError as exc:
            logger.warning(
                "API keys: %s; the %d key(s) read before stay in force", exc, len(self._keys)
            )
            return
        logger.info("API keys read again from %s: %d key(s)", FILE_SETTING, len(self._keys))


_files: dict[str, KeyFile] = {}
_files_lock = threading.Lock()


def check_key_file(path: str) -> None:
    """At start-up: ConfigurationError unless the file can be read and holds keys."""
    read_key_file(path)


def key_file(path: str) -> KeyFile:
    """The process's one KeyFile for `path`."""
    with _files_lock:
        found = _files.get(path)
        if found is None:
            found = _files[path] = KeyFile(path)
        return found


def matches(presented: bytes, keys: tuple[bytes, ...]) -> bool:
    """Whether `presented` is one of `keys`, each compared in constant time (all of them,
    so the time says nothing about which one matched or how many there are before it)."""
    found = False
    for key in keys:
        found |= hmac.compare_digest(presented, key)
    return found
