"""A small process supervisor for `inferia start all` and `inferia demo`.

Each child runs in its own process group, so that Ctrl-C in a terminal reaches only the supervisor, and
stopping a child means signalling its whole group: Celery's pool processes and uvicorn's workers go with it
and nothing is left behind. Output is merged line by line with a coloured `name |` prefix. If any child dies,
the supervisor stops the others and reports failure, as a process manager in production would restart the lot.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO

_COLOURS = ("\033[36m", "\033[33m", "\033[35m", "\033[32m", "\033[34m", "\033[31m")
_RESET = "\033[0m"
_BOLD = "\033[1m"
_POLL_S = 0.1


@dataclass(frozen=True)
class ProcessSpec:
    """One long-running child: its display name, command line and the environment it adds to ours."""

    name: str
    argv: Sequence[str]
    env: Mapping[str, str] = field(default_factory=dict)


def colour_wanted(stream: IO[str]) -> bool:
    """Colour when writing to a terminal, unless NO_COLOR is set (https://no-color.org); FORCE_COLOR forces it."""
    if os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("FORCE_COLOR"):
        return True
    return hasattr(stream, "isatty") and stream.isatty()


class Supervisor:
    """Starts children, relays their output, and stops every one of them (and their groups) together."""

    def __init__(
        self,
        specs: Sequence[ProcessSpec],
        *,
        stop_timeout_s: float = 10.0,
        out: IO[str] | None = None,
        colour: bool | None = None,
    ) -> None:
        if len({spec.name for spec in specs}) != len(specs):
            raise ValueError("process names must be unique")
        self.specs = list(specs)
        self.stop_timeout_s = stop_timeout_s
        self.out = out or sys.stdout
        self.colour = colour_wanted(self.out) if colour is None else colour
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self._width = max([len("inferia")] + [len(spec.name) for spec in specs])
        self._write_lock = threading.Lock()
        self._readers: list[threading.Thread] = []
        self._stop_requested = threading.Event()
        self._failed: str | None = None
        self._previous_handlers: dict[int, object] = {}
        self._watches: list[tuple[str, str, threading.Event]] = []

    # --- output ---

    def _prefix(self, name: str) -> str:
        label = f"{name:<{self._width}} |"
        if not self.colour:
            return label
        names = [spec.name for spec in self.specs]
        colour = _COLOURS[names.index(name) % len(_COLOURS)] if name in names else _BOLD  # the supervisor's own
        return f"{colour}{label}{_RESET}"

    def say(self, text: str, *, name: str = "inferia") -> None:
        """Write `text` (any number of lines) with a prefix, between the children's lines, never inside one."""
        prefix = self._prefix(name)
        with self._write_lock:
            for line in text.splitlines() or [""]:
                self.out.write(f"{prefix} {line}\n")
            self.out.flush()

    def print_block(self, text: str) -> None:
        """Write `text` as it is (no prefixes, so it can be copied and pasted), between the children's lines."""
        with self._write_lock:
            self.out.write(text if text.endswith("\n") else text + "\n")
            self.out.flush()

    def watch(self, name: str, text: str) -> threading.Event:
        """An event set once child `name` prints a line containing `text` (for readiness without an HTTP probe,
        such as Celery's "ready."). Call before `start`."""
        seen = threading.Event()
        self._watches.append((name, text, seen))
        return seen

    def _relay(self, name: str, stream: IO[bytes]) -> None:
        prefix = self._prefix(name)
        watches = [(text, seen) for watched, text, seen in self._watches if watched == name]
        for raw in iter(stream.readline, b""):
            line = raw.decode(errors="replace").rstrip("\r\n")
            for text, seen in watches:
                if text in line:
                    seen.set()
            with self._write_lock:
                self.out.write(f"{prefix} {line}\n")
                self.out.flush()
        stream.close()

    # --- lifecycle ---

    def _on_signal(self, signum: int, frame: object) -> None:
        if self._stop_requested.is_set():  # a second Ctrl-C: the user will not wait for a graceful stop
            for child in self.children.values():
                _signal_group(child.pid, signal.SIGKILL)
        self._stop_requested.set()

    def start(self) -> None:
        """Install the SIGINT/SIGTERM handlers and start every child in a process group of its own."""
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous_handlers[signum] = signal.signal(signum, self._on_signal)
        for spec in self.specs:
            env = {**os.environ, "PYTHONUNBUFFERED": "1", **spec.env}
            child = subprocess.Popen(
                list(spec.argv),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                process_group=0,  # its own group: Ctrl-C reaches only us, and we can signal the child's descendants
            )
            self.children[spec.name] = child
            assert child.stdout is not None
            reader = threading.Thread(target=self._relay, args=(spec.name, child.stdout), daemon=True)
            reader.start()
            self._readers.append(reader)

    @property
    def stop_requested(self) -> bool:
        return self._stop_requested.is_set()

    def _check_children(self) -> bool:
        """False (and remember which) once any child has exited."""
        for name, child in self.children.items():
            code = child.poll()
            if code is not None:
                self._failed = self._failed or name
                self.say(f"{name} exited with code {code}; stopping everything")
                return False
        return True

    def wait_until(self, condition: Callable[[], bool], *, timeout_s: float, what: str) -> bool:
        """Poll `condition` until it holds; False when the time runs out, a child dies or a stop is requested."""
        deadline = time.monotonic() + timeout_s
        while not self.stop_requested and self._check_children():
            with contextlib.suppress(Exception):  # not ready yet, in whatever way the probe fails
                if condition():
                    return True
            if time.monotonic() > deadline:
                self.say(f"{what} not ready after {timeout_s:.0f}s; stopping everything")
                self._failed = self._failed or what
                return False
            time.sleep(_POLL_S)
        return False

    def supervise(self) -> int:
        """Block until a signal or a child's exit, then stop everything. 0 after a signal, 1 after a failure."""
        try:
            while not self.stop_requested and self._failed is None and self._check_children():
                self._stop_requested.wait(_POLL_S)
        finally:
            self.stop()
        return 1 if self._failed else 0

    def stop(self) -> None:
        """SIGTERM every child's group, wait for them, SIGKILL what is left; safe to call more than once."""
        for child in self.children.values():
            _signal_group(child.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout_s
        for name, child in self.children.items():
            try:
                child.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.say(f"{name} did not stop within {self.stop_timeout_s:.0f}s; killing it")
        # Descendants may outlive their group leader (a pool process finishing a task): give them the rest of
        # the grace period, then kill whatever is still in each group.
        for child in self.children.values():
            while _group_alive(child.pid) and time.monotonic() < deadline:
                time.sleep(_POLL_S)
            _signal_group(child.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=5)
        for reader in self._readers:
            reader.join(timeout=2)
        if self.children:
            self.say("all processes stopped")
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]
        self._previous_handlers.clear()


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
