"""Running Inferia's real processes from tests: `inferia start all` or `inferia demo` as a subprocess.

The subprocess is started in a session of its own, so every process it leaves behind can be found by its
session id afterwards: that is how the tests prove "no orphans". (The embedded PostgreSQL and Redis are daemons
in sessions of their own, by design, and are checked separately.)
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psutil

INFERIA = str(Path(sys.executable).with_name("inferia"))
STARTUP_TIMEOUT_S = 120.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def child_database_url() -> str:
    """DATABASE_URL pointed at the database pytest-django created (test_inferia), for child processes.
    Only valid once `django_db_setup` has run."""
    from django.conf import settings

    parts = urlsplit(os.environ["DATABASE_URL"])
    return urlunsplit(parts._replace(path="/" + settings.DATABASES["default"]["NAME"]))


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - http:// URLs we built
            return bool(response.status == 200)
    except OSError:
        return False


class PlatformProcess:
    """An `inferia ...` command running in its own session, with its output collected for assertions."""

    def __init__(self, args: list[str], *, env: Mapping[str, str], cwd: Path | None = None) -> None:
        self.proc = subprocess.Popen(
            [INFERIA, *args],
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.sid = self.proc.pid  # the session leader's pid is the session id
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in iter(self.proc.stdout.readline, b""):
            self.lines.append(raw.decode(errors="replace").rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_until(self, condition, *, timeout_s: float = STARTUP_TIMEOUT_S, what: str = "the platform") -> None:
        deadline = time.monotonic() + timeout_s
        while not condition():
            if self.proc.poll() is not None:
                raise AssertionError(f"inferia exited with {self.proc.returncode} before {what}:\n{self.output}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} not ready after {timeout_s}s:\n{self.output[-5000:]}")
            time.sleep(0.2)

    def wait_http(self, url: str, **kwargs) -> None:
        self.wait_until(lambda: http_ok(url), what=url, **kwargs)

    def wait_line(self, text: str, **kwargs) -> str:
        found: list[str] = []

        def seen() -> bool:
            found.extend(line for line in list(self.lines) if text in line)
            return bool(found)

        self.wait_until(seen, what=repr(text), **kwargs)
        return found[0]

    def session_processes(self) -> list[psutil.Process]:
        """Every live (non-zombie) process in the command's session, itself included."""
        alive = []
        for process in psutil.process_iter(["pid", "status"]):
            with contextlib.suppress(psutil.Error, OSError):
                if os.getsid(process.pid) == self.sid and process.info["status"] != psutil.STATUS_ZOMBIE:
                    alive.append(process)
        return alive

    def interrupt(self, *, timeout_s: float = 60.0) -> int:
        """Ctrl-C, as a terminal delivers it to the foreground command; returns its exit code."""
        self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(timeout=timeout_s)
        finally:
            self._reader.join(timeout=5)

    def kill_everything(self) -> None:
        """Last-resort cleanup after a failed test: kill whatever is left in the session."""
        for process in self.session_processes():
            with contextlib.suppress(psutil.Error):
                process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
