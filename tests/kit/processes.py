"""The one harness for every process a test starts: web servers, Celery workers, `inferia start all`, simulated
engines, a Redis of a test's own.

Each process runs in a session of its own (so everything it leaves behind can be found, and killed, by session id)
with its output in a log file, never a pipe nobody reads (a full pipe would stall it). Waiting for readiness fails
fast, with the log's tail, when the process exits first.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import TypeVar

import psutil

from inferia_runtime.database_url import database_url_with_name
from tests.kit.ports import port_reserve
from tests.kit.waiting import eventually

T = TypeVar("T")

REPO = Path(__file__).resolve().parents[2]
INFERIA = str(Path(sys.executable).with_name("inferia"))
LOG_TAIL_CHARS = 5000


def http_ok(url: str) -> bool:
    """Whether `url` answers 200 now."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 (loopback URLs the tests built)
            return bool(response.status == 200)
    except OSError:
        return False


class TestProcess:
    """A child process started for a test, with its output collected in a log file for assertions and failures."""

    __test__ = False  # a helper, not a test class for pytest to collect

    def __init__(
        self,
        args: list[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path = REPO,
        port: int | None = None,
        name: str | None = None,
    ) -> None:
        self.args = args
        self.port = port
        self.url = f"http://127.0.0.1:{port}" if port is not None else ""
        self.name = name or Path(args[0]).name
        fd, log_name = tempfile.mkstemp(prefix=f"inferia-test-{self.name}-", suffix=".log")
        self.log_path = Path(log_name)
        with os.fdopen(fd, "wb") as log:
            self.popen = subprocess.Popen(
                args,
                cwd=cwd,
                env=dict(env) if env is not None else None,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.sid = self.popen.pid  # the session leader's pid is the session id
        # Where a worker with a data directory of its own records the replica processes it starts (`inferia_start`).
        self.replicas_dir: Path | None = None

    def __enter__(self) -> TestProcess:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    @property
    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    @property
    def lines(self) -> list[str]:
        return self.output.splitlines()

    def describe(self) -> str:
        """Who it is and the tail of what it printed: the context a failure message needs."""
        return f"{self.name} (pid {self.pid}, exit {self.returncode}), output:\n{self.output[-LOG_TAIL_CHARS:]}"

    def assert_running(self) -> None:
        if self.popen.poll() is not None:
            raise AssertionError(f"{self.describe()}\n(exited while the test waited on it)")

    def wait_until(self, predicate: Callable[[], T], *, timeout: float = 120.0, what: str = "ready") -> T:
        """`eventually(predicate)`, giving up as soon as the process exits; failures carry the log's tail."""
        try:
            return eventually(predicate, timeout=timeout, interval=0.05, what=what, check=self.assert_running)
        except AssertionError as error:
            raise AssertionError(f"{error}\n{self.describe()}") from None

    def wait_http(self, url: str, *, timeout: float = 120.0) -> None:
        self.wait_until(lambda: http_ok(url), timeout=timeout, what=url)

    def wait_line(self, text: str, *, timeout: float = 120.0) -> str:
        """The first line of output containing `text`, once there is one."""
        return self.wait_until(
            lambda: next((line for line in self.lines if text in line), None), timeout=timeout, what=repr(text)
        )

    def session_processes(self) -> list[psutil.Process]:
        """Every live (non-zombie) process in the process's session, itself included."""
        alive = []
        for process in psutil.process_iter(["pid", "status"]):
            with contextlib.suppress(psutil.Error, OSError):
                if os.getsid(process.pid) == self.sid and process.info["status"] != psutil.STATUS_ZOMBIE:
                    alive.append(process)
        return alive

    def send_signal(self, signum: int) -> None:
        self.popen.send_signal(signum)

    def stop(self, *, signum: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        """Ask it to exit (SIGTERM unless told), kill it if it has not within `timeout`; its exit code."""
        if self.popen.poll() is None:
            self.popen.send_signal(signum)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.popen.returncode

    def interrupt(self, *, timeout: float = 60.0) -> int:
        """Ctrl-C, as a terminal delivers it to the foreground command; its exit code (it must exit in time)."""
        self.popen.send_signal(signal.SIGINT)
        return self.popen.wait(timeout=timeout)

    def kill(self) -> None:
        self.popen.kill()
        self.popen.wait()

    def kill_everything(self) -> None:
        """Last-resort cleanup: kill whatever is left in the session, the process itself included, and the replica
        processes it started (a worker's simulator replicas, in sessions of their own)."""
        for process in self.session_processes():
            with contextlib.suppress(psutil.Error):
                process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=10)
        for pidfile in sorted(self.replicas_dir.glob("replica-*.json")) if self.replicas_dir else ():
            with contextlib.suppress(OSError, ValueError, KeyError, psutil.Error):
                record = json.loads(pidfile.read_text())  # the process adapter's pidfile (ProcessRecord)
                live = psutil.Process(record["pid"])
                if abs(live.create_time() - record["create_time"]) < 0.05:  # not a reused pid
                    for process in [*live.children(recursive=True), live]:
                        process.kill()


def server_start(
    args: list[str], *, ready_path: str, env: Mapping[str, str] | None = None, name: str, timeout: float = 60.0
) -> TestProcess:
    """A server on a reserved port: `args` may contain `{port}`; returns once `ready_path` answers 200."""
    port = port_reserve()
    process = TestProcess([arg.replace("{port}", str(port)) for arg in args], env=env, port=port, name=name)
    try:
        process.wait_http(process.url + ready_path, timeout=timeout)
    except BaseException:
        process.kill_everything()
        raise
    return process


def sim_start(*flags: str, models: tuple[str, ...], env: Mapping[str, str] | None = None) -> TestProcess:
    """An `inferia-sim` process serving `models`, ready once `/health` answers."""
    args = [sys.executable, "-m", "inferia_sim", "--host", "127.0.0.1", "--port", "{port}", "--log-level", "WARNING"]
    for model in models:
        args += ["--model", model]
    return server_start([*args, *flags], ready_path="/health", env=env, name="inferia-sim")


def inferia_start(args: list[str], *, env: Mapping[str, str], cwd: Path = REPO) -> TestProcess:
    """An `inferia ...` command (`start all`, `demo`, `worker`): readiness is the caller's to wait on. Given a data
    directory of its own, `kill_everything` also kills the replica processes it started there."""
    process = TestProcess([INFERIA, *args], env=env, cwd=cwd, name="inferia-" + args[0])
    data_dir = env.get("INFERIA_DATA_DIR")
    if data_dir and data_dir != os.environ.get("INFERIA_DATA_DIR"):
        process.replicas_dir = Path(data_dir) / "replicas"
    return process


@contextlib.contextmanager
def running_sim(*flags: str, models: tuple[str, ...]) -> Iterator[TestProcess]:
    """`sim_start()` for the duration of the block."""
    with sim_start(*flags, models=models) as process:
        yield process


def web_start(
    database_url: str, *, server: str = "uvicorn", extra_env: Mapping[str, str] | None = None, workers: int = 1
) -> TestProcess:
    """The whole ASGI application (`inferia_site.asgi`) on a reserved port, on the given database, with the transport
    limits `inferia start web` runs it with; ready once `/healthz` answers. `workers` > 1 (uvicorn): that many
    worker processes behind the port, sharing their metrics through a fresh folder."""
    env = {**os.environ, "DATABASE_URL": database_url, **(extra_env or {})}
    if server == "uvicorn":
        args = [
            sys.executable, "-m", "uvicorn", "inferia_site.asgi:application", "--host", "127.0.0.1", "--port", "{port}",
            "--loop", "uvloop", "--http", "inferia_cli.transport.uvicorn_http:GuardedHttpToolsProtocol",
            "--lifespan", "off", "--no-access-log",
            "--timeout-graceful-shutdown", env.get("INFERIA_DRAIN_SECONDS", "30"),
        ]  # fmt: skip
        if workers > 1:
            args += ["--workers", str(workers)]
            env.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="inferia-metrics-"))
    else:
        args = [sys.executable, "-m", "inferia_cli.transport.daphne_http", "-b", "127.0.0.1", "-p", "{port}"]
        args.append("inferia_site.asgi:application")
    return server_start(args, ready_path="/healthz", env=env, name=f"web-{server}")


def child_database_url() -> str:
    """DATABASE_URL pointed at the database pytest-django created, for child processes (valid once `django_db_setup`
    has run)."""
    from django.conf import settings

    return database_url_with_name(settings.DATABASE_URL, settings.DATABASES["default"]["NAME"])
