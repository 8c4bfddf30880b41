"""A deployment's engine arguments, validated, and the exact `vllm serve` command line they become.

Every adapter that runs vLLM (local process, SSH container, Kubernetes pod, SkyPilot task, Nosana job, Akash SDL)
starts it from the argument list built here, so the flags are spelled once. Arguments are always an argv list,
never a shell string; where a remote shell must run them (SSH, SkyPilot's `run:`), `shell_join` quotes them.
Unknown keys are refused rather than passed through, so a typo fails at deploy time instead of on a GPU node.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from inferia_runtime.errors import DomainRefusal

if TYPE_CHECKING:
    from apps.compute.models import ModelDeployment

VLLM_IMAGE = "vllm/vllm-openai"
DEFAULT_IMAGE = f"{VLLM_IMAGE}:latest"
# A container image reference: [registry[:port]/]path[:tag][@sha256:digest], as Docker's reference grammar has it.
_IMAGE_RE = re.compile(
    r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9.-]*[a-zA-Z0-9])?(?::[0-9]{1,5})?/)?"
    r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?(?:@(?P<digest>sha256:[a-f0-9]{64}))?"
)
IMAGE_MAX_LENGTH = 255


def image_reference_check(image: object) -> str:
    """`image` if it is a container image reference pinned by a tag or a digest (empty: the default image); raises
    EngineArgsError otherwise."""
    if not isinstance(image, str):
        raise EngineArgsError("image must be a string")
    if image == "":
        return image
    if len(image) > IMAGE_MAX_LENGTH:
        raise EngineArgsError(f"image must be at most {IMAGE_MAX_LENGTH} characters")
    match = _IMAGE_RE.fullmatch(image)
    if match is None:
        raise EngineArgsError("image must be a container image reference like vllm/vllm-openai:v0.8.5")
    if not match.group("tag") and not match.group("digest"):
        raise EngineArgsError("image must be pinned by a tag (:v0.8.5) or a digest (@sha256:...)")
    return image


VLLM_DEFAULT_PORT = 8000

# A Hugging Face repo id, a local path or a URI-ish model reference; never starting with "-" (it would be a flag).
_MODEL_RE = re.compile(r"^[A-Za-z0-9_./~][A-Za-z0-9_./~:@+=-]{0,299}$")
# Served and LoRA names are what clients put in `model`: printable, no spaces, no "=" (it splits --lora-modules).
_NAME_RE = re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9_./:@+-]{0,199}$")
_WORD_RE = re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9_.:+-]{0,99}$")
_PATH_RE = re.compile(r"^[A-Za-z0-9_./~][A-Za-z0-9_./~:@+-]{0,499}$")

DTYPES = ("auto", "half", "float16", "bfloat16", "float", "float32")
KV_CACHE_DTYPES = ("auto", "fp8", "fp8_e4m3", "fp8_e5m2")
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
# Flags the adapters set themselves; letting `extra_args` set them would break routing or health checks.
RESERVED_FLAGS = ("--model", "--served-model-name", "--host", "--port", "--lora-modules", "--enable-lora")


def model_name_valid(name: object) -> bool:
    """Whether `name` can be a served or LoRA model name (what clients put in `model`)."""
    return isinstance(name, str) and bool(_NAME_RE.fullmatch(name))


class EngineArgsError(DomainRefusal):
    """Engine arguments that vLLM would refuse, or that Inferia does not let a deployment set."""


@dataclass(frozen=True)
class _Arg:
    flag: str
    check: Callable[[str, Any], Any]


def _int(low: int, high: int) -> Callable[[str, Any], int]:
    def check(key: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise EngineArgsError(f"{key} must be a whole number from {low} to {high}, not {value!r}")
        return value

    return check


def _float(low: float, high: float, *, low_open: bool = False) -> Callable[[str, Any], float]:
    def check(key: str, value: Any) -> float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if not ok or value > high or value < low or (low_open and value == low):
            bound = "above" if low_open else "from"
            raise EngineArgsError(f"{key} must be a number {bound} {low} up to {high}, not {value!r}")
        return float(value)

    return check


def _choice(*choices: Any) -> Callable[[str, Any], Any]:
    def check(key: str, value: Any) -> Any:
        if value not in choices or isinstance(value, bool):
            raise EngineArgsError(f"{key} must be one of {', '.join(map(str, choices))}, not {value!r}")
        return value

    return check


def _pattern(pattern: re.Pattern[str], what: str) -> Callable[[str, Any], str]:
    def check(key: str, value: Any) -> str:
        if not isinstance(value, str) or not pattern.fullmatch(value):
            raise EngineArgsError(f"{key} must be {what}, not {value!r}")
        return value

    return check


def _bool(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise EngineArgsError(f"{key} must be true or false, not {value!r}")
    return value


_ARGS: dict[str, _Arg] = {
    "tensor_parallel_size": _Arg("--tensor-parallel-size", _int(1, 64)),
    "pipeline_parallel_size": _Arg("--pipeline-parallel-size", _int(1, 64)),
    "max_model_len": _Arg("--max-model-len", _int(1, 16_777_216)),
    "dtype": _Arg("--dtype", _choice(*DTYPES)),
    "quantization": _Arg("--quantization", _pattern(_WORD_RE, "a quantization method name such as awq or fp8")),
    "kv_cache_dtype": _Arg("--kv-cache-dtype", _choice(*KV_CACHE_DTYPES)),
    "gpu_memory_utilization": _Arg("--gpu-memory-utilization", _float(0.0, 1.0, low_open=True)),
    "max_num_seqs": _Arg("--max-num-seqs", _int(1, 65_536)),
    "max_num_batched_tokens": _Arg("--max-num-batched-tokens", _int(1, 16_777_216)),
    "swap_space": _Arg("--swap-space", _float(0.0, 1024.0)),
    "seed": _Arg("--seed", _int(0, 2**31 - 1)),
    "revision": _Arg("--revision", _pattern(_WORD_RE, "a branch, tag or commit")),
    "tokenizer": _Arg("--tokenizer", _pattern(_MODEL_RE, "a tokenizer repo id or path")),
    "download_dir": _Arg("--download-dir", _pattern(_PATH_RE, "a directory path")),
    "trust_remote_code": _Arg("--trust-remote-code", _bool),
    "enforce_eager": _Arg("--enforce-eager", _bool),
    "enable_prefix_caching": _Arg("--enable-prefix-caching", _bool),
    "enable_chunked_prefill": _Arg("--enable-chunked-prefill", _bool),
    "max_loras": _Arg("--max-loras", _int(1, 1024)),
    "max_lora_rank": _Arg("--max-lora-rank", _choice(*LORA_RANKS)),
    "max_cpu_loras": _Arg("--max-cpu-loras", _int(1, 4096)),
}
# Keys handled by hand below (not one flag each).
_SPECIAL = ("enable_lora", "lora_modules", "extra_args")
ENGINE_ARG_KEYS = tuple(sorted((*_ARGS, *_SPECIAL)))


@dataclass(frozen=True)
class LoraModule:
    """A LoRA adapter served beside the base model; clients ask for it by `name`."""

    name: str
    path: str


@dataclass(frozen=True)
class EngineSpec:
    """What an engine needs to serve one deployment, validated: the model, its served name and its arguments."""

    model_id: str
    served_model_name: str
    args: Mapping[str, Any]
    lora_modules: tuple[LoraModule, ...] = ()
    extra_args: tuple[str, ...] = ()
    image: str = ""  # the deployment's container image; empty: DEFAULT_IMAGE

    @property
    def container_image(self) -> str:
        """The image a container adapter runs: the deployment's, else vLLM's official one."""
        return self.image or DEFAULT_IMAGE

    @property
    def served_names(self) -> tuple[str, ...]:
        """Every model name a client may ask this engine for: the deployment's, then each LoRA adapter's."""
        return (self.served_model_name, *(module.name for module in self.lora_modules))

    @property
    def gpus(self) -> int:
        """GPUs one replica needs on its node: tensor parallel times pipeline parallel size."""
        return int(self.args.get("tensor_parallel_size", 1)) * int(self.args.get("pipeline_parallel_size", 1))


def _lora_modules(value: Any) -> tuple[LoraModule, ...]:
    if isinstance(value, Mapping):
        items = list(value.items())
    elif isinstance(value, list):
        items = []
        for item in value:
            if not isinstance(item, Mapping) or set(item) - {"name", "path", "base_model_name"} or "name" not in item:
                raise EngineArgsError('each of lora_modules must be {"name": ..., "path": ...}')
            items.append((item.get("name"), item.get("path")))
    else:
        raise EngineArgsError("lora_modules must be a list of {name, path} or an object of name: path")
    modules = []
    for name, path in items:
        if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
            raise EngineArgsError(f"LoRA name {name!r} must be a model name without spaces or '='")
        if not isinstance(path, str) or not _MODEL_RE.fullmatch(path):
            raise EngineArgsError(f"LoRA {name} path {path!r} must be a repo id or a path")
        modules.append(LoraModule(name=name, path=path))
    names = [module.name for module in modules]
    if len(set(names)) != len(names):
        raise EngineArgsError("LoRA adapter names must be unique")
    return tuple(modules)


def _extra_args(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise EngineArgsError("extra_args must be a list of strings, one argument each")
    for item in value:
        if not item or len(item) > 1000 or any(ord(char) < 32 for char in item):
            raise EngineArgsError(f"extra argument {item!r} is empty, too long or has control characters")
        flag = item.split("=", 1)[0]
        if flag in RESERVED_FLAGS:
            raise EngineArgsError(f"{flag} is set by Inferia, not by extra_args")
    if value and not value[0].startswith("--"):
        raise EngineArgsError("extra_args must start with a --flag")
    return tuple(value)


def engine_spec_build(*, model_id: str, served_model_name: str, engine_args: Mapping[str, Any] | None) -> EngineSpec:
    """Validate a deployment's model, served name and engine arguments; raises EngineArgsError naming the problem."""
    if not isinstance(model_id, str) or not _MODEL_RE.fullmatch(model_id):
        raise EngineArgsError(f"model id {model_id!r} must be a repo id or a path, not starting with '-'")
    if not isinstance(served_model_name, str) or not _NAME_RE.fullmatch(served_model_name):
        raise EngineArgsError(f"served model name {served_model_name!r} must be a name without spaces or '='")
    raw = dict(engine_args or {})
    unknown = sorted(set(raw) - set(ENGINE_ARG_KEYS))
    if unknown:
        raise EngineArgsError(f"unknown engine argument(s) {', '.join(unknown)}; known: {', '.join(ENGINE_ARG_KEYS)}")
    args = {key: _ARGS[key].check(key, value) for key, value in raw.items() if key in _ARGS}
    modules = _lora_modules(raw["lora_modules"]) if "lora_modules" in raw else ()
    if "enable_lora" in raw:
        args["enable_lora"] = _bool("enable_lora", raw["enable_lora"])
    if modules:
        if args.get("enable_lora") is False:
            raise EngineArgsError("lora_modules need enable_lora")
        args["enable_lora"] = True
    if not args.get("enable_lora"):
        lora_only = sorted(key for key in ("max_loras", "max_lora_rank", "max_cpu_loras") if key in args)
        if lora_only:
            raise EngineArgsError(f"{', '.join(lora_only)} need enable_lora")
    if served_model_name in {module.name for module in modules}:
        raise EngineArgsError("a LoRA adapter cannot take the deployment's served model name")
    extra = _extra_args(raw["extra_args"]) if "extra_args" in raw else ()
    return EngineSpec(model_id, served_model_name, args, modules, extra)


