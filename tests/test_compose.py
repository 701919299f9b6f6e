"""The deployment files: docker-compose.yml as Compose itself normalises it, the Dockerfile and .dockerignore.

Compose is run only as `config` (no Docker daemon, no images): Debian's docker-compose 1.29, else the
`docker compose` v2 plugin. Their normalised outputs differ (short vs long port and volume syntax), so
the helpers below read both.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

import pytest

yaml = pytest.importorskip("yaml", reason="PyYAML (a dependency of rapidocr) is needed to read compose output")

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
# variables the compose file interpolates; unset so the file's defaults are what is checked
COMPOSE_VARS = ("MEDIA_DIR", "ZHAOPIAN_ENCODER", "ZHAOPIAN_THREADS", "ZHAOPIAN_VERSION", "WORKER_REPLICAS", "ES_HEAP")


def compose_command() -> list[str] | None:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], check=False, capture_output=True, timeout=30)
        if probe.returncode == 0:
            return ["docker", "compose"]
    return None


COMPOSE = compose_command()


def compose_config(**env: str) -> dict:
    """`compose config` of the file, with only the given variables set among those it interpolates."""
    if COMPOSE is None:
        pytest.skip("neither docker-compose nor the docker compose plugin is installed (.ci/install adds it)")
    environ = {k: v for k, v in os.environ.items() if k not in COMPOSE_VARS and not k.startswith("COMPOSE_")}
    environ.update(env)
    proc = subprocess.run([*COMPOSE, "-f", str(COMPOSE_FILE), "--project-directory", str(ROOT), "config"],
                          cwd=ROOT, env=environ, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, f"compose config failed:\n{proc.stderr}"
    return yaml.safe_load(proc.stdout)


@pytest.fixture(scope="module")
def config() -> dict:
    return compose_config()


def ports(service: dict) -> list[tuple[str, int, int]]:
    """(host address, published port, container port) of each published port."""
    out = []
    for p in service.get("ports", []):
        if isinstance(p, dict):
            out.append((p.get("host_ip", ""), int(p["published"]), int(p["target"])))
        else:
            spec = p.split("/")[0]
            host, published, target = spec.rsplit(":", 2) if spec.count(":") >= 2 else ("", *spec.split(":"))
            out.append((host, int(published), int(target)))
    return out


def mounts(service: dict) -> dict[str, tuple[str, str, bool]]:
    """Container path -> (source, type 'volume' or 'bind', read-only) of each mount."""
    out = {}
    for v in service.get("volumes", []):
        if isinstance(v, dict):
            out[v["target"]] = (v["source"], v["type"], bool(v.get("read_only")))
        else:
            source, target, *mode = v.split(":")
            kind = "bind" if source.startswith(("/", ".", "~")) else "volume"
            out[target] = (source, kind, "ro" in (mode[0].split(",") if mode else []))
    return out


def environment(service: dict) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def depends_on(service: dict) -> dict[str, str]:
    deps = service.get("depends_on", {})
    if isinstance(deps, list):
        return {d: "service_started" for d in deps}
    return {name: spec.get("condition", "service_started") for name, spec in deps.items()}


def test_services(config):
    assert set(config["services"]) == {"api", "worker", "elasticsearch"}


def test_api_serves_http_without_ingest_workers(config):
    api = config["services"]["api"]
    command = api["command"]
    assert command[:2] == ["zhaopian", "serve"]
    args = dict(zip(command[2::2], command[3::2]))
    assert args == {"--host": "0.0.0.0", "--port": "8000", "--workers": "0"}
    assert depends_on(api) == {"elasticsearch": "service_healthy"}


def test_api_healthcheck_is_valid_python_against_health_route(config):
    test = config["services"]["api"]["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"], "the slim image has no curl"
    assert "http://localhost:8000/v1/health" in test[3]
    compile(test[3], "<healthcheck>", "exec")


def test_worker_runs_the_queue_and_scales(config):
    worker = config["services"]["worker"]
    assert worker["command"] == ["zhaopian", "worker"]
    assert "ports" not in worker and "container_name" not in worker, "replicas need neither"
    assert worker["deploy"]["replicas"] == 1
    assert depends_on(worker)["elasticsearch"] == "service_healthy"


def test_api_and_worker_share_image_env_and_volumes(config):
    api, worker = config["services"]["api"], config["services"]["worker"]
    assert api["image"] == worker["image"]
    assert Path(api["build"]["context"]).resolve() == ROOT
    assert environment(api) == environment(worker)
    assert mounts(api) == mounts(worker)

    env, mnt = environment(api), mounts(api)
    assert env["ZHAOPIAN_DATA_DIR"] == "/data"
    data_source, data_kind, data_ro = mnt["/data"]
    assert data_kind == "volume" and not data_ro and data_source in config["volumes"]
    assert env["ZHAOPIAN_MEDIA_ROOT"] == "/media"
    media_source, media_kind, media_ro = mnt["/media"]
    assert media_kind == "bind" and media_ro and Path(media_source) == ROOT / "media"
    assert Path(env["ZHAOPIAN_CACHE_DIR"]).is_relative_to("/data")
    assert env["ZHAOPIAN_ENCODER"] == "bundled"
    assert int(env["ZHAOPIAN_THREADS"]) >= 0


def test_zhaopian_uses_the_elasticsearch_service(config):
    url = urlsplit(environment(config["services"]["api"])["ZHAOPIAN_ES_URL"])
    assert (url.scheme, url.hostname, url.port) == ("http", "elasticsearch", 9200)


def test_elasticsearch_is_the_real_image(config):
    es = config["services"]["elasticsearch"]
    image, _, tag = es["image"].rpartition(":")
    assert image == "docker.elastic.co/elasticsearch/elasticsearch"
    assert re.fullmatch(r"8\.\d+\.\d+", tag), "the Python client is pinned to major version 8"
    env = environment(es)
    assert env["discovery.type"] == "single-node"
    assert "-Xmx" in env["ES_JAVA_OPTS"]
    assert "_cluster/health" in " ".join(es["healthcheck"]["test"])
    source, kind, _ = mounts(es)["/usr/share/elasticsearch/data"]
    assert kind == "volume" and source in config["volumes"]


def test_ports_are_published_on_loopback_only(config):
    assert ("127.0.0.1", 8000, 8000) in ports(config["services"]["api"])
    for name, service in config["services"].items():
        for host, published, _ in ports(service):
            assert host == "127.0.0.1", f"{name} publishes {published} on {host or 'every address'}"


def test_variables_override_media_dir_and_worker_count(tmp_path):
    config = compose_config(MEDIA_DIR=str(tmp_path), WORKER_REPLICAS="3", ZHAOPIAN_ENCODER="chinese-clip:x/y")
    worker = config["services"]["worker"]
    assert worker["deploy"]["replicas"] == 3
    assert mounts(worker)["/media"] == (str(tmp_path), "bind", True)
    assert environment(config["services"]["api"])["ZHAOPIAN_ENCODER"] == "chinese-clip:x/y"


# -- Dockerfile and .dockerignore -----------------------------------------------------------------

def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with comments dropped and continuation lines joined."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile_base_user_and_port():
    instructions = dockerfile_instructions()
    first = next(i for i in instructions if i[0] != "ARG")
    assert first[0] == "FROM" and first[1].startswith("python:3.11-slim")
    users = [arg for word, arg in instructions if word == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), "the image must run as a non-root user"
    assert ("EXPOSE", "8000") in instructions


def torch_pins(path: Path) -> dict[str, str]:
    return dict(re.findall(r"\b(torch|torchvision)==([\w.+]+)", path.read_text()))


def test_dockerfile_torch_pins_match_ci():
    """The image installs the torch/torchvision pair that CI tests with."""
    dockerfile = torch_pins(ROOT / "Dockerfile")
    assert set(dockerfile) == {"torch", "torchvision"}
    assert dockerfile == torch_pins(ROOT / ".ci" / "install")


def pattern_regex(pattern: str) -> str:
    """A .dockerignore pattern as a regex: `*` and `?` stay within a path component, `**` spans them."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return out


def ignored(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore leaves the path out: a pattern matches it or one of its parent folders."""
    parts = path.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    result = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        regex = pattern_regex(pattern.lstrip("!").strip("/"))
        if any(re.fullmatch(regex, p) for p in prefixes):
            result = not negate
    return result


def test_dockerignore_keeps_what_pip_install_needs():
    patterns = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()
                if ln.strip() and not ln.startswith("#")]
    for junk in (".git", ".venv", "data", "bench/results", "api/__pycache__", "search/stores/__pycache__"):
        assert ignored(junk, patterns), junk
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    needed = ["pyproject.toml", project["project"]["readme"], "modules/visual/encoders/data/x.bin",
              *project["tool"]["setuptools"]["package-dir"].values()]
    for path in needed:
        assert not ignored(path, patterns), path
