"""The Akash SDL: validated against Akash's published SDL schema (from @akashnetwork/chain-sdk) and the SDK's
cross-reference checks. Akash is spec-only: deployments need a wallet-signed transaction, so it is not offered."""

from __future__ import annotations

import copy

import pytest
import yaml

from apps.compute.adapters import SPEC_ONLY_KINDS, UnsupportedProviderError, adapter_for, supported_kinds
from apps.compute.adapters.akash import AkashSdlError, akash_sdl_build, akash_sdl_validate, akash_sdl_yaml
from apps.compute.adapters.base import ProviderConfigError
from apps.compute.engine import engine_spec_build, vllm_serve_args
from apps.compute.models import ComputePool, Provider
from tests.factories import ProviderFactory

SPEC = engine_spec_build(
    model_id="meta-llama/Llama-3.1-70B-Instruct",
    served_model_name="llama-70b",
    engine_args={"tensor_parallel_size": 2, "max_model_len": 8192},
)


def pool(gpu_type="H100", gpus=2):
    return ComputePool(name="akash-pool", gpu_type=gpu_type, gpus_per_node=gpus)


def test_the_sdl_passes_akashs_schema_and_runs_vllm_on_the_pools_gpus():
    sdl = yaml.safe_load(akash_sdl_yaml(akash_sdl_build(pool=pool(), spec=SPEC, config={})))
    akash_sdl_validate(sdl)  # what Akash would read back from the YAML file

    assert sdl["version"] == "2.0"
    service = sdl["services"]["vllm"]
    assert service["image"] == "vllm/vllm-openai:latest"
    assert service["command"] == ["vllm", "serve"]
    assert service["args"] == vllm_serve_args(SPEC, host="0.0.0.0", port=8000)  # noqa: S104
    assert service["expose"] == [{"port": 8000, "as": 80, "proto": "tcp", "to": [{"global": True}]}]
    gpu = sdl["profiles"]["compute"]["vllm"]["resources"]["gpu"]
    assert gpu == {"units": 2, "attributes": {"vendor": {"nvidia": [{"model": "h100"}]}}}
    assert sdl["deployment"] == {"vllm": {"akash": {"profile": "vllm", "count": 1}}}
    assert sdl["profiles"]["placement"]["akash"]["pricing"]["vllm"]["denom"] == "uakt"
    assert not any(item.startswith("HF_TOKEN=") for item in service["env"])


def test_a_gpu_type_with_memory_becomes_model_and_ram():
    sdl = akash_sdl_build(pool=pool("A100-80GB"), spec=SPEC, config={"gpu_interface": "sxm"})
    (model,) = sdl["profiles"]["compute"]["vllm"]["resources"]["gpu"]["attributes"]["vendor"]["nvidia"]
    assert model == {"model": "a100", "ram": "80Gi", "interface": "sxm"}


def test_the_hf_token_is_passed_as_env_only_when_given():
    sdl = akash_sdl_build(pool=pool(), spec=SPEC, config={}, hf_token="hf_x")
    assert "HF_TOKEN=hf_x" in sdl["services"]["vllm"]["env"]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda sdl: sdl.update(version="3.0"), "version"),
        (lambda sdl: sdl["services"]["vllm"]["expose"][0].update(port=70000), "70000"),
        (lambda sdl: sdl["profiles"]["compute"]["vllm"]["resources"]["gpu"]["attributes"].update(vendr={}), "vendr"),
        (lambda sdl: sdl["profiles"]["compute"]["vllm"]["resources"].pop("memory"), "memory"),
        (lambda sdl: sdl["profiles"]["placement"]["akash"]["pricing"]["vllm"].update(denom="usd"), "usd"),
        (lambda sdl: sdl["profiles"]["placement"].update(other=sdl["profiles"]["placement"].pop("akash")), "akash"),
        (lambda sdl: sdl["services"]["vllm"]["params"]["storage"].pop("model-cache"), "mount path"),
        (lambda sdl: sdl["profiles"]["compute"]["vllm"]["resources"]["gpu"].pop("attributes"), "vendor"),
    ],
)
def test_what_akash_refuses_is_refused(mutate, message):
    sdl = copy.deepcopy(akash_sdl_build(pool=pool(), spec=SPEC, config={}))
    mutate(sdl)
    with pytest.raises(AkashSdlError, match=message):
        akash_sdl_validate(sdl)


def test_bad_pools_and_config_are_config_errors():
    with pytest.raises(ProviderConfigError, match="GPU type"):
        akash_sdl_build(pool=pool(""), spec=SPEC, config={})
    with pytest.raises(ProviderConfigError, match="needs 2"):
        akash_sdl_build(pool=pool(gpus=1), spec=SPEC, config={})
    with pytest.raises(ProviderConfigError, match="memory"):
        akash_sdl_build(pool=pool(), spec=SPEC, config={"memory": "lots"})


def test_akash_is_spec_only_and_never_offered():
    assert "akash" in SPEC_ONLY_KINDS
    assert "akash" not in supported_kinds()


@pytest.mark.django_db
def test_asking_for_an_akash_adapter_says_why_there_is_none(org):
    provider = ProviderFactory(organization=org, name="akash", kind=Provider.Kind.AKASH)
    with pytest.raises(UnsupportedProviderError, match="wallet-signed"):
        adapter_for(provider)
