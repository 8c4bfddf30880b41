"""docker/docker-compose.yml runs the same processes as `inferia start all`; no Docker engine runs here, so
check its shape: the services, their health checks, and that every command is one the `inferia` CLI accepts."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from inferia_cli import build_parser

DOCKER = Path(__file__).resolve().parent.parent / "docker"
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
    config = yaml.safe_load((DOCKER / "prometheus.yml").read_text())
    (job,) = config["scrape_configs"]

    assert prometheus["profiles"] == ["monitoring"]
    assert job["static_configs"][0]["targets"] == ["web:8000"]
    assert "web" in SERVICES["web"]["environment"]["INFERIA_ALLOWED_HOSTS"]
    assert job["authorization"]["credentials_file"] == "/run/secrets/inferia_metrics_token"
    assert prometheus["secrets"] == ["inferia_metrics_token"]
    assert COMPOSE["secrets"]["inferia_metrics_token"] == {"environment": "INFERIA_METRICS_TOKEN"}
    assert SERVICES["web"]["environment"]["INFERIA_METRICS_TOKEN"] == "${INFERIA_METRICS_TOKEN:-}"
