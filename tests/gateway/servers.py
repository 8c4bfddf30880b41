"""Starting the real processes the gateway tests talk to: inferia-sim engines and an ASGI web server."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# The names every test engine serves; deployments in the tests use them.
SIM_MODELS = ("gw-chat", "gw-shared", "gw-other")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url: str, timeout: float = 20.0, process: subprocess.Popen[bytes] | None = None) -> None:
    """Until `url` answers 200 (or the process died, or the time is up)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{process.args} exited with {process.returncode}")
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 (loopback)
            if response.status == 200:
                return
        time.sleep(0.05)
    raise TimeoutError(f"{url} did not come up within {timeout}s")


class Process:
    """A child process on a port, stopped with SIGTERM (then SIGKILL) when done."""

    def __init__(self, args: list[str], port: int, env: dict[str, str] | None = None) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        # Output goes to a file, never a pipe nobody reads (a full pipe would stall the server).
        self.log = tempfile.NamedTemporaryFile(prefix=f"inferia-test-{port}-", suffix=".log", delete=False)  # noqa: SIM115
        self.popen = subprocess.Popen(args, cwd=REPO, env=env, stdout=self.log, stderr=subprocess.STDOUT)

    def output(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stop(self, timeout: float = 10.0) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self.log.close()
        return self.popen.returncode

    def kill(self) -> None:
        self.popen.kill()
        self.popen.wait()


def sim_start(*flags: str, models: tuple[str, ...] = SIM_MODELS) -> Process:
    port = free_port()
    args = [sys.executable, "-m", "inferia_sim", "--port", str(port), "--log-level", "WARNING"]
    for model in models:
        args += ["--model", model]
    process = Process([*args, *flags], port)
    wait_http(process.url + "/health", process=process.popen)
    return process


@contextlib.contextmanager
def running_sim(*flags: str) -> Iterator[Process]:
    process = sim_start(*flags)
    try:
        yield process
    finally:
        process.stop()


def web_start(database_url: str, *, server: str = "uvicorn", extra_env: dict[str, str] | None = None) -> Process:
    """The whole ASGI application (`inferia_site.asgi`) on a free port, on the given database, with the transport
    limits `inferia start web` runs it with."""
    port = free_port()
    env = {**os.environ, "DATABASE_URL": database_url, **(extra_env or {})}
    if server == "uvicorn":
        args = [
            sys.executable, "-m", "uvicorn", "inferia_site.asgi:application", "--host", "127.0.0.1", "--port",
            str(port), "--loop", "uvloop", "--http", "inferia_cli.transport.uvicorn_http:GuardedHttpToolsProtocol",
            "--lifespan", "off", "--no-access-log",
            "--timeout-graceful-shutdown", env.get("INFERIA_DRAIN_SECONDS", "30"),
        ]  # fmt: skip
    else:
        args = [sys.executable, "-m", "inferia_cli.transport.daphne_http", "-b", "127.0.0.1", "-p", str(port)]
        args.append("inferia_site.asgi:application")
    process = Process(args, port, env=env)
    wait_http(process.url + "/healthz", process=process.popen)
    return process
