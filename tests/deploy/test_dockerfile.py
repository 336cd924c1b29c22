"""Static checks of the Docker deployment files (no Docker engine needed).

scripts/ci-docker builds and runs the image for real; these catch regressions in seconds.
"""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from dockerfile_parse import DockerfileParser

from app.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "docker-compose.yml"
COMPOSE_CI = ROOT / "docker-compose.ci.yml"
SERVED_TARGETS = ("runtime", "gpu")
TRAINING_ONLY = re.compile(r"tensorflow|keras|tf2onnx|torch", re.IGNORECASE)

Instruction = dict[str, Any]


def _stages() -> dict[str, list[Instruction]]:
    """Instructions of each named stage (`FROM ... AS name`), in order."""
    parser = DockerfileParser(path=str(DOCKERFILE))
    stages: dict[str, list[Instruction]] = {}
    current: list[Instruction] | None = None
    for ins in parser.structure:
        if ins["instruction"] == "FROM":
            words = ins["value"].split()
            name = words[2] if len(words) == 3 and words[1].lower() == "as" else f"#{len(stages)}"
            current = stages.setdefault(name, [])
        if current is not None:
            current.append(ins)
    return stages


def _stage(name: str) -> list[Instruction]:
    stages = _stages()
    assert name in stages, f"Dockerfile has no stage {name!r} (has {sorted(stages)})"
    return stages[name]


def _values(stage: list[Instruction], instruction: str) -> list[str]:
    return [i["value"] for i in stage if i["instruction"] == instruction]


def _build_args() -> dict[str, str]:
    """Global ARG defaults (before the first FROM)."""
    args: dict[str, str] = {}
    for ins in DockerfileParser(path=str(DOCKERFILE)).structure:
        if ins["instruction"] == "FROM":
            break
        if ins["instruction"] == "ARG" and "=" in ins["value"]:
            key, _, default = ins["value"].partition("=")
            args[key] = default
    return args


def _env(stage: list[Instruction]) -> dict[str, str]:
    env: dict[str, str] = {}
    for value in _values(stage, "ENV"):
        for word in shlex.split(value):
            key, sep, val = word.partition("=")
            assert sep, f"use ENV KEY=value form, got {word!r}"
            env[key] = val
    return env


class _ComposeLoader(yaml.SafeLoader):
    """SafeLoader that accepts compose's merge tags (!reset, !override)."""


_ComposeLoader.add_constructor("!reset", lambda loader, node: None)
_ComposeLoader.add_constructor(
    "!override",
    lambda loader, node: (
        loader.construct_sequence(node)
        if isinstance(node, yaml.SequenceNode)
        else loader.construct_mapping(node)
    ),
)


def _compose(path: Path) -> dict[str, Any]:
    data = yaml.load(path.read_text(encoding="utf-8"), Loader=_ComposeLoader)
    assert isinstance(data, dict)
    return data


SETTINGS_ENV = {f"IMGCLASS_{name.upper()}" for name in Settings.model_fields}


# ---------------------------------------------------------------- Dockerfile


def test_no_syntax_directive() -> None:
    # A `# syntax=` line makes BuildKit pull a frontend image, which offline builds cannot do.
    first = DOCKERFILE.read_text(encoding="utf-8").lstrip().splitlines()[0]
    assert not re.match(r"#\s*syntax\s*=", first, re.IGNORECASE)


def test_cpu_base_is_python_311_slim_bookworm() -> None:
    args = _build_args()
    assert args.get("PYTHON_IMAGE") == "python:3.11-slim-bookworm"
    for stage in ("builder", "runtime"):
        assert _stage(stage)[0]["value"].split()[0] == "${PYTHON_IMAGE}"


def test_default_target_is_the_cpu_image() -> None:
    stages = _stages()
    last_name = list(stages)[-1]
    last_from = stages[last_name][0]["value"].split()[0]
    assert last_name == "runtime" or last_from == "runtime"


