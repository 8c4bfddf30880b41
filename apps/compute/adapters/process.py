"""Replicas that are processes on the worker host (the simulator and local vLLM), tracked by pidfiles.

Each replica runs detached in its own session and process group, so it outlives a worker restart; its pidfile
(JSON under `DATA_DIR/replicas/`) records the pid, the process's start time (a reused pid is not mistaken for it)
and its port. Every process also carries `INFERIA_REPLICA_KEY` in its environment: if a worker dies between
starting a process and writing its pidfile, the next provision or teardown finds that orphan by the marker and
kills it, so a re-run never leaves a duplicate.
"""

from __future__ import annotations

import collections
import contextlib
import ipaddress
import json
import os
import re
import signal
import socket
import subprocess
from abc import abstractmethod
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil
from django.conf import settings

from apps.compute.adapters.base import (
    AdapterError,
    ComputeAdapter,
    ProviderConfigError,
    ProvisionResult,
    ReplicaPhase,
    ReplicaStatus,
    engine_pending,
    engine_status_settle,
)

if TYPE_CHECKING:
    from apps.compute.models import Replica

REPLICA_ENV = "INFERIA_REPLICA_KEY"
STOP_TIMEOUT_S = 10.0
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME_RE = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*$")


def replicas_dir() -> Path:
    """Where pidfiles and logs of process replicas live."""
    path = Path(settings.DATA_DIR) / "replicas"
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass(frozen=True)
class ProcessRecord:
    """A pidfile's content: which process serves a replica, and where."""

    key: str
    pid: int
    create_time: float
    port: int
    bind_host: str
    argv: list[str]
    log_path: str

    def process(self) -> psutil.Process | None:
        """The live process this record names, or None if it exited (or its pid now belongs to another)."""
        try:
            proc = psutil.Process(self.pid)
            if abs(proc.create_time() - self.create_time) > 0.05 or proc.status() == psutil.STATUS_ZOMBIE:
                return None
        except psutil.Error:
            return None
        return proc


def replica_key(replica: Replica) -> str:
    """A name for `replica` that a later database (tests, a reset) reusing its id cannot collide with."""
    return f"replica-{replica.pk}-{int(replica.created_at.timestamp() * 1_000_000)}"


def _pidfile(key: str) -> Path:
    return replicas_dir() / f"{key}.json"


def _record_read(key: str) -> ProcessRecord | None:
    try:
        return ProcessRecord(**json.loads(_pidfile(key).read_text()))
    except (FileNotFoundError, ValueError, TypeError):
        return None


def _record_write(record: ProcessRecord) -> None:
    path = _pidfile(record.key)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(asdict(record)))
    temporary.replace(path)  # atomic: a reader never sees half a pidfile


def _marked_processes(key: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get(REPLICA_ENV) == key:
                found.append(proc)
        except psutil.Error:
            continue  # other users' processes, or gone meanwhile
    return found


def _stop(processes: list[psutil.Process]) -> None:
    groups = set()
    for proc in processes:
        with contextlib.suppress(psutil.Error, ProcessLookupError, PermissionError):
            groups.add(os.getpgid(proc.pid))
    for group in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, signal.SIGTERM)
    _gone, alive = psutil.wait_procs(processes, timeout=STOP_TIMEOUT_S)
    for group in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, signal.SIGKILL)
    psutil.wait_procs(alive, timeout=STOP_TIMEOUT_S)


def process_replica_stop(key: str, *, forget_log: bool = False) -> bool:
    """Stop the process replica named `key` (its whole process group) and forget it; whether one was running.

    `forget_log` also deletes its log (teardown); a restart keeps it for diagnosis."""
    record = _record_read(key)
    processes = _marked_processes(key)
    live = record.process() if record else None
    if live is not None and live.pid not in {proc.pid for proc in processes}:
        processes.append(live)
    _stop(processes)
    _pidfile(key).unlink(missing_ok=True)
    if forget_log:
        (replicas_dir() / f"{key}.log").unlink(missing_ok=True)
    return bool(processes)


def process_replicas_stop_all() -> int:
    """Stop every process replica this data directory tracks (`inferia start all` stopping); how many ran."""
    return sum(process_replica_stop(path.stem) for path in sorted(replicas_dir().glob("replica-*.json")))


def _free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _host(value: Any, key: str) -> str:
    if not isinstance(value, str):
        raise ProviderConfigError(f"{key} must be a host name or address")
    with contextlib.suppress(ValueError):
        return str(ipaddress.ip_address(value))
    if not _HOSTNAME_RE.fullmatch(value):
        raise ProviderConfigError(f"{key} {value!r} is not a host name or address")
    return value


