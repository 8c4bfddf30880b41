"""A deployment's engine arguments become vLLM's exact command line, or a clear refusal."""

from __future__ import annotations

import shlex

import pytest

from apps.compute.engine import (
    EngineArgsError,
    engine_spec_build,
    shell_join,
    vllm_serve_argv,
)


def spec(args=None, model="meta-llama/Llama-3.1-8B-Instruct", name="llama-8b"):
    return engine_spec_build(model_id=model, served_model_name=name, engine_args=args)


def test_it_builds_the_vllm_serve_command_with_real_flag_names():
    argv = vllm_serve_argv(
        spec(
            {
                "tensor_parallel_size": 2,
                "max_model_len": 8192,
                "dtype": "bfloat16",
                "quantization": "awq",
                "gpu_memory_utilization": 0.85,
                "enforce_eager": True,
                "trust_remote_code": False,
            }
        ),
        port=8123,
    )
    assert argv == [
        "vllm",
        "serve",
        "meta-llama/Llama-3.1-8B-Instruct",
        "--served-model-name",
        "llama-8b",
        "--host",
        "0.0.0.0",  # noqa: S104
        "--port",
        "8123",
        "--tensor-parallel-size",
        "2",
        "--max-model-len",
        "8192",
        "--dtype",
        "bfloat16",
        "--quantization",
        "awq",
        "--gpu-memory-utilization",
        "0.85",
        "--enforce-eager",
    ]


def test_lora_modules_enable_lora_and_are_served_by_name():
    engine = spec({"lora_modules": [{"name": "sql", "path": "org/sql-lora"}, {"name": "chat", "path": "/m/chat"}]})
    argv = vllm_serve_argv(engine)
    assert argv[argv.index("--enable-lora") + 1 :] == ["--lora-modules", "sql=org/sql-lora", "chat=/m/chat"]
    assert engine.served_names == ("llama-8b", "sql", "chat")


def test_lora_modules_also_take_an_object_of_name_to_path():
    argv = vllm_serve_argv(spec({"enable_lora": True, "max_loras": 4, "lora_modules": {"sql": "org/sql"}}))
    assert argv[argv.index("--max-loras") : argv.index("--max-loras") + 2] == ["--max-loras", "4"]
    assert argv[-3:] == ["--enable-lora", "--lora-modules", "sql=org/sql"]


def test_prefix_caching_can_be_turned_off():
    assert "--no-enable-prefix-caching" in vllm_serve_argv(spec({"enable_prefix_caching": False}))
    assert "--enable-prefix-caching" in vllm_serve_argv(spec({"enable_prefix_caching": True}))


def test_extra_args_are_appended_verbatim_as_separate_arguments():
    argv = vllm_serve_argv(spec({"extra_args": ["--chat-template", "/t/x.jinja", "--disable-log-requests"]}))
    assert argv[-3:] == ["--chat-template", "/t/x.jinja", "--disable-log-requests"]


def test_gpus_are_tensor_times_pipeline_parallel():
    assert spec({"tensor_parallel_size": 4, "pipeline_parallel_size": 2}).gpus == 8
    assert spec().gpus == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"tensor_parallel": 2}, "unknown engine argument(s) tensor_parallel"),
        ({"tensor_parallel_size": 0}, "tensor_parallel_size must be a whole number"),
        ({"tensor_parallel_size": "2"}, "tensor_parallel_size must be a whole number"),
        ({"tensor_parallel_size": True}, "tensor_parallel_size must be a whole number"),
        ({"gpu_memory_utilization": 0}, "gpu_memory_utilization must be a number above 0"),
        ({"gpu_memory_utilization": 1.5}, "gpu_memory_utilization"),
        ({"dtype": "fp128"}, "dtype must be one of"),
        ({"quantization": "awq; rm -rf /"}, "quantization must be"),
        ({"max_loras": 2}, "max_loras need enable_lora"),
        ({"enable_lora": False, "lora_modules": {"a": "b"}}, "lora_modules need enable_lora"),
        ({"lora_modules": {"a=b": "x"}}, "LoRA name"),
        ({"lora_modules": {"llama-8b": "x"}}, "cannot take the deployment's served model name"),
        ({"lora_modules": [{"name": "a", "path": "x"}, {"name": "a", "path": "y"}]}, "unique"),
        ({"extra_args": "--foo"}, "extra_args must be a list"),
        ({"extra_args": ["--port", "1"]}, "--port is set by Inferia"),
        ({"extra_args": ["--served-model-name=x"]}, "--served-model-name is set by Inferia"),
        ({"extra_args": ["positional"]}, "must start with a --flag"),
        ({"extra_args": ["--x", "a\nb"]}, "control characters"),
    ],
)
def test_it_refuses_bad_arguments_with_a_clear_error(args, message):
    with pytest.raises(EngineArgsError) as raised:
        spec(args)
    assert message in str(raised.value)


@pytest.mark.parametrize("model", ["--trust-remote-code", "a b", "x;rm", "$(id)", ""])
def test_it_refuses_model_ids_that_could_be_flags_or_shell(model):
    with pytest.raises(EngineArgsError):
        spec(model=model)


def test_served_names_cannot_be_flags():
    with pytest.raises(EngineArgsError):
        spec(name="-x")


def test_shell_join_quotes_every_argument_so_a_remote_shell_sees_the_same_argv():
    argv = vllm_serve_argv(spec({"extra_args": ["--chat-template", "{{ x }}; touch /tmp/pwned $(id)"]}))
    line = shell_join(argv)
    assert shlex.split(line) == argv
    assert "'{{ x }}; touch /tmp/pwned $(id)'" in line