@pytest.mark.parametrize("target", SERVED_TARGETS)
def test_served_image_runs_as_non_root(target: str) -> None:
    users = _values(_stage(target), "USER")
    assert users, f"stage {target} sets no USER (it would run as root)"
    user = users[-1].split(":")[0]
    assert user not in {"0", "root"}


@pytest.mark.parametrize("target", SERVED_TARGETS)
def test_healthcheck_probes_readyz_without_curl(target: str) -> None:
    checks = _values(_stage(target), "HEALTHCHECK")
    assert len(checks) == 1
    assert '"-m", "app.probe"' in checks[0]  # GET /readyz with the standard library
    assert "curl" not in checks[0] and "wget" not in checks[0]
    probe = (ROOT / "app" / "probe.py").read_text()
    assert "/readyz" in probe and "urllib" in probe


@pytest.mark.parametrize("target", SERVED_TARGETS)
def test_exposes_8000_and_starts_from_settings(target: str) -> None:
    stage = _stage(target)
    assert "8000" in " ".join(_values(stage, "EXPOSE")).replace("/tcp", "").split()
    cmd = _values(stage, "CMD")[-1]
    assert cmd.startswith("["), "CMD must use the exec form (signals reach the server)"
    assert "app" in cmd


@pytest.mark.parametrize("target", SERVED_TARGETS)
def test_env_names_real_settings(target: str) -> None:
    env = _env(_stage(target))
    unknown = {k for k in env if k.startswith("IMGCLASS_")} - SETTINGS_ENV
    assert not unknown, f"ENV sets variables app/settings.py does not read: {unknown}"
    assert env["IMGCLASS_HOST"] == "0.0.0.0"
    assert env["IMGCLASS_PORT"] == "8000"
    assert env["IMGCLASS_MODELS_DIR"] == "/app/models"
    assert env["IMGCLASS_DATA_DIR"] == "/data"
    assert env["IMGCLASS_WORKERS"] == "1"
    assert env["IMGCLASS_INTRA_OP_THREADS"] == "0"


def test_installs_are_offline_and_without_training_packages() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    parser = DockerfileParser(path=str(DOCKERFILE))
    runs = [i["value"] for i in parser.structure if i["instruction"] == "RUN"]
    pip_runs = [r for r in runs if "pip install" in r]
    assert pip_runs, "no pip install in the Dockerfile"
    for run in pip_runs:
        assert "--no-index" in run and "--find-links /wheelhouse" in run, run
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    assert not TRAINING_ONLY.search(code), "the serving image must not install training packages"


def test_gpu_target_swaps_in_onnxruntime_gpu_on_cuda() -> None:
    args = _build_args()
    assert args["CUDA_IMAGE"].startswith("nvidia/cuda:") and "runtime" in args["CUDA_IMAGE"]
    builder = " ".join(_values(_stage("gpu-builder"), "RUN"))
    assert "requirements-gpu.txt" in builder
    assert _env(_stage("gpu"))["IMGCLASS_PROVIDERS"] == "cuda"


def test_milvus_profile_builds_the_cpu_image_with_pymilvus() -> None:
    builder = _stage("builder")
    assert "REQUIREMENTS=requirements.txt" in _values(builder, "ARG")
    assert '"/wheelhouse/${REQUIREMENTS}"' in " ".join(_values(builder, "RUN"))
    services = _compose(COMPOSE)["services"]
    api, milvus_api = services["api"], services["api-milvus"]
    assert milvus_api["profiles"] == ["milvus"]
    assert milvus_api["build"]["target"] == "runtime"
    assert milvus_api["build"]["args"] == {"REQUIREMENTS": "requirements-milvus.txt"}
    assert "args" not in api["build"], "the default image installs requirements.txt only"
    assert milvus_api["image"] != api["image"], "the two variants must not share a tag"
    assert milvus_api["environment"]["IMGCLASS_VECTOR_STORE"].startswith("milvus://")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert any(d.startswith("pymilvus") for d in project["optional-dependencies"]["milvus"])


