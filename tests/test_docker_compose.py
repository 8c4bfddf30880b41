"""docker/docker-compose.yml runs the same processes as `inferia start all`; no Docker engine runs here, so
check its shape: the services, their health checks, and that every command is one the `inferia` CLI accepts; and
docker/Dockerfile's: the wheel built and installed with the pinned set, and a health check on web's /healthz."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from django.urls import resolve

from inferia_cli import build_parser
from inferia_cli.processes import endpoints_from_env

REPO = Path(__file__).resolve().parent.parent
DOCKER = REPO / "docker"
COMPOSE = yaml.safe_load((DOCKER / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
INFERIA_SERVICES = sorted(name for name, service in SERVICES.items() if "build" in service)


def test_it_has_the_servers_and_every_process():
    assert {"postgres", "redis", "web", "worker", "beat", "sim"} <= set(SERVICES)


def test_the_image_runs_the_inferia_command_as_a_non_root_user():
    dockerfile = (DOCKER / "Dockerfile").read_text()

    assert dockerfile.startswith("# ")
    assert "FROM python:3.11-slim" in dockerfile
    assert 'ENTRYPOINT ["inferia"]' in dockerfile
    assert "\nUSER inferia\n" in dockerfile


@pytest.mark.parametrize("name", INFERIA_SERVICES)
def test_each_command_is_one_the_cli_accepts(name):
    command = SERVICES[name]["command"]

    args = build_parser().parse_args(command)  # argparse exits on anything it does not know

    assert args.command in {"init", "start"}


@pytest.mark.parametrize("role", ["web", "worker", "beat", "sim"])
def test_each_role_of_start_all_has_its_service(role):
    assert SERVICES[role]["command"] == ["start", role]


@pytest.mark.parametrize("name", ["postgres", "redis", "web", "worker", "beat", "sim"])
def test_each_long_running_service_has_a_health_check(name):
    assert SERVICES[name]["healthcheck"]["test"]


@pytest.mark.parametrize("name", ["init", "web", "worker", "beat"])
def test_the_platform_talks_to_the_servers_by_url_never_the_embedded_default(name):
    environment = SERVICES[name]["environment"]

    assert environment["DATABASE_URL"].startswith("postgres://")
    assert environment["REDIS_URL"].startswith("redis://")
    assert SERVICES[name]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_migrations_run_once_before_the_processes_start():
    for name in ("web", "worker", "beat"):
        assert SERVICES[name]["depends_on"]["init"]["condition"] == "service_completed_successfully"


def test_prometheus_scrapes_web_with_the_token_web_requires():
    prometheus = SERVICES["prometheus"]
    config = yaml.safe_load((DOCKER / "monitoring" / "prometheus.yml").read_text())
    (job,) = config["scrape_configs"]

    assert prometheus["profiles"] == ["monitoring"]
    assert job["static_configs"][0]["targets"] == ["web:8000"]
    assert "web" in SERVICES["web"]["environment"]["INFERIA_ALLOWED_HOSTS"]
    assert job["authorization"]["credentials_file"] == "/run/secrets/inferia_metrics_token"
    assert prometheus["secrets"] == ["inferia_metrics_token"]
    assert COMPOSE["secrets"]["inferia_metrics_token"] == {"environment": "INFERIA_METRICS_TOKEN"}
    assert SERVICES["web"]["environment"]["INFERIA_METRICS_TOKEN"] == "${INFERIA_METRICS_TOKEN:-}"


def _dockerfile_stages() -> list[list[tuple[str, str]]]:
    """docker/Dockerfile as stages of (INSTRUCTION, arguments), continuation lines joined, comments dropped."""
    text = (DOCKER / "Dockerfile").read_text()
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    stages: list[list[tuple[str, str]]] = []
    for logical in "\n".join(lines).replace("\\\n", " ").splitlines():
        if not logical.strip():
            continue
        instruction, _, arguments = logical.strip().partition(" ")
        if instruction.upper() == "FROM":
            stages.append([])
        stages[-1].append((instruction.upper(), " ".join(arguments.split())))
    return stages


def _arguments(stage: list[tuple[str, str]], instruction: str) -> list[str]:
    return [arguments for name, arguments in stage if name == instruction]


def test_the_image_builds_the_wheel_then_installs_it_with_the_pinned_set():
    build, final = _dockerfile_stages()
    (build_from,) = _arguments(build, "FROM")
    stage_name = build_from.split(" AS ")[1]
    (build_run,) = _arguments(build, "RUN")
    (install,) = _arguments(final, "RUN")
    requirements = (REPO / "requirements.txt").read_text().splitlines()

    assert "python -m build --outdir /dist ." in build_run
    assert "gcc" in build_run, "the wheel carries the compiled helpers of the hot path"
    assert [line for line in requirements if line.startswith("build==")], "the build stage installs the pinned build"
    assert f"--from={stage_name} /dist/" in _arguments(final, "COPY")[0]
    assert "pip install --constraint /tmp/dist/constraints.txt /tmp/dist/inferia-*.whl" in install
    assert " -e " not in install
    assert "requirements.txt" not in install
    assert not [copy for copy in _arguments(final, "COPY") if "--from" not in copy], "no source tree in the image"


def test_what_the_build_stage_copies_exists_and_its_ignore_file_keeps_local_builds_out():
    build, _ = _dockerfile_stages()
    ignored = (DOCKER / "Dockerfile.dockerignore").read_text().splitlines()

    for copy in _arguments(build, "COPY"):
        *sources, _ = copy.split()
        for source in sources:
            assert (REPO / source).exists(), source
    assert {"dist", "build", ".venv", "*.egg-info"} <= set(ignored)


def test_the_health_check_asks_the_web_process_on_the_port_the_image_exposes(monkeypatch):
    monkeypatch.delenv("INFERIA_PORT", raising=False)  # the CLI's own default
    _, final = _dockerfile_stages()
    (health,) = _arguments(final, "HEALTHCHECK")
    (exposed,) = _arguments(final, "EXPOSE")
    url = re.search(r"http://127\.0\.0\.1:(\d+)(/\S*?)'", health)
    environment = " ".join(_arguments(final, "ENV"))

    assert url, health
    port, path = url.groups()
    assert resolve(path).url_name == "healthz"
    assert port == exposed == str(endpoints_from_env().port)
    assert f"INFERIA_PORT={port}" in environment
    assert _arguments(final, "CMD") == ['["start", "web"]']
