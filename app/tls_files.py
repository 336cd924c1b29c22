"""The TLS certificate and key files, and the pass phrase of an encrypted key.

The pass phrase comes from a file (`IMGCLASS_TLS_KEY_PASSWORD_FILE`: a Docker or Kubernetes
secret), not from an environment variable, which `docker inspect` and /proc/<pid>/environ show.
It is read when needed, never logged, and only its first line counts (a secret written with a
trailing newline works)."""

from __future__ import annotations

import contextlib
import os
import ssl
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from app.errors import ConfigurationError
from app.fsutil import read_small_file

PASSWORD_SETTING: Final = "IMGCLASS_TLS_KEY_PASSWORD_FILE"
_MAX_PASSWORD_FILE: Final = 4096  # bytes: a pass phrase, not a misplaced key or log file
_MAX_PASSWORD: Final = 1023  # OpenSSL's pass phrase callback takes at most 1,024 bytes


@dataclass(frozen=True)
class TlsFiles:
    """A PEM certificate (chain), its private key and, for an encrypted key, the file holding
    its pass phrase."""

    cert: str
    key: str
    password_file: str | None = None

    def password(self) -> str | None:
        """The key's pass phrase, or None when no file is set. ConfigurationError when the
        file cannot be read, is not a regular file (a FIFO would block start-up, and it is read
        once per process), is too large, empty, not UTF-8 text or longer than OpenSSL takes."""
        if self.password_file is None:
            return None
        where = f"{PASSWORD_SETTING}={self.password_file}"
        raw, _ = read_small_file(self.password_file, _MAX_PASSWORD_FILE, where)
        if len(raw) > _MAX_PASSWORD_FILE:
            raise ConfigurationError(
                f"{where} is over {_MAX_PASSWORD_FILE} bytes: it should hold the pass phrase only"
            )
        line = raw.split(b"\n", 1)[0].removesuffix(b"\r")
        if not line:
            raise ConfigurationError(f"{where}: its first line (the pass phrase) is empty")
        if len(line) > _MAX_PASSWORD:
            raise ConfigurationError(f"{where}: the pass phrase is over {_MAX_PASSWORD} bytes")
        try:
            return line.decode("utf-8")
        except UnicodeDecodeError:
            raise ConfigurationError(f"{where}: the pass phrase is not UTF-8 text") from None

    def key_pem(self) -> bytes:
        """The private key as unencrypted PEM, for gRPC (BoringSSL takes no pass phrase):
        decrypted in memory, never written anywhere. ConfigurationError when the pass phrase
        does not open it."""
        data = Path(self.key).read_bytes()
        password = self.password()
        if password is None:
            return data
        from cryptography.hazmat.primitives import serialization

        try:
            key = serialization.load_pem_private_key(data, password.encode())
        except TypeError:  # the key is not encrypted: the pass phrase is not needed
            return data
        except ValueError as exc:
            raise ConfigurationError(
                f"IMGCLASS_TLS_KEYFILE={self.key} cannot be opened with the pass phrase in "
                f"{PASSWORD_SETTING} for gRPC: {exc}"
            ) from None
        return key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


def _unreadable(tls: TlsFiles) -> str | None:
    """Which of the two files this process cannot open, and as whom: 'Permission denied'
    alone sent an operator guessing (an openssl key is 0600, its owner not the server's user,
    uid 10001 in the container image; round 42)."""
    for setting, path in (("IMGCLASS_TLS_CERTFILE", tls.cert), ("IMGCLASS_TLS_KEYFILE", tls.key)):
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            if isinstance(exc, PermissionError):
                try:
                    st = os.stat(path)
                    whose = f" (owner uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):04o})"
                except OSError:
                    whose = ""
                return (
                    f"{setting}={path} cannot be read by this server's user, uid {os.getuid()}"
                    f"{whose}: make it readable by that user (e.g. chown {os.getuid()} or "
                    "chmod 0640 with a group it is in)"
                )
            return f"{setting}={path}: {exc.strerror}"
    return None


def check_tls(tls: TlsFiles | None) -> None:
    """Before any worker starts: the certificate and key load and belong together, and an
    encrypted key opens with its pass phrase, else ConfigurationError (each worker would fail
    alike, with a traceback)."""
    if tls is None:
        return
    password = tls.password()
    pair = f"IMGCLASS_TLS_CERTFILE={tls.cert} with IMGCLASS_TLS_KEYFILE={tls.key}"
    try:
        # never OpenSSL's own prompt: without a pass phrase file an encrypted key fails here,
        # where OpenSSL would otherwise ask for it on a terminal and wait (fuzz round 22)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(tls.cert, tls.key, password=lambda: (password or "").encode())
    except (OSError, ssl.SSLError) as exc:
        reason = _unreadable(tls) or getattr(exc, "strerror", None) or str(exc)
        with contextlib.suppress(OSError), open(tls.key, "rb") as key:
            if b"ENCRYPTED" in key.read(1 << 16):
                reason = (
                    "the key is encrypted: set IMGCLASS_TLS_KEY_PASSWORD_FILE to a file holding "
                    "its pass phrase, or give it unencrypted (openssl pkey -in KEY)"
                    if password is None
                    else f"the pass phrase in {PASSWORD_SETTING} does not open the key"
                )
        raise ConfigurationError(f"cannot use {pair}: {reason}") from None
