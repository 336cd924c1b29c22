"""Server settings: the only place the environment (IMGCLASS_*) is read."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.allocator import Allocator
from app.tls_files import TlsFiles


class Settings(BaseSettings):
    # Numbers are finite: `inf` passed as "no budget" and `nan` was refused as "should be
    # less than or equal to 3600" (round 32).
    model_config = SettingsConfigDict(
        env_prefix="IMGCLASS_", env_file=None, extra="ignore", allow_inf_nan=False
    )

    # Where bundles are read from and where the service stores what clients give it.
    models_dir: Path = Path("models")
    data_dir: Path = Path("data/service")

    host: str = Field(default="127.0.0.1", min_length=1)
    port: int = Field(default=8000, ge=1, le=65535)
    # The Open Inference Protocol's gRPC binding (KServe v2 / Triton; app/grpc_oip.py) on this
    # port of `host`, in every worker (SO_REUSEPORT); 0 = off. Triton's own default is 8001.
    grpc_port: int = Field(default=0, ge=0, le=65535)
    # The largest gRPC message accepted (RESOURCE_EXHAUSTED above it, before parsing). gRPC
    # receives a whole message before the call runs, so a process may hold about GRPC_CALLS
    # (8) x 4 x this at once: keep it well under the container's memory.
    grpc_max_message_bytes: int = Field(default=8 * 1024 * 1024, ge=1024, le=1 << 30)
    # gRPC keepalive: a connection quiet this long is pinged, and closed when the ping is not
    # answered within the timeout, so a vanished client's health watches free their places.
    # Keep the interval under the idle timeout of any load balancer in front of the port.
    grpc_keepalive_s: float = Field(default=60.0, ge=1.0, le=7200.0)
    grpc_keepalive_timeout_s: float = Field(default=20.0, ge=1.0, le=600.0)
    # Server processes (0 = auto: one per core, at most 4, on CPU; one with CUDA). Each worker
    # loads every model and gets its share of the cores for its pipelines, threads, queue and
    # decodes; `python -m app` listens and deals connections to them in turn (app.serve).
    workers: int = Field(default=0, ge=0, le=64)

    # Execution providers: auto = CUDA when onnxruntime has it, else CPU. "cuda" where CUDA
    # is missing is a start-up error, never a silent fallback.
    providers: Literal["auto", "cpu", "cuda"] = "auto"
    # Serving pipelines per model: threads that each decode a request and run its forward pass
    # in one hop (0 = one per core). onnxruntime threads per session: 0 = cores / pipelines
    # (at least 1), so they never oversubscribe the cores (docs/performance.md).
    pipelines: int = Field(default=0, ge=0, le=256)
    intra_op_threads: int = Field(default=0, ge=0, le=256)
    # Pipelines run this many nice levels below the event loop (Linux; 0 = same priority), so
    # probes and light requests are answered while the forward passes keep the cores busy.
    pipeline_nice: int = Field(default=5, ge=0, le=19)
    # A model's queue: a request is refused (503 + Retry-After) when queue_limit requests wait
    # (0 = 12 per core), when the work already waiting would take longer than
    # queue_max_wait_ms to start (estimated from the model's recent time per image), or when
    # the bodies waiting would pass queue_max_bytes.
    queue_limit: int = Field(default=0, ge=0, le=100_000)
    queue_max_wait_ms: float = Field(default=1000.0, ge=0, le=600_000)
    queue_max_bytes: int = Field(default=256 * 1024 * 1024, ge=0)
    # A connection's first 503 is sent at once; one refused again within its Retry-After gets
    # its 503 after the queue's estimated drain time, within these bounds (ms; 0 = always at
    # once). Clients that retry at once, ignoring Retry-After, otherwise keep a core busy
    # being refused (docs/performance.md).
    overload_pause_ms: float = Field(default=100.0, ge=0, le=1000)
    overload_pause_max_ms: float = Field(default=250.0, ge=0, le=1000)
    # A request not answered within this many seconds (waiting or running) gets a 503.
    request_deadline_s: float = Field(default=10.0, gt=0, le=3600)
    # Micro-batching: concurrent requests for one model share one forward pass when warm-up
    # measured that faster per image (a GPU; not one CPU thread). These cap that policy.
    batch_max_size: int = Field(default=32, ge=1, le=1024)
    batch_max_wait_ms: float = Field(default=5.0, ge=0, le=1000)
    # A batch takes more requests only while their encoded images total at most this many bytes
    # (0: no bound): a worker decodes its batch one image at a time before the forward pass, so
    # a batch of large photos makes its first request wait for every other one's decoding.
    batch_max_bytes: int = Field(default=1 << 20, ge=0, le=1 << 30)
    warmup_runs: int = Field(default=2, ge=0, le=100)
    # Load bundles in a background thread so /healthz answers at once; /readyz says when done.
    load_in_background: bool = True
    # Once the models are loaded, move what start-up built out of the garbage collector's sight
    # (gc.freeze), so a full collection stops the process for ~1 ms instead of ~45 (app/heap.py).
    gc_freeze: bool = True
    # Every this many seconds hand the C allocator's free pages back to the OS (malloc_trim;
    # glibc only, skipped on jemalloc; 0 = never), which slows RSS growth under long mixed loads
    # (app/heap.py, bench/soak.py).
    heap_trim_seconds: float = Field(default=60.0, ge=0, le=86400)
    # The C allocator `python -m app` runs on (app/allocator.py): auto = jemalloc when the
    # system has libjemalloc.so.2 (RSS flat under long mixed loads), else glibc.
    allocator: Allocator = "auto"
    # When true, /readyz stays 503 if any bundle was refused.
    require_all_models: bool = False
    # Subset of bundle names to serve (empty = all found in models_dir).
    enabled_models: list[str] = Field(default_factory=list)

    # Input limits.
    max_image_bytes: int = Field(default=20 * 1024 * 1024, ge=1024)
    max_image_pixels: int = Field(default=40_000_000, ge=64)
    # AVIF is decoded whole (its YUV planes: 2 bytes a pixel at peak for 8-bit 4:2:0, up to
    # 8.5 for 12-bit 4:4:4 with alpha; app/avif_strips.py): its own, lower limit, which still
    # takes a phone's 12 MP (4032x3024) and 12.5 MP (4080x3072) photos. The limits of the
    # other kinds decoded whole derive from it (app/image_limits.py).
    max_avif_pixels: int = Field(default=13_000_000, ge=64)
    # Smallest side accepted (422 below). 1: every valid picture is classified, a 1x1 tracking
    # pixel or a 2-px rule included (the model's resize makes a flat picture of it).
    min_image_side: int = Field(default=1, ge=1)
    max_batch_images: int = Field(default=32, ge=1, le=1024)
    # Decode work per request, all its images together (413 beyond): pixels decoded (a
    # progressive JPEG counts pixels x scans / 10) and CPU seconds spent decoding.
    max_request_pixels: int = Field(default=128_000_000, ge=64)
    decode_time_budget_s: float = Field(default=5.0, gt=0)
    # Progressive JPEG scans allowed in one file (libjpeg writes 10; 413 beyond).
    max_jpeg_scans: int = Field(default=100, ge=1)
    # Image decodes running at once in the process, whatever the thread count; 0 = one per core.
    decode_concurrency: int = Field(default=0, ge=0, le=256)
    # Whole multipart/raw body of one request (a batch), counted while it streams in.
    max_request_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)
    # Bytes of request bodies one server process receives at once (0 = no bound); beyond,
    # 503 + Retry-After. Raised to the largest body a route takes (max_request_bytes,
    # teach_max_zip_bytes) if lower.
    max_body_bytes_in_flight: int = Field(default=128 * 1024 * 1024, ge=0)
    # Seconds a request's body may take to arrive in full (408 and the connection closed
    # beyond): uvicorn has no body read timeout, so a slow sender, or a Content-Length larger
    # than what is sent, would hold a connection and its buffers for good.
    body_timeout_s: float = Field(default=60.0, gt=0, le=3600)
    # JSON bodies (search by vector/item, catalog creation) and JSON text fields.
    max_json_bytes: int = Field(default=256 * 1024, ge=256)
    default_top_k: int = Field(default=5, ge=1)
    # Open Inference Protocol (/v2): the JSON part of an infer request is parsed whole, so it
    # has its own cap; larger tensors and images go in the binary-data extension.
    oip_max_json_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)

    # Image URLs in JSON predict bodies ({"images": [{"url": ...}]}): off unless enabled.
    # Fetched only from public addresses (checked after DNS, on every redirect), https only
    # unless url_allow_http; url_allowed_hosts (exact names or *.suffix) limits the hosts when
    # non-empty; url_private_allowlist names hosts or IPs exempt from the public-address rule.
    url_fetch_enabled: bool = False
    url_allow_http: bool = False
    url_allowed_hosts: list[str] = Field(default_factory=list)
    url_private_allowlist: list[str] = Field(default_factory=list)
    url_timeout_s: float = Field(default=5.0, gt=0, le=120)
    url_max_redirects: int = Field(default=3, ge=0, le=10)

    # Write endpoints require this key (header X-API-Key or Authorization: Bearer) when set.
    api_key: SecretStr | None = None
    # Or a file of keys, one per line (a Docker/Kubernetes secret), read again when it
    # changes: keys rotate without a restart (app/api_keys.py). Not with api_key.
    api_key_file: Path | None = None
    # Require the key for reads too.
    api_key_for_reads: bool = False
    cors_origins: list[str] = Field(default_factory=list)
    # Host header allow-list against DNS rebinding; ["*"] turns the check off.
    allowed_hosts: list[str] = Field(
        default_factory=lambda: ["localhost", "127.0.0.1", "[::1]", "*.localhost"]
    )
    # Listening beyond loopback without api_key refuses writes unless this is true.
    allow_unauthenticated_writes: bool = False
    # The address the port is published on beyond a container or proxy (docker-compose.yml
    # passes IMGCLASS_BIND): when set, it alone decides whether writes without a key are
    # reachable beyond loopback (a container listens on 0.0.0.0 whatever the host exposes).
    published_on: str | None = None
    # HTTPS, and gRPC over TLS: a PEM certificate (chain) and its private key, both or neither.
    tls_certfile: Path | None = None
    tls_keyfile: Path | None = None
    # An encrypted key's pass phrase: a file holding it (a secret), read at start-up.
    tls_key_password_file: Path | None = None

    # Visual similarity (catalogs). "embedded" = SQLite + faiss under data_dir/catalogs;
    # "milvus://host:19530" (or "milvus+https://...") = a Milvus server (pip install .[milvus]).
    vector_store: str = "embedded"
    milvus_token: SecretStr | None = None
    milvus_prefix: str = Field(default="imgclass_", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,32}$")
    # Catalog used by predict?similar=k when no catalog= is given, per model; applied only
    # when that catalog exists and is bound to the model.
    default_catalogs: dict[str, str] = Field(default_factory=lambda: {"products": "products"})
    # Embedded index: exact search (flat) up to hnsw_threshold items, HNSW above ("auto").
    index_kind: Literal["auto", "flat", "hnsw"] = "auto"
    hnsw_threshold: int = Field(default=200_000, ge=0)
    hnsw_m: int = Field(default=32, ge=4, le=128)
    hnsw_ef_search: int = Field(default=256, ge=8, le=4096)
    thumbnail_px: int = Field(default=128, ge=16, le=1024)
    # Catalogs kept: each is listed whole by GET /v1/catalogs and /metrics (no paging), so their
    # number is bounded (409 `catalog-limit` beyond: delete one first). Milvus lists at most
    # 16,384.
    max_catalogs: int = Field(default=1000, ge=1, le=16_384)

    # Registry follows the disk: re-scan the shipped and taught model folders this often
    # (seconds; 0 = no periodic re-scan: taught models and names not served yet are still
    # looked for when asked). Several processes sharing a volume converge.
    model_poll_seconds: float = Field(default=2.0, ge=0, le=3600)
    # Teaching (POST /v1/catalogs/{name}/train): limits per job and jobs waiting.
    teach_max_classes: int = Field(default=100, ge=2, le=10_000)
    teach_max_items: int = Field(default=20_000, ge=4, le=1_000_000)
    teach_max_queued: int = Field(default=8, ge=1, le=1000)
    # Taught models kept: every version is loaded by every server process, so their number is
    # bounded (409 `taught-model-limit` beyond: delete an old one first).
    teach_max_models: int = Field(default=100, ge=1, le=100_000)
    teach_max_versions: int = Field(default=20, ge=1, le=10_000)
    # Zip upload into a catalog (POST /v1/catalogs/{name}/items:zip): compressed size.
    teach_max_zip_bytes: int = Field(default=200 * 1024 * 1024, ge=1024)
    # Zip upload: pixels of all its images together, as their headers declare them, checked
    # before any is decoded (413 beyond); about 670 twelve-megapixel photos by default.
    teach_zip_max_pixels: int = Field(default=8_000_000_000, ge=1_000_000)

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = "text"
    access_log: bool = True

    @field_validator("tls_certfile", "tls_keyfile", "tls_key_password_file", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        """`IMGCLASS_TLS_CERTFILE=` (empty) means no TLS, not the current folder."""
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("api_key")
    @classmethod
    def _key_not_blank(cls, value: SecretStr | None) -> SecretStr | None:
        """Clients' keys are read without surrounding whitespace, so the key is too; a blank
        key could never be presented and would refuse every write with a puzzling 401."""
        if value is None:
            return None
        key = value.get_secret_value().strip(" \t\r\n")
        if not key:
            raise ValueError("is empty: unset it for no key, or set a long random secret")
        return SecretStr(key)

    @field_validator("api_key_file", mode="before")
    @classmethod
    def _key_file_not_blank(cls, value: object) -> object:
        """Unlike the TLS files, an empty value is refused: it would quietly mean no key."""
        if isinstance(value, str) and not value.strip():
            raise ValueError("is empty: unset it for no key file, or name the file of keys")
        return value

    @field_validator("allowed_hosts")
    @classmethod
    def _some_host(cls, value: list[str]) -> list[str]:
        if not value:  # every request but /readyz answered 400 (round 32)
            raise ValueError(
                "an empty list answers no request: list the host names clients use, or "
                '["*"] to turn the check off'
            )
        return value

    @field_validator("default_catalogs")
    @classmethod
    def _catalog_names(cls, value: dict[str, str]) -> dict[str, str]:
        from app.catalog.names import CATALOG_NAME_RE  # not .types: numpy and onnxruntime

        bad = [name for name in value.values() if not CATALOG_NAME_RE.fullmatch(name)]
        if bad:  # no catalog can be named so: predict?similar=k could never search it
            raise ValueError(
                f"{bad[0][:80]!r} is not a catalog name (lower-case letters, digits, - and _, "
                "up to 64, starting with a letter or digit)"
            )
        return value

    @field_validator("vector_store")
    @classmethod
    def _known_store(cls, value: str) -> str:
        """Checked here, before any worker starts (each failed alike, with a traceback)."""
        url = value.strip()
        if url in ("", "embedded") or url.startswith(("milvus://", "milvus+https://")):
            return value
        raise ValueError(f"{url[:80]!r}: use 'embedded' or 'milvus://host:19530'")

    @model_validator(mode="after")
    def _tls_pair(self) -> Settings:
        if (self.tls_certfile is None) != (self.tls_keyfile is None):
            raise ValueError("set IMGCLASS_TLS_CERTFILE and IMGCLASS_TLS_KEYFILE together")
        if self.tls_key_password_file is not None and self.tls_keyfile is None:
            raise ValueError("IMGCLASS_TLS_KEY_PASSWORD_FILE is set without IMGCLASS_TLS_KEYFILE")
        if self.api_key_for_reads and self.api_key is None and self.api_key_file is None:
            raise ValueError(
                "IMGCLASS_API_KEY_FOR_READS is set without a key: set IMGCLASS_API_KEY or "
                "IMGCLASS_API_KEY_FILE too (reads were open to anyone)"
            )
        if self.api_key is not None and self.api_key_file is not None:
            raise ValueError(
                "set IMGCLASS_API_KEY or IMGCLASS_API_KEY_FILE, not both (the file may hold "
                "several keys)"
            )
        return self

    @property
    def keyed(self) -> bool:
        """Whether clients must present an API key (for writes; reads too with
        api_key_for_reads)."""
        return self.api_key is not None or self.api_key_file is not None

    @property
    def tls(self) -> TlsFiles | None:
        """The certificate, key and pass phrase files when TLS is on."""
        if self.tls_certfile is None or self.tls_keyfile is None:
            return None
        secret = self.tls_key_password_file
        return TlsFiles(
            str(self.tls_certfile), str(self.tls_keyfile), None if secret is None else str(secret)
        )
