"""`local`: replicas are `vllm serve` processes on the worker host, for a worker that has GPUs and vLLM."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from django.conf import settings

from apps.compute.adapters.base import ProviderConfigError
from apps.compute.adapters.process import ProcessAdapter
from apps.compute.engine import vllm_environment, vllm_serve_args

if TYPE_CHECKING:
    from apps.compute.models import Replica

_DEVICES_RE = re.compile(r"^\d+(,\d+)*$")


class LocalVllmAdapter(ProcessAdapter):
    """Starts `vllm serve <model> ...` with the deployment's engine arguments.

    The executable is the `INFERIA_VLLM_BIN` setting (default `vllm` on PATH), never provider config: a provider
    editor must not choose what the worker executes. Config: `cuda_visible_devices` ("0,1"), `bind_host`,
    `advertise_host`; credentials: `hf_token` (passed as HF_TOKEN in the environment, never on the command line).
    """

    kind = "local"

    def command(self, replica: Replica, *, host: str, port: int) -> list[str]:
        spec = self.engine_spec(replica.deployment)
        program = getattr(settings, "INFERIA_VLLM_BIN", "vllm")
        return [program, "serve", *vllm_serve_args(spec, host=host, port=port)]

    def environment(self, replica: Replica) -> dict[str, str]:
        env: dict[str, str] = vllm_environment(self.engine_spec(replica.deployment))
        devices = self.config.get("cuda_visible_devices")
        if devices is not None:
            if not isinstance(devices, str) or not _DEVICES_RE.fullmatch(devices):
                raise ProviderConfigError("cuda_visible_devices must be GPU indexes like 0,1")
            env["CUDA_VISIBLE_DEVICES"] = devices
        token = self.credentials().get("hf_token")
        if token:
            env["HF_TOKEN"] = str(token)
        return env
