"""A PostgreSQL with pgvector on a loopback port, for the test suite and the benchmarks on machines whose own server
lacks the extension: the PostgreSQL 16 + pgvector that the pinned `pgserver` wheel ships (the embedded default's).

`python scripts/pgvector_server.py --port 5433 --data /tmp/inferia-pgvector` starts it (initialising the data
directory the first time) unless it already answers, makes sure the `inferia` database exists, and prints the
database URL. Durability is off (fsync, full-page writes): the data is the tests', rebuilt at will.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
    from pgserver import _commands as pg
    from pgserver.utils import ensure_folder_permissions, ensure_prefix_permissions, ensure_user_exists

import psycopg

SYSTEM_USER = "pgserver"  # PostgreSQL refuses to run as root; pgserver's own user when we are root
_START_TIMEOUT_S = 60


def _answers(port: int) -> bool:
    try:
        with psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres", connect_timeout=2):
            return True
    except psycopg.OperationalError:
        return False


def _run_as() -> str | None:
    return SYSTEM_USER if os.geteuid() == 0 else None


def server_start(port: int, data: Path) -> None:
    user = _run_as()
    data.mkdir(parents=True, exist_ok=True)
    if user is not None:
        import pwd
        import stat

        ensure_user_exists(user)
        ensure_prefix_permissions(data)
        readable = stat.S_IRGRP | stat.S_IROTH | stat.S_IXGRP | stat.S_IXOTH
        ensure_folder_permissions(pg.POSTGRES_BIN_PATH, readable)
        ensure_folder_permissions(pg.POSTGRES_BIN_PATH.parent / "lib", readable)
        entry = pwd.getpwnam(user)
        os.chown(data, entry.pw_uid, entry.pw_gid)
    if not (data / "PG_VERSION").exists():
        pg.initdb(["--auth=trust", "--encoding=utf8", "-U", "postgres"], pgdata=data, user=user)  # type: ignore[attr-defined]
    options = (
        f"-h 127.0.0.1 -p {port} -k {data} -c fsync=off -c full_page_writes=off -c synchronous_commit=off "
        "-c max_connections=300 -c shared_buffers=1GB -c maintenance_work_mem=1GB"
    )
    pg.pg_ctl(  # type: ignore[attr-defined]
        ["-w", "-t", str(_START_TIMEOUT_S), "-o", options, "-l", str(data / "log"), "start"],
        pgdata=data,
        user=user,
        timeout=_START_TIMEOUT_S + 10,
    )


def database_ensure(port: int, name: str) -> None:
    with psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres", autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=5433)
    parser.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "inferia-pgvector")
    parser.add_argument("--database", default="inferia")
    args = parser.parse_args()
    logging.getLogger("pgserver").setLevel(logging.WARNING)
    if not _answers(args.port):
        try:
            server_start(args.port, args.data.resolve())
        except subprocess.CalledProcessError:
            log = args.data / "log"
            sys.stderr.write(log.read_text() if log.exists() else "pg_ctl failed\n")
            return 1
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not _answers(args.port):
            if time.monotonic() > deadline:
                sys.stderr.write(f"PostgreSQL with pgvector did not answer on 127.0.0.1:{args.port}\n")
                return 1
            time.sleep(0.2)
    database_ensure(args.port, args.database)
    print(f"postgres://postgres@127.0.0.1:{args.port}/{args.database}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