def test_server_dependencies_have_no_tensorflow() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    leaked = [d for d in project["dependencies"] if TRAINING_ONLY.search(d)]
    assert not leaked, f"base (server) dependencies pull training packages: {leaked}"


def _pins(lock: Path) -> dict[str, str]:
    rows = lock.read_text(encoding="utf-8").splitlines()
    return dict(line.split("==", 1) for line in rows if line and not line.startswith("#"))


def test_wheelhouse_lock_has_no_tensorflow() -> None:
    lock = ROOT / ".wheelhouse" / "requirements.txt"
    if not lock.is_file():
        pytest.skip("no .wheelhouse/requirements.txt: run scripts/build-wheelhouse")
    base = _pins(lock)
    assert "imgclass" in base and "onnxruntime" in base
    assert not [n for n in base if TRAINING_ONLY.search(n)]
    milvus_lock = lock.with_name("requirements-milvus.txt")
    if milvus_lock.is_file():  # scripts/build-wheelhouse --milvus (scripts/ci-docker runs it)
        pins = _pins(milvus_lock)
        assert "pymilvus" in pins and not [n for n in pins if TRAINING_ONLY.search(n)]
        assert {n: pins.get(n) for n in base} == base, "the milvus set must keep the base pins"


def test_dockerignore_keeps_context_small_but_keeps_inputs() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    for excluded in (".git", ".venv", "data", "runs", "tests"):
        assert excluded in patterns, f".dockerignore does not exclude {excluded}"
    for needed in (".wheelhouse", "models"):
        assert needed not in patterns
        assert f"!{needed}" in patterns


# ---------------------------------------------------------------- compose


def test_compose_api_service() -> None:
    compose = _compose(COMPOSE)
    api = compose["services"]["api"]
    assert api["restart"] == "unless-stopped"
    assert api["build"]["target"] == "runtime"
    test = " ".join(api["healthcheck"]["test"])
    assert "-m app.probe" in test
    # Published on loopback unless the operator says otherwise.
    assert any(str(p).startswith("${IMGCLASS_BIND:-127.0.0.1}:") for p in api["ports"])
    assert any(str(p).endswith(":8000") for p in api["ports"])
    data_mounts = [v for v in api["volumes"] if str(v).split(":")[1] == "/data"]
    assert data_mounts, "no volume for IMGCLASS_DATA_DIR (/data)"
    assert str(data_mounts[0]).split(":")[0] in compose["volumes"], "/data is not a named volume"
    assert api["environment"]["IMGCLASS_DATA_DIR"] == "/data"


def test_compose_environment_names_real_settings() -> None:
    for name, service in _compose(COMPOSE)["services"].items():
        unknown = {
            k for k in service.get("environment", {}) if k.startswith("IMGCLASS_")
        } - SETTINGS_ENV
        assert not unknown, (
            f"service {name} sets variables app/settings.py does not read: {unknown}"
        )


def test_compose_gpu_profile_requests_an_nvidia_device() -> None:
    gpu = _compose(COMPOSE)["services"]["api-gpu"]
    assert gpu["profiles"] == ["gpu"]
    assert gpu["build"]["target"] == "gpu"
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia"
    assert "gpu" in devices[0]["capabilities"]
    assert gpu["environment"]["IMGCLASS_PROVIDERS"] == "cuda"


def test_compose_ci_override_uses_host_network() -> None:
    api = _compose(COMPOSE_CI)["services"]["api"]
    assert api["network_mode"] == "host"
    assert api["build"]["network"] == "host"
    assert not api.get("ports"), "published ports cannot be used with host networking"


def _bytes(size: str) -> int:
    """'${VAR:-1g}' or '512m' -> bytes."""
    value = size.rsplit(":-", 1)[-1].rstrip("}").lower()
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    return int(float(value[:-1]) * units[value[-1]]) if value[-1] in units else int(value)


