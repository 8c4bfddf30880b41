"""The command lines of Inferia's processes: web (the ASGI server), worker, beat and a simulated node.

Built from the environment without importing Django, so that `inferia start` begins at once; the children
import Django themselves.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from inferia_cli.launcher import ProcessSpec
from inferia_runtime.env import ConfigError, env_bool, env_float, env_int, env_str

ROLES = ("web", "worker", "beat", "sim")
# What `inferia start all` runs: the worker provisions model replicas itself (the simulator adapter in the demo).
ALL_ROLES = ("web", "worker", "beat")
# Must match celery_app.app.QUEUE_NAMES (a test holds them together); read here to avoid importing Celery.
WORKER_QUEUES = ("default", "provisioning", "health", "usage", "knowledge")
SERVERS = ("uvicorn", "daphne")
CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")
# The served model name of the demo deployment (and what a standalone `inferia start sim` serves by default).
DEMO_MODEL = "demo-chat"


@dataclass(frozen=True)
class Endpoints:
    """Where the web server and the simulated node listen."""

    host: str
    port: int
    sim_host: str
    sim_port: int

    @property
    def web_url(self) -> str:
        return f"http://{_url_host(self.host)}:{self.port}"

    @property
    def sim_url(self) -> str:
        return f"http://{_url_host(self.sim_host)}:{self.sim_port}"


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", "", "::"):  # noqa: S104 - a wildcard bind; clients reach it on loopback
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def data_dir() -> Path:
    """The data directory, resolved exactly as settings.DATA_DIR is."""
    return Path(env_str("INFERIA_DATA_DIR", ".inferia")).resolve()


def endpoints_from_env(*, port: int | None = None, sim_port: int | None = None) -> Endpoints:
    """INFERIA_HOST/INFERIA_PORT (default 127.0.0.1:8000) and INFERIA_SIM_HOST/INFERIA_SIM_PORT (8100)."""
    return Endpoints(
        host=env_str("INFERIA_HOST", "127.0.0.1"),
        port=port or env_int("INFERIA_PORT", 8000),
        sim_host=env_str("INFERIA_SIM_HOST", "127.0.0.1"),
        sim_port=sim_port or env_int("INFERIA_SIM_PORT", 8100),
    )


def drain_seconds() -> float:
    """How long a stopping web server lets in-flight requests (streams) finish: INFERIA_DRAIN_SECONDS."""
    return env_float("INFERIA_DRAIN_SECONDS", 30.0)


def web_spec(endpoints: Endpoints) -> ProcessSpec:
    """The ASGI server for `inferia_site.asgi:application`: uvicorn (uvloop + httptools) unless
    INFERIA_SERVER=daphne, the reference server. Either runs with Inferia's transport limits (header size and time,
    body time, open connections: `inferia_cli.transport`)."""
    server = env_str("INFERIA_SERVER", "uvicorn").lower()
    if server not in SERVERS:
        raise ConfigError(f"INFERIA_SERVER must be one of {', '.join(SERVERS)}, got {server!r}")
    host, port = endpoints.host, str(endpoints.port)
    access_log = env_bool("INFERIA_ACCESS_LOG", False)
    if server == "daphne":
        argv = [sys.executable, "-m", "inferia_cli.transport.daphne_http", "-b", host, "-p", port]
        if access_log:
            argv += ["--access-log", "-"]
        return ProcessSpec("web", [*argv, "inferia_site.asgi:application"])
    argv = [
        sys.executable, "-m", "uvicorn", "inferia_site.asgi:application",
        "--host", host, "--port", port,
        "--loop", "uvloop", "--http", "inferia_cli.transport.uvicorn_http:GuardedHttpToolsProtocol",
        "--lifespan", "off",  # Channels' router does not speak the lifespan protocol
        "--timeout-graceful-shutdown", str(int(drain_seconds())),
    ]  # fmt: skip
    workers = env_int("INFERIA_WEB_WORKERS", cores_available())
    env: dict[str, str] = {}
    if workers > 1:
        argv += ["--workers", str(workers)]
        env = metrics_multiprocess_env(endpoints.port)
    if not access_log:
        argv.append("--no-access-log")  # one log line per request costs more than the gateway's own work
    return ProcessSpec("web", argv, env)


def cores_available() -> int:
    """The cores this process may use: its CPU affinity, capped by its cgroup's CPU quota (a container's CPU limit,
    which affinity does not show). One web worker per core: each is one event loop, one core's worth of work."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    quota = cgroup_cpu_quota()
    if quota is not None:
        cores = min(cores, quota)
    return max(1, cores)


def cgroup_cpu_quota(cpu_max: Path = CGROUP_CPU_MAX) -> int | None:
    """The cores a cgroup v2 CPU quota allows (rounded up), or None without one (no limit, or no cgroup v2)."""
    try:
        quota, period = cpu_max.read_text().split()
        return None if quota == "max" else max(1, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):
        return None


def metrics_multiprocess_env(port: int) -> dict[str, str]:
    """Several workers behind one port: each keeps its metrics in files of a shared folder that any worker's
    `/metrics` sums (prometheus_client's multiprocess mode), emptied at start so that no dead worker's counts
    linger. PROMETHEUS_MULTIPROC_DIR, when set, is used as it is."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return {}
    folder = data_dir() / "prometheus" / str(port)
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.db"):
        stale.unlink()
    return {"PROMETHEUS_MULTIPROC_DIR": str(folder)}


def worker_spec() -> ProcessSpec:
    """The Celery worker, consuming every queue Inferia routes tasks to."""
    argv = [sys.executable, "-m", "celery", "-A", "celery_app", "worker", "-Q", ",".join(WORKER_QUEUES)]
    argv += ["--loglevel", env_str("INFERIA_LOG_LEVEL", "INFO").upper()]
    concurrency = env_str("INFERIA_WORKER_CONCURRENCY")
    if concurrency:
        argv += ["--concurrency", concurrency]
    return ProcessSpec("worker", argv)


def beat_spec(data: Path) -> ProcessSpec:
    """Celery beat, with its schedule file under the data directory."""
    data.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "celery", "-A", "celery_app", "beat", "-s", str(data / "celerybeat-schedule")]
    return ProcessSpec("beat", [*argv, "--loglevel", env_str("INFERIA_LOG_LEVEL", "INFO").upper()])


def sim_spec(endpoints: Endpoints) -> ProcessSpec:
    """One simulated vLLM node. It serves the models named in INFERIA_SIM_MODEL (inferia-sim reads it), by
    default the demo deployment's; its other INFERIA_SIM_* settings (latencies, failures) pass through too."""
    argv = [sys.executable, "-m", "inferia_sim", "--host", endpoints.sim_host, "--port", str(endpoints.sim_port)]
    if not os.environ.get("INFERIA_SIM_MODEL"):
        argv += ["--model", DEMO_MODEL]
    return ProcessSpec("sim", argv)


def role_spec(role: str, endpoints: Endpoints) -> ProcessSpec:
    """The process for one of ROLES."""
    if role == "web":
        return web_spec(endpoints)
    if role == "worker":
        return worker_spec()
    if role == "beat":
        return beat_spec(data_dir())
    if role == "sim":
        return sim_spec(endpoints)
    raise ValueError(f"unknown role {role!r}; one of {', '.join(ROLES)}")
