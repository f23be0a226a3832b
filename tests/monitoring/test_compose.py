"""deploy/docker-compose.yml and the Dockerfile, checked without Docker: the compose file
parses, has the services and ports the README promises, and every file it (and the configs
it mounts) refers to exists; the Dockerfile is multi-stage and copies only what exists."""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import subprocess

import pytest

from conftest import DEPLOY, ROOT, load_yaml

COMPOSE = DEPLOY / "docker-compose.yml"


@pytest.fixture(scope="module")
def compose() -> dict:
    return load_yaml(COMPOSE)


def mounts(service: dict) -> list[tuple[pathlib.Path, str]]:
    """(host path, container path) of every bind mount (named volumes left out)."""
    out = []
    for v in service.get("volumes", []):
        src, dst = v.split(":")[:2]
        if src.startswith((".", "/")):
            out.append(((DEPLOY / src).resolve(), dst))
    return out


def host_path(service: dict, container_path: str) -> pathlib.Path | None:
    """The host file behind container_path, through the service's bind mounts."""
    for src, dst in mounts(service):
        if container_path == dst or container_path.startswith(dst.rstrip("/") + "/"):
            return src / os.path.relpath(container_path, dst) if container_path != dst else src
    return None


def test_services_ports_and_profiles(compose):
    s = compose["services"]
    assert {"tollgate", "prometheus", "grafana", "redis", "postgres"} <= set(s)
    assert "8080:8080" in s["tollgate"]["ports"]
    assert "9090:9090" in s["prometheus"]["ports"]
    assert "3000:3000" in s["grafana"]["ports"]
    for name in ("tollgate", "prometheus", "grafana"):
        assert "profiles" not in s[name], f"{name} must start by default"
    assert s["redis"]["profiles"] == ["redis"]
    assert s["postgres"]["profiles"] == ["postgres"]
    for name, svc in s.items():
        for v in svc.get("volumes", []):
            src = v.split(":")[0]
            if not src.startswith((".", "/")):
                assert src in compose.get("volumes", {}), f"{name}: undeclared volume {src}"


def test_every_bind_mount_exists(compose):
    for name, svc in compose["services"].items():
        for src, dst in mounts(svc):
            assert src.exists(), f"{name}: {src} (mounted at {dst}) does not exist"


def test_build_context_and_dockerfile(compose):
    build = compose["services"]["tollgate"]["build"]
    context = (DEPLOY / build["context"]).resolve()
    dockerfile = context / build["dockerfile"]
    assert dockerfile.is_file()
    text = dockerfile.read_text()
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", text, re.M | re.I)
    assert len(stages) >= 2, "multi-stage build expected"
    assert "rust" in stages[0][0] and "rust" not in stages[-1][0], "runtime image without the toolchain"
    ignored = {l.strip() for l in (context / ".dockerignore").read_text().splitlines()
               if l.strip() and not l.startswith("#")}
    for line in re.findall(r"^COPY\s+(?!--from)(.+)$", text, re.M):
        *sources, _dest = line.split()
        for src in sources:
            assert (context / src).exists(), f"Dockerfile copies missing {src}"
            assert src.split("/")[0] not in ignored, f"{src} is excluded by .dockerignore"


def test_prometheus_config_and_rules_are_mounted(compose):
    prom = compose["services"]["prometheus"]
    cfg_arg = next(a for a in prom["command"] if a.startswith("--config.file="))
    cfg_container = cfg_arg.split("=", 1)[1]
    cfg = host_path(prom, cfg_container)
    assert cfg and cfg.is_file()
    config = load_yaml(cfg)
    for rf in config["rule_files"]:
        path = host_path(prom, str(pathlib.PurePosixPath(cfg_container).parent / rf))
        assert path and path.is_file(), f"rule file {rf} is not mounted"
    services = compose["services"]
    for job in config["scrape_configs"]:
        for sc in job.get("static_configs", []):
            for target in sc["targets"]:
                host, port = target.rsplit(":", 1)
                assert host in services, f"{job['job_name']}: {host} is not a compose service"
                assert any(p.split(":")[-1] == port for p in services[host]["ports"])


def test_grafana_provisioning(compose):
    graf = compose["services"]["grafana"]
    prov = host_path(graf, "/etc/grafana/provisioning")
    assert prov and prov.is_dir()
    ds = load_yaml(prov / "datasources" / "prometheus.yml")["datasources"][0]
    assert ds["type"] == "prometheus" and ds["url"] == "http://prometheus:9090"
    providers = load_yaml(prov / "dashboards" / "tollgate.yml")["providers"]
    for p in providers:
        path = host_path(graf, p["options"]["path"])
        assert path and sorted(x.name for x in path.glob("*.json")) == [
            "tollgate-cost.json", "tollgate-health.json", "tollgate-token-usage.json"]
    home = graf["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert host_path(graf, home).is_file()


def test_tollgate_config_is_valid(compose):
    """The config the compose file mounts passes `tollgate check`."""
    tg = compose["services"]["tollgate"]
    cfg = host_path(tg, "/etc/tollgate/tollgate.toml")
    assert cfg and cfg.is_file()
    binary = pathlib.Path(os.environ.get("TOLLGATE_BIN") or ROOT / "target" / "debug" / "tollgate")
    if not binary.is_file():
        pytest.skip(f"no tollgate binary at {binary}")
    r = subprocess.run([str(binary), "check", "--config", str(cfg)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_docker_compose_config_when_available():
    """`docker compose config` is the authority when the plugin is installed (it is not here)."""
    if not shutil.which("docker") or subprocess.run(
            ["docker", "compose", "version"], capture_output=True).returncode != 0:
        pytest.skip("docker compose not installed")
    r = subprocess.run(["docker", "compose", "-f", str(COMPOSE), "config", "-q"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