def test_compose_services_have_resource_limits() -> None:
    """Every served container: sized tmpfs and memory, CPU and pids limits; memory above the
    600 MB peak-RSS budget of issue #11 with headroom."""
    services = _compose(COMPOSE)["services"]
    for name in ("api", "api-gpu", "api-milvus"):
        s = services[name]
        tmpfs = [t for t in s["tmpfs"] if str(t).startswith("/tmp")]
        assert tmpfs and "size=" in tmpfs[0], f"{name}: /tmp tmpfs has no size"
        assert _bytes(s["mem_limit"]) >= 800 << 20, name
        assert s["memswap_limit"] == s["mem_limit"], f"{name}: swap beyond the memory limit"
        assert float(str(s["cpus"]).rsplit(":-", 1)[-1].rstrip("}")) > 0, name
        assert 0 < int(s["pids_limit"]) <= 1024, name


def test_compose_says_how_writes_are_authorised() -> None:
    """The container listens on 0.0.0.0: compose tells the server where the host publishes
    its port (IMGCLASS_BIND), which alone decides whether writes need a key. Round 42: it set
    the opt-out to true, so IMGCLASS_BIND=0.0.0.0 alone opened writes to the network."""
    for name in ("api", "api-gpu", "api-milvus"):
        env = _compose(COMPOSE)["services"][name]["environment"]
        assert "IMGCLASS_API_KEY" in env
        assert env["IMGCLASS_PUBLISHED_ON"] == "${IMGCLASS_BIND:-127.0.0.1}", name
        assert str(env["IMGCLASS_ALLOW_UNAUTHENTICATED_WRITES"]).endswith(":-false}"), name
    ports = _compose(COMPOSE)["services"]["api"]["ports"]
    assert all(str(p).startswith("${IMGCLASS_BIND:-127.0.0.1}:") for p in ports)


@pytest.mark.parametrize("target", SERVED_TARGETS)
def test_served_image_opts_out_of_onnxruntime_telemetry(target: str) -> None:
    """onnxruntime >= 1.32 sends usage events to Microsoft on Linux and keeps a device id under
    $HOME/.cache; on the read-only root it also logs a coloured non-JSON warning at the first
    session. ORT_DISABLE_TELEMETRY=1 (read before the first session) turns all of it off."""
    assert _env(_stage(target)).get("ORT_DISABLE_TELEMETRY") == "1"


def _compose_default(value: str) -> str:
    """'${VAR:-default}' -> 'default' (what compose uses when VAR is unset)."""
    match = re.fullmatch(r"\$\{[A-Z0-9_]+:-(.*)\}", value)
    return match.group(1) if match else value


def test_compose_api_answers_the_prometheus_scrape_host(monkeypatch: pytest.MonkeyPatch) -> None:
    """The monitoring profile's Prometheus scrapes the targets in deploy/prometheus/prometheus.yml
    (api:8000): the api service's Host allow-list must include them, or every scrape is a 400
    and ImgclassDown fires on a healthy server."""
    from app.api.guards import host_allowed

    env = _compose(COMPOSE)["services"]["api"]["environment"]
    hosts = env.get("IMGCLASS_ALLOWED_HOSTS")
    if hosts:
        monkeypatch.setenv("IMGCLASS_ALLOWED_HOSTS", _compose_default(str(hosts)))
    else:
        monkeypatch.delenv("IMGCLASS_ALLOWED_HOSTS", raising=False)
    allowed = Settings().allowed_hosts
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    targets = [
        t for job in config["scrape_configs"] for s in job["static_configs"] for t in s["targets"]
    ]
    assert targets
    refused = [t for t in targets if not host_allowed(t, allowed)]
    assert not refused, f"api refuses Host {refused} (IMGCLASS_ALLOWED_HOSTS {allowed})"