# What an engine process inherits from the worker: what it needs to run and find GPUs and caches, never the
# worker's own secrets (DATABASE_URL, SECRET_KEY, INFERIA_FERNET_KEYS, cloud credentials, ...).
_INHERITED_NAMES = frozenset(
    {
        "PATH",
        "HOME",
        "USER",
        "LANG",
        "LC_ALL",
        "TZ",
        "TMPDIR",
        "PYTHONPATH",
        "VIRTUAL_ENV",
        "LD_LIBRARY_PATH",
        "HF_HOME",
        "HF_HUB_OFFLINE",
        "TRANSFORMERS_CACHE",
        "XDG_CACHE_HOME",
    }
)
_INHERITED_PREFIXES = ("CUDA_", "NCCL_", "VLLM_", "NVIDIA_", "INFERIA_SIM_")


def engine_base_environment() -> dict[str, str]:
    """The part of the worker's environment an engine process may see."""
    return {
        name: value
        for name, value in os.environ.items()
        if name in _INHERITED_NAMES or name.startswith(_INHERITED_PREFIXES)
    }


class ProcessAdapter(ComputeAdapter):
    """Runs each replica as a detached process on the worker host. Config: `bind_host` (default 127.0.0.1) and
    `advertise_host` (how the gateway reaches this host; default the bind host)."""

    @abstractmethod
    def command(self, replica: Replica, *, host: str, port: int) -> list[str]:
        """The argv that starts `replica`'s engine on `host:port`."""

    def environment(self, replica: Replica) -> dict[str, str]:
        """Extra environment variables for the engine process (secrets go here, never into argv)."""
        return {}

    @property
    def bind_host(self) -> str:
        return _host(self.config.get("bind_host", "127.0.0.1"), "bind_host")

    @property
    def advertise_host(self) -> str:
        return _host(self.config.get("advertise_host", self.bind_host), "advertise_host")

    def _endpoint(self, port: int) -> str:
        host = self.advertise_host
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def connection_check(self, *, timeout_s: float) -> str:
        # Nothing remote to reach: the engine runs on the worker host. The settings are what can be wrong.
        return f"Replicas run on the worker host, bound to {self.bind_host} and reached at {self.advertise_host}."

    def provision(self, replica: Replica) -> ProvisionResult:
        key = replica_key(replica)
        record = _record_read(key)
        if record is not None and record.process() is not None:
            return self._result(record, "already running")
        process_replica_stop(key)  # a dead record, or an orphan a killed worker started without recording it
        port = _free_port(self.bind_host)
        argv = self.command(replica, host=self.bind_host, port=port)
        log_path = replicas_dir() / f"{key}.log"
        env = {**engine_base_environment(), **self.environment(replica), REPLICA_ENV: key}
        with open(log_path, "ab") as log:
            try:
                proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    start_new_session=True,  # its own process group: outlives the worker, killed as a group
                    close_fds=True,
                )
            except OSError as error:
                raise AdapterError(f"cannot start {argv[0]}: {error.strerror}") from None
        record = ProcessRecord(
            key=key,
            pid=proc.pid,
            create_time=psutil.Process(proc.pid).create_time(),
            port=port,
            bind_host=self.bind_host,
            argv=argv,
            log_path=str(log_path),
        )
        _record_write(record)
        return self._result(record, f"started pid {proc.pid} on port {port}")

    def _result(self, record: ProcessRecord, message: str) -> ProvisionResult:
        handle = {"key": record.key, "pid": record.pid, "port": record.port, "host": socket.gethostname()}
        return ProvisionResult(endpoint=self._endpoint(record.port), handle=handle, messages=(message,))

    def status(self, replica: Replica) -> ReplicaStatus:
        return engine_status_settle(self.node_status(replica))

    def node_status(self, replica: Replica) -> ReplicaStatus:
        handle = replica.provider_handle or {}
        if not handle.get("key"):
            return ReplicaStatus(ReplicaPhase.STOPPED, "not provisioned")
        if handle.get("host") != socket.gethostname():
            return engine_pending(replica.endpoint, f"runs on {handle.get('host')}; judged by /health only")
        record = _record_read(handle["key"])
        if record is None:
            return ReplicaStatus(ReplicaPhase.FAILED, "its pidfile is gone")
        if record.process() is None:
            return ReplicaStatus(ReplicaPhase.FAILED, f"process {record.pid} exited: {self._last_line(record)}")
        host = record.bind_host if record.bind_host not in ("0.0.0.0", "::") else "127.0.0.1"  # noqa: S104
        return engine_pending(f"http://[{host}]:{record.port}" if ":" in host else f"http://{host}:{record.port}")

    @staticmethod
    def _last_line(record: ProcessRecord) -> str:
        lines = _tail(Path(record.log_path), 1)
        return lines.strip() or "no output"

    def logs(self, replica: Replica, tail: int = 200) -> str:
        key = (replica.provider_handle or {}).get("key") or replica_key(replica)
        return _tail(replicas_dir() / f"{key}.log", tail)

    def teardown(self, replica: Replica) -> None:
        process_replica_stop((replica.provider_handle or {}).get("key") or replica_key(replica), forget_log=True)


def _tail(path: Path, lines: int) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as file:
            return "".join(collections.deque(file, maxlen=max(lines, 0)))
    except FileNotFoundError:
        return ""
