"""HTTPS and the gRPC binding over TLS (IMGCLASS_TLS_CERTFILE and IMGCLASS_TLS_KEYFILE), the
start-up checks of the pair, and the container's probe (`python -m app.probe`), on a real
server with certificates from a throwaway CA (trustme)."""

from __future__ import annotations

import contextlib
import datetime
import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest

from tests.conftest import DATA, ROOT, free_port, require
from tests.live_server import running_process
from tests.unprivileged import held_to_file_modes

pytestmark = (
    pytest.mark.slow
)  # starts servers with certificates (round 29: the fast subset in 2 min)

trustme = pytest.importorskip("trustme", reason="pip install trustme (the dev extra)")
grpcclient = pytest.importorskip("tritonclient.grpc", reason="pip install tritonclient grpcio")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A CA and a certificate for localhost and 127.0.0.1 (and one of another CA)."""
    folder = tmp_path_factory.mktemp("tls")
    ca, other = trustme.CA(), trustme.CA()
    files = {name: folder / f"{name}.pem" for name in ("ca", "cert", "key", "other_key")}
    ca.cert_pem.write_to_path(str(files["ca"]))
    issued = ca.issue_cert("localhost", "127.0.0.1")
    issued.private_key_pem.write_to_path(str(files["key"]))
    for i, pem in enumerate(issued.cert_chain_pems):
        pem.write_to_path(str(files["cert"]), append=i > 0)
    other.issue_cert("localhost").private_key_pem.write_to_path(str(files["other_key"]))
    # the same key encrypted, and an Ed448 certificate (OpenSSL takes it, gRPC's BoringSSL not)
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed448
    from cryptography.x509.oid import NameOID

    key = serialization.load_pem_private_key(files["key"].read_bytes(), password=None)
    files["encrypted_key"] = folder / "encrypted_key.pem"
    files["encrypted_key"].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    ed_key = ed448.Ed448PrivateKey.generate()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    ed_cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(ed_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(ed_key, None)
    )
    files["ed448_cert"] = folder / "ed448_cert.pem"
    files["ed448_cert"].write_bytes(ed_cert.public_bytes(serialization.Encoding.PEM))
    files["ed448_key"] = folder / "ed448_key.pem"
    files["ed448_key"].write_bytes(
        ed_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return files


def _trusting(pki: dict[str, Path]) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(pki["ca"]))


def _env(pki: dict[str, Path], tmp: Path, **more: str) -> dict[str, str]:
    return {
        **os.environ,
        "IMGCLASS_HOST": "127.0.0.1",
        "IMGCLASS_MODELS_DIR": str(ROOT / "models"),
        "IMGCLASS_ENABLED_MODELS": '["digits"]',
        "IMGCLASS_DATA_DIR": str(tmp / "data"),
        "IMGCLASS_WARMUP_RUNS": "1",
        "IMGCLASS_TLS_CERTFILE": str(pki["cert"]),
        "IMGCLASS_TLS_KEYFILE": str(pki["key"]),
        **more,
    }


def _start(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


def test_a_bad_pair_stops_the_start_with_one_line(pki: dict[str, Path], tmp_path: Path) -> None:
    env = _env(pki, tmp_path)
    del env["IMGCLASS_TLS_KEYFILE"]
    done = _start(env)
    assert done.returncode == 2
    assert (
        "imgclass: not started: set IMGCLASS_TLS_CERTFILE and IMGCLASS_TLS_KEYFILE together"
        in done.stderr
    )
    assert "Traceback" not in done.stderr
    done = _start(_env(pki, tmp_path, IMGCLASS_TLS_KEYFILE=str(pki["other_key"])))
    assert done.returncode == 2 and "cannot use IMGCLASS_TLS_CERTFILE=" in done.stderr
    done = _start(_env(pki, tmp_path, IMGCLASS_TLS_KEYFILE=str(tmp_path / "missing.pem")))
    assert done.returncode == 2 and "No such file or directory" in done.stderr
    # round 22: an encrypted key is refused, not asked for a pass phrase on a terminal
    done = _start(_env(pki, tmp_path, IMGCLASS_TLS_KEYFILE=str(pki["encrypted_key"])))
    assert done.returncode == 2 and "the key is encrypted" in done.stderr
    # round 22: a certificate gRPC's TLS cannot use is refused before any worker starts
    ed448 = {
        "IMGCLASS_TLS_CERTFILE": str(pki["ed448_cert"]),
        "IMGCLASS_TLS_KEYFILE": str(pki["ed448_key"]),
    }
    done = _start(_env(pki, tmp_path, IMGCLASS_GRPC_PORT=str(free_port()), **ed448))
    assert done.returncode == 2 and "gRPC cannot use IMGCLASS_TLS_CERTFILE=" in done.stderr
    assert "Traceback" not in done.stderr
    # an empty certificate variable means no TLS (it was the current folder: "Is a directory")
    env = _env(pki, tmp_path, IMGCLASS_TLS_CERTFILE="", IMGCLASS_TLS_KEYFILE="", IMGCLASS_PORT="x")
    done = _start(env)
    assert done.returncode == 2 and "IMGCLASS_PORT" in done.stderr and "TLS" not in done.stderr
    # other bad settings get the same one line per variable, not a pydantic traceback
    done = _start(_env(pki, tmp_path, IMGCLASS_PORT="eighty"))
    assert done.returncode == 2 and "imgclass: not started: IMGCLASS_PORT: " in done.stderr
    assert "Traceback" not in done.stderr


def test_the_probe_fails_without_a_ready_server() -> None:
    env = {**os.environ, "IMGCLASS_PORT": str(free_port())}
    assert subprocess.run([sys.executable, "-m", "app.probe"], env=env, cwd=ROOT).returncode == 1


@pytest.fixture(scope="module", params=[1, 2], ids=["one-worker", "two-workers"])
def tls_server(
    request: pytest.FixtureRequest, pki: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[int, int]]:
    tmp = tmp_path_factory.mktemp("tls-server")
    with _serving(pki, tmp, IMGCLASS_WORKERS=str(request.param)) as ports:
        yield ports


@contextlib.contextmanager
def _serving(pki: dict[str, Path], tmp: Path, **more: str) -> Iterator[tuple[int, int]]:
    """A server speaking HTTPS and gRPC over TLS: (port, gRPC port)."""
    port, grpc_port = free_port(), free_port()
    env = _env(pki, tmp, IMGCLASS_PORT=str(port), IMGCLASS_GRPC_PORT=str(grpc_port), **more)
    with running_process(
        [sys.executable, "-m", "app"],
        f"https://localhost:{port}/readyz",
        tmp / "server.log",
        90,
        verify=_trusting(pki),
        cwd=ROOT,
        env=env,
    ):
        yield port, grpc_port


@pytest.mark.slow  # two servers of their own
def test_https_and_grpc_over_tls_serve_and_plain_text_does_not(
    tls_server: tuple[int, int], pki: dict[str, Path]
) -> None:
    port, grpc_port = tls_server
    digit = require(DATA / "photos" / "foolbox" / "mnist_00_7.png").read_bytes()
    with httpx.Client(base_url=f"https://localhost:{port}", verify=_trusting(pki)) as https:
        r = https.post("/v1/models/digits/predict", files={"file": ("7.png", digit, "image/png")})
        assert r.status_code == 200 and r.json()["results"][0]["predictions"][0]["label"] == "7"
    # plain HTTP to the HTTPS port is told to use https (it got no answer at all), and the
    # server stays well
    for plain in (httpx.get, lambda url, **kw: httpx.post(url, content=digit, **kw)):
        r = plain(f"http://127.0.0.1:{port}/readyz", timeout=5)
        assert r.status_code == 400 and r.headers["content-type"] == "application/problem+json"
        assert "This port speaks HTTPS" in r.json()["detail"]
    with socket.create_connection(("127.0.0.1", port)) as raw:  # a handshake never finished
        raw.sendall(b"\x16\x03\x01")
        with httpx.Client(verify=_trusting(pki)) as again:
            assert again.get(f"https://localhost:{port}/readyz").status_code == 200
    # gRPC: TLS with the same certificate; a plain-text channel is refused
    client = grpcclient.InferenceServerClient(
        url=f"localhost:{grpc_port}", ssl=True, root_certificates=str(pki["ca"])
    )
    assert client.is_server_ready()
    creds = grpc.ssl_channel_credentials(pki["ca"].read_bytes())
    with grpc.secure_channel(f"localhost:{grpc_port}", creds) as channel:
        check = channel.unary_unary("/grpc.health.v1.Health/Check")
        assert bytes(check(b"", timeout=5)) == b"\x08\x01"
    with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as plain:
        with pytest.raises(grpc.RpcError) as info:
            plain.unary_unary("/grpc.health.v1.Health/Check")(b"", timeout=5)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    # the container's probe speaks HTTPS when the certificate is set
    env = {**os.environ, "IMGCLASS_PORT": str(port), "IMGCLASS_TLS_CERTFILE": str(pki["cert"])}
    assert subprocess.run([sys.executable, "-m", "app.probe"], env=env, cwd=ROOT).returncode == 0
    env.pop("IMGCLASS_TLS_CERTFILE")
    assert subprocess.run([sys.executable, "-m", "app.probe"], env=env, cwd=ROOT).returncode == 1


def test_a_key_pass_phrase_that_does_not_serve_stops_the_start(
    pki: dict[str, Path], tmp_path: Path
) -> None:
    """IMGCLASS_TLS_KEY_PASSWORD_FILE: each way it can be wrong is one line, exit status 2."""
    secret = tmp_path / "secret"
    encrypted = {"IMGCLASS_TLS_KEYFILE": str(pki["encrypted_key"])}
    secret.write_text("not it\n")
    done = _start(_env(pki, tmp_path, IMGCLASS_TLS_KEY_PASSWORD_FILE=str(secret), **encrypted))
    assert done.returncode == 2 and "does not open the key" in done.stderr
    assert "not it" not in done.stderr  # the pass phrase is never printed
    cases = {
        "missing": ("", "cannot read IMGCLASS_TLS_KEY_PASSWORD_FILE="),
        "empty": ("\nsecret\n", "its first line (the pass phrase) is empty"),
        "large": ("x" * 5000, "should hold the pass phrase only"),
    }
    for name, (text, said) in cases.items():
        path = tmp_path / name
        if name != "missing":
            path.write_text(text)
        env = _env(pki, tmp_path, IMGCLASS_TLS_KEY_PASSWORD_FILE=str(path), **encrypted)
        done = _start(env)
        assert done.returncode == 2 and said in done.stderr, (name, done.stderr)
        assert "Traceback" not in done.stderr
    # round 26 attack: a pass phrase longer than OpenSSL takes was a traceback, and a FIFO
    # (or `<(printf ...)`) blocked start-up for ever or read empty the second time
    path.write_text("x" * 1500 + "\n")
    done = _start(_env(pki, tmp_path, IMGCLASS_TLS_KEY_PASSWORD_FILE=str(path), **encrypted))
    assert done.returncode == 2 and "over 1023 bytes" in done.stderr, done.stderr
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    done = _start(_env(pki, tmp_path, IMGCLASS_TLS_KEY_PASSWORD_FILE=str(fifo), **encrypted))
    assert done.returncode == 2 and "not a regular file" in done.stderr, done.stderr
    path.write_bytes(b"\xff\xfe")
    done = _start(_env(pki, tmp_path, IMGCLASS_TLS_KEY_PASSWORD_FILE=str(path), **encrypted))
    assert done.returncode == 2 and "not UTF-8" in done.stderr
    env = _env(pki, tmp_path, IMGCLASS_TLS_KEY_PASSWORD_FILE=str(secret))
    del env["IMGCLASS_TLS_CERTFILE"], env["IMGCLASS_TLS_KEYFILE"]
    done = _start(env)
    assert done.returncode == 2 and "without IMGCLASS_TLS_KEYFILE" in done.stderr


@pytest.mark.slow  # a server of its own
def test_an_encrypted_key_serves_https_and_grpc_with_its_pass_phrase(
    pki: dict[str, Path], tmp_path: Path
) -> None:
    """The pass phrase comes from a file (a secret, with the trailing newline secrets often
    have); gRPC, which takes no pass phrase, gets the key decrypted in memory."""
    secret = tmp_path / "secret"
    secret.write_text("secret\n")
    encrypted = str(pki["encrypted_key"])
    with _serving(
        pki, tmp_path, IMGCLASS_TLS_KEYFILE=encrypted, IMGCLASS_TLS_KEY_PASSWORD_FILE=str(secret)
    ) as (port, grpc_port):
        with httpx.Client(verify=_trusting(pki)) as https:
            assert https.get(f"https://localhost:{port}/v1/models").status_code == 200
        creds = grpc.ssl_channel_credentials(pki["ca"].read_bytes())
        with grpc.secure_channel(f"localhost:{grpc_port}", creds) as channel:
            check = channel.unary_unary("/grpc.health.v1.Health/Check")
            assert bytes(check(b"", timeout=5)) == b"\x08\x01"


@pytest.mark.parametrize(
    ("env", "url"),
    [
        ({}, "http://127.0.0.1:8000/readyz"),
        ({"IMGCLASS_PORT": " 8946 "}, "http://127.0.0.1:8946/readyz"),
        (
            {"IMGCLASS_PORT": "8_946", "IMGCLASS_TLS_CERTFILE": "/c.pem"},
            "https://127.0.0.1:8946/readyz",
        ),
        ({"IMGCLASS_TLS_CERTFILE": " "}, "http://127.0.0.1:8000/readyz"),
        ({"IMGCLASS_HOST": "0.0.0.0"}, "http://127.0.0.1:8000/readyz"),
        ({"IMGCLASS_HOST": "::"}, "http://127.0.0.1:8000/readyz"),
        ({"IMGCLASS_HOST": "::1"}, "http://[::1]:8000/readyz"),
        ({"IMGCLASS_HOST": "[::1]"}, "http://[::1]:8000/readyz"),
        ({"IMGCLASS_HOST": "10.1.2.3"}, "http://10.1.2.3:8000/readyz"),
        ({"IMGCLASS_PORT": "abc"}, None),
    ],
)
def test_the_probe_asks_where_the_settings_listen(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], url: str | None
) -> None:
    """Round 22: the probe read " 8946 " and "8_946" (ports to the Settings) as no port and
    failed for good, crashed on "abc", and asked 127.0.0.1 of a server on ::1."""
    from app.probe import readyz_url

    for name in ("IMGCLASS_PORT", "IMGCLASS_HOST", "IMGCLASS_TLS_CERTFILE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert readyz_url() == url


@pytest.mark.slow  # servers of their own
@pytest.mark.parametrize("workers", ["1", "2"])
def test_an_idle_keep_alive_client_does_not_hold_a_stopping_server(
    pki: dict[str, Path], tmp_path: Path, workers: str
) -> None:
    """Round 27: asyncio waits 30 s for a closing TLS connection's close_notify, as long as the
    parent waits for its workers: one pooled HTTPS connection got each worker killed at 30 s,
    its shutdown (teach jobs, catalogs, gRPC) never run. Now the wait is 2 s."""
    import http.client

    port = free_port()
    env = _env(pki, tmp_path, IMGCLASS_PORT=str(port), IMGCLASS_WORKERS=workers)
    log = tmp_path / "server.log"
    with running_process(
        [sys.executable, "-m", "app"],
        f"https://localhost:{port}/readyz",
        log,
        90,
        verify=_trusting(pki),
        cwd=ROOT,
        env=env,
    ) as proc:
        pooled = http.client.HTTPSConnection("localhost", port, context=_trusting(pki), timeout=30)
        pooled.request("GET", "/healthz")
        assert pooled.getresponse().read()  # answered; the connection stays open, idle
        t0 = time.monotonic()
        proc.terminate()
        assert proc.wait(timeout=25) == 0
        took = time.monotonic() - t0
        pooled.close()
    assert took < 10, f"stopped after {took:.1f} s"
    text = log.read_text(errors="replace")
    assert "killing it" not in text and "Traceback" not in text, text[-2000:]


def test_a_key_the_server_cannot_read_is_named_with_the_user_to_give_it_to(
    pki: dict[str, Path], tmp_path: Path
) -> None:
    """Round 42: an operator's openssl key (mode 0600, another owner) stopped the container
    with "Permission denied" alone, restarting in a loop: which file, and for which user?"""
    key = tmp_path / "key.pem"
    key.write_bytes(pki["key"].read_bytes())
    key.chmod(0)
    done = subprocess.run(
        [*held_to_file_modes(), sys.executable, "-m", "app"],
        cwd=ROOT, env=_env(pki, tmp_path, IMGCLASS_TLS_KEYFILE=str(key)),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    said = f"IMGCLASS_TLS_KEYFILE={key} cannot be read by this server's user, uid {os.getuid()}"
    assert said in done.stderr and "mode 0000" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