def deployment_engine_spec(deployment: ModelDeployment) -> EngineSpec:
    """The validated engine spec of `deployment`."""
    spec = engine_spec_build(
        model_id=deployment.model_id,
        served_model_name=deployment.served_model_name,
        engine_args=deployment.engine_args,
    )
    return dataclasses.replace(spec, image=image_reference_check(deployment.image or ""))


def vllm_serve_args(spec: EngineSpec, *, port: int = VLLM_DEFAULT_PORT, host: str = "0.0.0.0") -> list[str]:  # noqa: S104
    """The arguments after `vllm serve`: the model, then every flag, in a stable order."""
    argv = [spec.model_id, "--served-model-name", spec.served_model_name, "--host", host, "--port", str(port)]
    for key, arg in _ARGS.items():
        if key not in spec.args:
            continue
        value = spec.args[key]
        if isinstance(value, bool):
            if key == "enable_prefix_caching" and not value:
                argv.append("--no-enable-prefix-caching")  # on by default in vLLM's V1 engine
            elif value:
                argv.append(arg.flag)
        else:
            argv += [arg.flag, str(value)]
    if spec.args.get("enable_lora"):
        argv.append("--enable-lora")
    if spec.lora_modules:
        argv += ["--lora-modules", *(f"{module.name}={module.path}" for module in spec.lora_modules)]
    argv += spec.extra_args
    return argv


def vllm_serve_argv(spec: EngineSpec, *, port: int = VLLM_DEFAULT_PORT, host: str = "0.0.0.0") -> list[str]:  # noqa: S104
    """The whole `vllm serve ...` command line, as an argv list."""
    return ["vllm", "serve", *vllm_serve_args(spec, port=port, host=host)]


def vllm_environment(spec: EngineSpec) -> dict[str, str]:
    """Environment variables a vLLM replica of `spec` needs beside its flags: runtime LoRA loading when LoRA is on
    (the load/unload endpoints Inferia's LoRA sync calls exist only with it)."""
    return {"VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"} if spec.args.get("enable_lora") else {}


def shell_join(argv: list[str]) -> str:
    """`argv` as one POSIX shell command line, every argument quoted, for the places that only take a string."""
    return shlex.join(argv)
