"""The Nosana job definition: validated against the JobDefinition schema @nosana/sdk publishes and the SDK
validator's extra checks. Nosana is spec-only: posting a job needs a wallet-signed transaction, so it is not offered."""

from __future__ import annotations

import copy
import json

import pytest

from apps.compute.adapters import SPEC_ONLY_KINDS, UnsupportedProviderError, adapter_for, supported_kinds
from apps.compute.adapters.base import ProviderConfigError
from apps.compute.adapters.nosana import NosanaJobError, nosana_job_build, nosana_job_validate
from apps.compute.engine import engine_spec_build, vllm_serve_args
from apps.compute.models import Provider
from tests.factories import ProviderFactory

SPEC = engine_spec_build(
    model_id="Qwen/Qwen2.5-7B-Instruct", served_model_name="qwen-7b", engine_args={"max_model_len": 8192}
)


def test_the_job_passes_the_sdk_schema_and_runs_vllm_with_a_health_checked_port():
    job = json.loads(json.dumps(nosana_job_build(spec=SPEC, config={"required_vram": 24})))
    nosana_job_validate(job)  # what Nosana reads back from the JSON uploaded to IPFS

    assert job["type"] == "container"
    (op,) = job["ops"]
    assert op["type"] == "container/run"
    args = op["args"]
    assert args["image"] == "vllm/vllm-openai:latest"
    assert args["entrypoint"] == ["vllm", "serve"]
    assert args["cmd"] == vllm_serve_args(SPEC, host="0.0.0.0", port=8000)  # noqa: S104
    assert args["gpu"] is True
    assert args["required_vram"] == 24
    (port,) = args["expose"]
    assert port["port"] == 8000
    assert port["health_checks"][0] == {
        "type": "http",
        "path": "/health",
        "method": "GET",
        "expected_status": 200,
        "continuous": True,
    }


def test_the_job_never_carries_a_hugging_face_token():
    job = nosana_job_build(spec=SPEC, config={})
    assert "HF_TOKEN" not in json.dumps(job)


def test_the_public_job_never_carries_a_node_token_even_where_nodes_push_heartbeats(settings):
    settings.INFERIA_NODE_SERVER_URL = "https://inferia.example.com"

    text = json.dumps(nosana_job_build(spec=SPEC, config={}))

    assert "INFERIA_NODE_TOKEN" not in text
    assert "inf-node-" not in text


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda job: job.update(type="vm"), "type"),
        (lambda job: job.pop("ops"), "ops"),
        (lambda job: job["ops"][0].update(type="container/exec"), "container/exec"),
        (lambda job: job["ops"][0]["args"].pop("image"), "invalid"),
        (lambda job: job["ops"][0]["args"].update(gpu="yes"), "invalid"),
        (lambda job: job["ops"][0]["args"]["expose"][0]["health_checks"][0].pop("continuous"), "invalid"),
        (lambda job: job["ops"].append(copy.deepcopy(job["ops"][0])), "unique"),
        (lambda job: job["ops"][0]["args"]["expose"].append(8000), "unique"),
        (lambda job: job.update(wallet="x"), "unknown"),
    ],
)
def test_what_the_sdk_refuses_is_refused(mutate, message):
    job = copy.deepcopy(nosana_job_build(spec=SPEC, config={}))
    mutate(job)
    with pytest.raises(NosanaJobError, match=message):
        nosana_job_validate(job)


def test_several_gpus_or_a_bad_vram_figure_are_config_errors():
    spec = engine_spec_build(model_id="org/m", served_model_name="m", engine_args={"tensor_parallel_size": 2})
    with pytest.raises(ProviderConfigError, match="several GPUs"):
        nosana_job_build(spec=spec, config={})
    with pytest.raises(ProviderConfigError, match="required_vram"):
        nosana_job_build(spec=SPEC, config={"required_vram": "lots"})


def test_nosana_is_spec_only_and_never_offered():
    assert "nosana" in SPEC_ONLY_KINDS
    assert "nosana" not in supported_kinds()


@pytest.mark.django_db
def test_asking_for_a_nosana_adapter_says_why_there_is_none(org):
    provider = ProviderFactory(organization=org, name="nosana", kind=Provider.Kind.NOSANA)
    with pytest.raises(UnsupportedProviderError, match="wallet-signed"):
        adapter_for(provider)
