"""The Kubernetes manifests (docker/kubernetes/), rendered as an operator would (`kubectl kustomize`) and checked:
every object against a current Kubernetes version's schemas (kubernetes-validate), prometheus-operator's objects
against the CRDs it publishes (vendored), and what the pods run against the CLI, the settings and the URLs."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml
from django.conf import settings
from django.urls import resolve

from inferia_cli import build_parser

REPO = Path(__file__).resolve().parents[2]
KUBERNETES = REPO / "docker" / "kubernetes"
KUBERNETES_VERSION = "1.33.0"
OVERLAYS = ("base", "overlays/production", "overlays/monitoring")
CRDS = {
    ("monitoring.coreos.com/v1", kind): KUBERNETES / "schemas" / f"monitoring.coreos.com_{plural}.yaml"
    for kind, plural in (("ServiceMonitor", "servicemonitors"), ("PrometheusRule", "prometheusrules"))
}


def render(overlay: str, tmp_path: Path) -> list[dict]:
    """The overlay's objects, rendered from a copy whose production Secret comes from the shipped example."""
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl (Debian's kubernetes-client) must be installed to render the manifests"
    tree = tmp_path / "kubernetes"
    shutil.copytree(KUBERNETES, tree)
    production = tree / "overlays" / "production"
    shutil.copy(production / "secrets.env.example", production / "secrets.env")
    done = subprocess.run([kubectl, "kustomize", str(tree / overlay)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    return [document for document in yaml.safe_load_all(done.stdout) if document]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_is_valid_for_kubernetes_or_its_crd(overlay, tmp_path):
    objects = render(overlay, tmp_path)
    assert objects
    for manifest in objects:
        crd = CRDS.get((manifest["apiVersion"], manifest["kind"]))
        if crd is None:
            kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)
            continue
        definition = yaml.safe_load(crd.read_text())
        schema = definition["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        # Not checked against the metaschema: the CRDs' patterns are Go's regular expressions.
        jsonschema.Draft7Validator(schema).validate(manifest)


def _by_kind(objects: list[dict], kind: str, name: str) -> dict:
    return next(o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name)


def _pods(objects: list[dict]) -> list[dict]:
    return [o["spec"]["template"]["spec"] for o in objects if o["kind"] in ("Deployment", "Job")]


def test_the_web_drains_before_it_stops_and_is_probed_without_its_dependencies(tmp_path):
    objects = render("overlays/production", tmp_path)
    web = _by_kind(objects, "Deployment", "inferia-web")["spec"]["template"]["spec"]
    container = web["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[:2] == ["inferia", "drain"]
    notice = float(pre_stop[pre_stop.index("--wait") + 1])
    drain = float(_by_kind(objects, "ConfigMap", "inferia-config")["data"]["INFERIA_DRAIN_SECONDS"])
    assert web["terminationGracePeriodSeconds"] > notice + drain
    for path in ("/readyz", "/livez", "/metrics"):
        resolve(path)  # Django serves them
    kinds = {(o["kind"], o["metadata"]["name"]) for o in objects}
    assert {("HorizontalPodAutoscaler", "inferia-web"), ("PodDisruptionBudget", "inferia-web")} <= kinds
    beat = _by_kind(objects, "Deployment", "inferia-beat")["spec"]
    assert (beat["replicas"], beat["strategy"]["type"]) == (1, "Recreate")
    ingress = _by_kind(objects, "Ingress", "inferia")["metadata"]["annotations"]
    assert ingress["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"
    assert int(ingress["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 600


def test_every_pod_runs_unprivileged_on_a_read_only_root_with_bounded_memory(tmp_path):
    for pod in _pods(render("overlays/production", tmp_path)):
        assert pod["securityContext"]["runAsNonRoot"] is True
        for container in pod["containers"]:
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True
            assert security["allowPrivilegeEscalation"] is False
            assert container["resources"]["requests"]
            assert container["resources"]["limits"]["memory"]
            mounted = {mount["mountPath"] for mount in container["volumeMounts"]}
            assert {"/tmp", "/data"} <= mounted  # the only places a read-only root leaves to write


def test_what_the_pods_run_and_read_exists_in_the_cli_settings_and_readme(tmp_path):
    objects = render("overlays/monitoring", tmp_path)
    parser = build_parser()
    readme = (REPO / "README.md").read_text()
    for pod in _pods(objects):
        for container in pod["containers"]:
            parser.parse_args(container["args"])  # exits on a command the CLI lacks
            pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command")
            if pre_stop:
                parser.parse_args(pre_stop[1:])
    names = set(_by_kind(objects, "ConfigMap", "inferia-config")["data"])
    names |= set(_by_kind(objects, "Secret", "inferia-secrets")["data"])
    for name in names:
        assert name in readme, f"{name} is set by the manifests but not documented in the README"
    scrape = _by_kind(objects, "ServiceMonitor", "inferia-web")["spec"]["endpoints"][0]["authorization"]
    assert scrape["credentials"]["key"] in names
    assert settings.INFERIA_DRAIN_SECONDS  # the setting the grace period is sized against exists


def test_every_metric_an_alert_names_is_one_inferia_exports(tmp_path):
    rules = _by_kind(render("overlays/monitoring", tmp_path), "PrometheusRule", "inferia")
    exported = "".join(path.read_text() for path in (REPO / "apps").rglob("metrics*.py"))
    for group in rules["spec"]["groups"]:
        for rule in group["rules"]:
            for metric in set(re.findall(r"\binferia_[a-z_]+", rule["expr"])):
                base = re.sub(r"_(total|bucket|count|sum)$", "", metric)
                assert f'"{base}"' in exported, f"{rule['alert']} names {metric}, which Inferia does not export"


def test_the_monitoring_overlay_ships_every_dashboard_to_grafanas_sidecar(tmp_path):
    dashboards = _by_kind(render("overlays/monitoring", tmp_path), "ConfigMap", "inferia-grafana-dashboards")
    assert dashboards["metadata"]["labels"]["grafana_dashboard"] == "1"
    shipped = {name: json.loads(text)["uid"] for name, text in dashboards["data"].items()}
    assert shipped == {"gateway.json": "inferia-gateway", "fleet.json": "inferia-fleet", "usage.json": "inferia-usage"}
