"""The monitoring files (docker/monitoring/): the alert rules pass `promtool check rules`, and `promtool test rules`
fires every alert on recorded series; the Kubernetes monitoring overlay's PrometheusRule carries the same rules;
the compose `monitoring` profile loads the rules and Grafana's provisioning, and the dashboards name the data source
that provisioning creates. (That every metric a dashboard or rule names is one Inferia exports is checked against a
real scrape: tests/gateway/test_platform_metrics.py.)"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
MONITORING = REPO / "docker" / "monitoring"
RULES = MONITORING / "rules" / "inferia.rules.yml"
RULE_TESTS = MONITORING / "rules" / "inferia.rules.test.yml"
PROMETHEUS_RULE = REPO / "docker" / "kubernetes" / "overlays" / "monitoring" / "prometheusrule.yaml"
GRAFANA = MONITORING / "grafana"
# One copy of the dashboards, for the compose profile and the Kubernetes overlay's ConfigMap.
DASHBOARDS = REPO / "docker" / "kubernetes" / "overlays" / "monitoring" / "dashboards"
COMPOSE = yaml.safe_load((REPO / "docker" / "docker-compose.yml").read_text())["services"]
ALERTS_REQUIRED = {
    "InferiaHighErrorRate",
    "InferiaSlowFirstToken",
    "InferiaSlowRequests",
    "InferiaReplicaUnhealthy",
    "InferiaDeploymentFailed",
    "InferiaUsageFlushLagging",
    "InferiaCeleryQueueBacklog",
    "InferiaBudgetNearlyExhausted",
    "InferiaPostgreSQLUnreachable",
    "InferiaRedisUnreachable",
}


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.skip("promtool is not installed (Debian's prometheus package; scripts/ensure-services.sh installs it)")
    return found


def alerts() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def test_promtool_accepts_the_rules():
    done = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in done.stdout


def test_recorded_series_fire_every_alert():
    done = subprocess.run(
        [promtool(), "test", "rules", RULE_TESTS.name], cwd=RULE_TESTS.parent, capture_output=True, text=True,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    fired = {
        case["alertname"]
        for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]
        for case in test["alert_rule_test"]
        if case["exp_alerts"]
    }
    assert fired == {rule["alert"] for rule in alerts()}


def test_the_alerts_a_platform_team_needs_are_there():
    assert {rule["alert"] for rule in alerts()} >= ALERTS_REQUIRED
    for rule in alerts():
        assert rule["labels"]["severity"] in ("page", "warning")
        assert rule["annotations"]["summary"]


def test_the_kubernetes_prometheus_rule_has_the_same_rules():
    resource = yaml.safe_load(PROMETHEUS_RULE.read_text())
    assert resource["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"]


def test_the_monitoring_profile_loads_the_rules_and_grafanas_provisioning():
    prometheus, grafana = COMPOSE["prometheus"], COMPOSE["grafana"]
    assert prometheus["profiles"] == grafana["profiles"] == ["monitoring"]
    config = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    mounts = dict(volume.rsplit(":", 1)[0].split(":", 1) for volume in prometheus["volumes"] if volume.startswith("."))
    assert mounts["./monitoring/rules"] == "/etc/prometheus/rules"
    assert config["rule_files"] == ["/etc/prometheus/rules/inferia.rules.yml"]
    grafana_mounts = dict(volume.rsplit(":", 1)[0].split(":", 1) for volume in grafana["volumes"] if "./" in volume)
    assert grafana_mounts["./monitoring/grafana/provisioning"] == "/etc/grafana/provisioning"
    provider = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "inferia.yml").read_text())["providers"][0]
    assert grafana_mounts["./kubernetes/overlays/monitoring/dashboards"] == provider["options"]["path"]
    (source,) = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())["datasources"]
    assert source["url"] == "http://prometheus:9090"


def test_every_dashboard_panel_queries_the_provisioned_prometheus():
    (source,) = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())["datasources"]
    dashboards = [json.loads(path.read_text()) for path in sorted(DASHBOARDS.glob("*.json"))]
    assert {dashboard["uid"] for dashboard in dashboards} == {"inferia-gateway", "inferia-fleet", "inferia-usage"}
    for dashboard in dashboards:
        for panel in dashboard["panels"]:
            assert panel["targets"], panel["title"]
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == source["uid"]
                assert "inferia_" in target["expr"]
