"""Running a simulator inside a test process: on its own thread and event loop, so sync clients can use it too."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from inferia_sim.cli import new_event_loop
from inferia_sim.config import SimConfig
from inferia_sim.server import SimServer


class SimThread:
    """A `SimServer` on a background thread; `url` is its base URL (without `/v1`)."""

    def __init__(self, config: SimConfig) -> None:
        self.server = SimServer(config)
        self.loop = new_event_loop()
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="inferia-sim", daemon=True)

    @property
    def url(self) -> str:
        return self.server.url

    def start(self) -> None:
        self._thread.start()
        self._started.wait(timeout=10)
        if self._error is not None:
            raise self._error

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.close(), self.loop).result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self.server.start())
        except BaseException as exc:  # reported to the starting thread
            self._error = exc
            self._started.set()
            return
        self._started.set()
        self.loop.run_forever()
        self.loop.close()


@contextmanager
def running_sim(config: SimConfig | None = None, **overrides: Any) -> Iterator[SimThread]:
    """A simulator on a free loopback port for the duration of the block; keyword arguments override `SimConfig`."""
    base = config or SimConfig()
    sim = SimThread(dataclasses.replace(base, **{"host": "127.0.0.1", "port": 0, **overrides}))
    sim.start()
    try:
        yield sim
    finally:
        sim.stop()
