"""A managed PostgreSQL's failover, with real servers: a primary and a hot standby streaming from it on loopback,
Inferia pointed at both (`postgres://...@127.0.0.1:P1,127.0.0.1:P2/db?target_session_attrs=read-write`). The
primary stops, the standby is promoted, and Inferia writes again without a restart: a Django connection with
CONN_MAX_AGE and CONN_HEALTH_CHECKS (as settings.py configures it) drops its broken persistent connection and
reopens on the promoted standby, and a real web process's /healthz (a query on a read-write connection) comes back.

Debian's PostgreSQL server binaries (initdb, pg_ctl, pg_basebackup; `scripts/ensure-services.sh` installs them) run
the two clusters; PostgreSQL refuses to run as root, so as root they run as the `postgres` system user.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest
import requests

from inferia_runtime.database_url import database_settings
from tests.kit.ports import port_reserve
from tests.kit.processes import web_start
from tests.kit.waiting import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

DATABASE = "inferia_failover"
# Generous: the cluster is promoted within a second or two here; the margin is for a loaded machine.
RECOVERY_DEADLINE_S = 60.0
# How long the test leaves Inferia without a primary before promoting, as a managed service takes to decide.
OUTAGE_S = 2.0


def _postgres_bin() -> Path | None:
    """The newest Debian PostgreSQL server binaries with everything the test needs, if installed."""
    versions = [path for path in Path("/usr/lib/postgresql").glob("*/bin") if path.parent.name.isdigit()]
    for candidate in sorted(versions, key=lambda path: int(path.parent.name), reverse=True):
        if all((candidate / tool).exists() for tool in ("initdb", "pg_ctl", "pg_basebackup", "postgres")):
            return candidate
    return None


BIN = _postgres_bin()
if BIN is None:
    pytest.skip(
        "PostgreSQL server binaries (initdb, pg_ctl, pg_basebackup under /usr/lib/postgresql/*/bin) are not "
        "installed; scripts/ensure-services.sh installs Debian's `postgresql` package",
        allow_module_level=True,
    )


@dataclass
class Cluster:
    """One PostgreSQL server on loopback, its data directory owned by the user that runs it."""

    data: Path
    port: int
    user: str | None

    def run(self, tool: str, *args: str) -> None:
        assert BIN is not None
        subprocess.run(
            [str(BIN / tool), *args], check=True, user=self.user, cwd=self.data.parent, capture_output=True, timeout=120
        )

    def start(self) -> None:
        options = (
            f"-h 127.0.0.1 -p {self.port} -k {self.data.parent} -c fsync=off -c wal_level=replica "
            "-c max_wal_senders=4 -c hot_standby=on -c wal_receiver_status_interval=1"
        )
        self.run("pg_ctl", "-w", "-t", "60", "-D", str(self.data), "-o", options, "-l", f"{self.data}.log", "start")

    def stop(self) -> None:
        self.run("pg_ctl", "-w", "-D", str(self.data), "-m", "fast", "stop")

    def connect(self, dbname: str = "postgres") -> psycopg.Connection:
        return psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", dbname=dbname, autocommit=True)


@dataclass
class Pair:
    """A primary and a hot standby streaming from it, removed afterwards whatever state they are in."""

    root: Path
    user: str | None
    clusters: list[Cluster] = field(default_factory=list)

    def primary_start(self) -> Cluster:
        primary = Cluster(self.root / "primary", port_reserve(), self.user)
        self.clusters.append(primary)
        primary.run("initdb", "--auth=trust", "--encoding=utf8", "-U", "postgres", "-D", str(primary.data))
        primary.start()
        return primary

    def standby_start(self, primary: Cluster) -> Cluster:
        standby = Cluster(self.root / "standby", port_reserve(), self.user)
        self.clusters.append(standby)
        # -R writes standby.signal and primary_conninfo: the copy starts as a hot standby streaming from the primary.
        standby.run(
            "pg_basebackup", "-h", "127.0.0.1", "-p", str(primary.port), "-U", "postgres",
            "-D", str(standby.data), "-R", "-X", "stream", "-c", "fast",
        )  # fmt: skip
        standby.start()
        return standby

    def close(self) -> None:
        for cluster in self.clusters:
            if (cluster.data / "postmaster.pid").exists():
                with contextlib.suppress(subprocess.SubprocessError):
                    cluster.run("pg_ctl", "-w", "-D", str(cluster.data), "-m", "immediate", "stop")
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def pair() -> Iterator[Pair]:
    root = Path(tempfile.mkdtemp(prefix="inferia-failover-"))
    user = None
    if os.geteuid() == 0:
        user = "postgres"
        entry = pwd.getpwnam(user)
        os.chown(root, entry.pw_uid, entry.pw_gid)
    clusters = Pair(root, user)
    try:
        yield clusters
    finally:
        clusters.close()


def _in_recovery(cluster: Cluster) -> bool:
    with cluster.connect() as connection:
        row = connection.execute("SELECT pg_is_in_recovery()").fetchone()
        return bool(row and row[0])


def _standby_has(standby: Cluster, rows: int) -> bool:
    with contextlib.suppress(psycopg.Error), standby.connect(DATABASE) as connection:
        row = connection.execute("SELECT count(*) FROM beats").fetchone()
        return bool(row and row[0] >= rows)
    return False


class Writer:
    """Inferia's Django connection to the multi-host URL, driven as Django drives it for each request: obsolete or
    unusable connections closed when a request starts and ends, health-checked before a request reuses it."""

    ALIAS = "failover"

    def __init__(self, url: str) -> None:
        from django.conf import settings
        from django.db import connections
        from django.db.utils import ConnectionHandler

        config = database_settings(url, conn_max_age=60)
        # As settings.py sets it: without the health check, the first request after a failover fails.
        config["CONN_HEALTH_CHECKS"] = settings.DATABASES["default"]["CONN_HEALTH_CHECKS"]
        # Registered with Django's own handler (beside the test database), with the defaults Django fills in: on
        # connect, django.contrib.postgres looks the alias up there.
        connections.settings[self.ALIAS] = ConnectionHandler().configure_settings({"default": config})["default"]
        self.connection = connections[self.ALIAS]

    def write(self, n: int) -> tuple[int, int] | None:
        """(server port, backend pid) of one committed INSERT, or None when it failed."""
        from django.db import DatabaseError

        self.connection.close_if_unusable_or_obsolete()  # request_started
        try:
            with self.connection.cursor() as cursor:
                cursor.execute("INSERT INTO beats (n) VALUES (%s) RETURNING inet_server_port(), pg_backend_pid()", [n])
                port, pid = cursor.fetchone()
                return int(port), int(pid)
        except DatabaseError:
            return None
        finally:
            self.connection.close_if_unusable_or_obsolete()  # request_finished

    def close(self) -> None:
        from django.db import connections

        self.connection.close()
        del connections[self.ALIAS]
        del connections.settings[self.ALIAS]


def _healthz(base: str) -> bool:
    with contextlib.suppress(requests.RequestException):
        return requests.get(f"{base}/healthz", timeout=10).status_code == 200
    return False


@dataclass
class Outage:
    """When each kind of request failed and came back."""

    first_failure: float | None = None
    recovered: float | None = None

    def note(self, ok: bool, now: float) -> None:
        if not ok and self.first_failure is None:
            self.first_failure = now
        if ok and self.first_failure is not None and self.recovered is None:
            self.recovered = now

    def seconds(self) -> float:
        assert self.first_failure is not None
        assert self.recovered is not None
        return self.recovered - self.first_failure


@dataclass(frozen=True)
class Replicated:
    """The primary, its standby, and the multi-host URL that names both."""

    primary: Cluster
    standby: Cluster
    url: str


@pytest.fixture
def replicated(pair: Pair) -> Replicated:
    primary = pair.primary_start()
    with primary.connect() as connection:
        connection.execute(f'CREATE DATABASE "{DATABASE}"')
    with primary.connect(DATABASE) as connection:
        connection.execute("CREATE TABLE beats (id bigserial PRIMARY KEY, n integer NOT NULL)")
    standby = pair.standby_start(primary)
    assert _in_recovery(standby)
    url = (
        f"postgres://postgres@127.0.0.1:{primary.port},127.0.0.1:{standby.port}/{DATABASE}"
        "?target_session_attrs=read-write&connect_timeout=2"
    )
    return Replicated(primary, standby, url)


@pytest.fixture
def writer(replicated: Replicated, django_db_blocker) -> Iterator[Writer]:
    with django_db_blocker.unblock():
        connection = Writer(replicated.url)
        try:
            yield connection
        finally:
            connection.close()


def _writes_on_primary(replicated: Replicated, writer: Writer) -> None:
    """Three writes on the primary over one persistent connection (CONN_MAX_AGE), replayed by the standby."""
    before = [writer.write(n) for n in range(3)]
    assert all(answer is not None and answer[0] == replicated.primary.port for answer in before), before
    assert len({answer[1] for answer in before if answer}) == 1, before
    eventually(lambda: _standby_has(replicated.standby, 3), timeout=30, what="the standby replaying the writes")


def _promote(standby: Cluster) -> None:
    standby.run("pg_ctl", "-w", "-D", str(standby.data), "promote")


def _rows_from_before_on(cluster: Cluster) -> list[int]:
    with cluster.connect(DATABASE) as connection:
        return [row[0] for row in connection.execute("SELECT n FROM beats WHERE n < 3 ORDER BY n").fetchall()]


def test_a_broken_persistent_connection_is_reopened_on_the_promoted_standby(replicated: Replicated, writer: Writer):
    _writes_on_primary(replicated, writer)
    replicated.primary.stop()
    _promote(replicated.standby)

    # No request came during the failover: the next one finds its persistent connection broken. The health check
    # (CONN_HEALTH_CHECKS) notices before the request uses it, so that request already succeeds, on the standby.
    answer = writer.write(3)
    assert answer is not None
    assert answer[0] == replicated.standby.port
    assert not _in_recovery(replicated.standby)
    assert _rows_from_before_on(replicated.standby) == [0, 1, 2]


def test_inferia_writes_again_after_the_standby_is_promoted(replicated: Replicated, writer: Writer, capsys):
    primary, standby = replicated.primary, replicated.standby
    web = web_start(replicated.url, extra_env={"INFERIA_DB_CONN_MAX_AGE": "60"})
    try:
        _writes_on_primary(replicated, writer)
        assert _healthz(web.url)

        writes, health = Outage(), Outage()
        started = time.monotonic()
        primary.stop()
        n = 100
        # Without a primary nothing can write: the old connection is gone and the standby is read-only.
        while time.monotonic() - started < OUTAGE_S:
            n += 1
            now = time.monotonic()
            writes.note(writer.write(n) is not None, now)
            health.note(_healthz(web.url), now)
            time.sleep(0.1)
        assert writes.first_failure is not None
        assert writes.recovered is None
        assert health.first_failure is not None
        assert health.recovered is None

        promoting = time.monotonic()
        _promote(standby)
        promoted = time.monotonic()
        after = None
        while (
            writes.recovered is None or health.recovered is None
        ) and time.monotonic() - promoted < RECOVERY_DEADLINE_S:
            n += 1
            now = time.monotonic()
            answer = writer.write(n)
            after = answer or after
            writes.note(answer is not None, now)
            health.note(_healthz(web.url), now)
            time.sleep(0.1)
        assert writes.recovered is not None, "no write succeeded after the standby was promoted"
        assert health.recovered is not None, "the web process's /healthz did not come back after the promotion"

        # The write landed on the promoted standby, over a new connection, and the rows from before are there.
        assert after is not None
        assert after[0] == standby.port, after
        assert not _in_recovery(standby)
        assert _rows_from_before_on(standby) == [0, 1, 2]
    finally:
        web.kill_everything()

    with capsys.disabled():
        print(
            f"\nfailover: primary stopped, standby promoted {OUTAGE_S:.1f}s later (pg_ctl promote took "
            f"{promoted - promoting:.2f}s); writes failed for "
            f"{writes.seconds():.2f}s ({writes.recovered - promoted:.2f}s after the promotion), /healthz failed for "
            f"{health.seconds():.2f}s ({health.recovered - promoted:.2f}s after the promotion)"
        )
