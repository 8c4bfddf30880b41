"""A redis-server of a test's own (on a reserved port), which it can freeze, thaw, kill and start again on the same
port without touching the Redis every other test shares."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import redis

from tests.kit.ports import port_reserve
from tests.kit.processes import TestProcess


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


class RedisServer:
    """The server process; `url(db)` for the clients under test. With `tls` (a certificate and its key, PEM files)
    it speaks TLS only."""

    def __init__(self, *, tls: tuple[Path, Path] | None = None) -> None:
        self.port = port_reserve()
        self.tls = tls
        self.process = self._start()

    def _start(self) -> TestProcess:
        args = ["redis-server", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        if self.tls is None:
            args += ["--port", str(self.port)]
        else:
            certificate, key = self.tls
            args += ["--port", "0", "--tls-port", str(self.port), "--tls-auth-clients", "no"]
            args += ["--tls-cert-file", str(certificate), "--tls-key-file", str(key)]
        process = TestProcess(args, port=self.port)
        with redis.Redis.from_url(self.url(0), socket_timeout=1) as client:
            process.wait_until(lambda: _pings(client), timeout=10, what="redis-server answering PING")
        return process

    def url(self, db: int) -> str:
        if self.tls is not None:
            return f"rediss://127.0.0.1:{self.port}/{db}?ssl_cert_reqs=none"
        return f"redis://127.0.0.1:{self.port}/{db}"

    def freeze(self) -> None:
        os.kill(self.process.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        os.kill(self.process.pid, signal.SIGCONT)

    def kill(self) -> None:
        self.process.kill()

    def restart(self) -> None:
        self.process = self._start()

    def stop(self) -> None:
        if self.process.returncode is None:
            self.thaw()
        self.process.stop()
