"""DATABASE_URL parsing: single-host URLs exactly as dj-database-url reads them, libpq's multi-host form for a
failover, and a clear ConfigError (without the password) for anything else."""

from __future__ import annotations

import os
import subprocess
import sys

import dj_database_url
import pytest

from inferia_runtime.database_url import MAX_HOSTS, database_settings, database_url_with_name
from inferia_runtime.env import ConfigError

SINGLE_HOST_URLS = [
    "postgres://postgres@127.0.0.1:5433/inferia",
    "postgresql://inferia:s%40cret%2Fpw@db.example.com/inferia?sslmode=require&connect_timeout=5",
    "postgres://u:p@[::1]:6432/db?application_name=inferia&currentSchema=tenant",
    "postgresql://postgres:@/inferia?host=/tmp/inferia/pg",
    "postgres://u:p@my_db:5432/db?target_session_attrs=read-write",
    "postgres://u@%2Fvar%2Frun%2Fpostgresql/db",
]


@pytest.mark.parametrize("url", SINGLE_HOST_URLS)
def test_it_reads_a_single_host_url_exactly_as_dj_database_url(url: str) -> None:
    assert database_settings(url, conn_max_age=60) == dj_database_url.parse(url, conn_max_age=60)


def test_it_turns_several_hosts_into_libpq_host_and_port_lists() -> None:
    url = "postgres://inferia:pw@db1.internal:5432,10.0.0.7:5433/inferia?target_session_attrs=read-write"
    config = database_settings(url, conn_max_age=30)
    assert config["HOST"] == "db1.internal,10.0.0.7"
    assert config["PORT"] == "5432,5433"
    assert (config["USER"], config["PASSWORD"], config["NAME"]) == ("inferia", "pw", "inferia")
    assert config["OPTIONS"] == {"target_session_attrs": "read-write"}
    assert config["CONN_MAX_AGE"] == 30


def test_it_gives_a_host_without_port_the_default_so_the_lists_pair_up() -> None:
    config = database_settings("postgres://u@a:6000,b,[::1]/db?target_session_attrs=primary", conn_max_age=0)
    assert (config["HOST"], config["PORT"]) == ("a,b,::1", "6000,5432,5432")


def test_it_leaves_the_port_empty_when_no_host_names_one() -> None:
    config = database_settings("postgresql://u@a,b/db?target_session_attrs=any&connect_timeout=3", conn_max_age=0)
    assert (config["HOST"], config["PORT"]) == ("a,b", "")
    assert config["OPTIONS"] == {"target_session_attrs": "any", "connect_timeout": 3}


def test_it_keeps_every_other_option_of_a_multi_host_url() -> None:
    config = database_settings("postgres://u@a:1,b:2/db?sslmode=verify-full&currentSchema=s", conn_max_age=0)
    assert config["OPTIONS"] == {"sslmode": "verify-full", "options": "-c search_path=s"}


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://u:p@h/db", "PostgreSQL URL"),
        ("postgres://u:p@h1:5432,,h2/db", "empty host"),
        ("postgres://u:p@h1:5432,h2:99999/db", "port"),
        ("postgres://u:p@h1:5432,h2:54x2/db", "port"),
        ("postgres://u:p@h1:5432,h2:1:2/db", "more than one ':'"),
        ("postgres://u:p@h1,[::1/db", "not a valid URL"),
        ("postgres://u:p@h1,[::1]x/db", "IPv6"),
        ("postgres://u:p@h1,h%20two/db", "neither a name"),
        ("postgres://u:p@h$1/db", "neither a name"),
        ("postgres://u:p@h1,h2/db?target_session_attrs=leader", "target_session_attrs"),
        ("postgres://u:p@h1,h2/db?target_session_attrs=any&target_session_attrs=primary", "target_session_attrs"),
        ("postgres://u:p@h/db?connect_timeout=soon", "connect_timeout"),
        ("postgres://u:p@h/db?connect_timeout=100000", "connect_timeout"),
        ("postgres://u:p@h1,h2/db?host=/tmp", "host, hostaddr or port"),
        ("postgres://u:p@h/db#x", "fragment"),
        ("postgres://u:p@h/d\x00b", "control character"),
        ("postgres://u:p@h:70000/db", "port"),
        ("postgres://u:p@" + ",".join(["h"] * (MAX_HOSTS + 1)) + "/db", "at most"),
        ("postgres://u:p@h/" + "d" * 5000, "longer than"),
    ],
)
def test_it_refuses_a_malformed_url_with_a_clear_error(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        database_settings(url, conn_max_age=0)


def test_its_errors_never_repeat_the_password() -> None:
    for url in ("postgres://u:hunter2secret@h1,h2:bad/db", "postgres://u:hunter2secret@h:bad/db"):
        with pytest.raises(ConfigError) as raised:
            database_settings(url, conn_max_age=0)
        assert "hunter2secret" not in str(raised.value)


def test_it_renames_the_database_of_a_multi_host_url() -> None:
    url = "postgres://u:p@a:1,b:2/inferia?target_session_attrs=read-write"
    renamed = database_url_with_name(url, "test_inferia")
    assert renamed == "postgres://u:p@a:1,b:2/test_inferia?target_session_attrs=read-write"
    assert database_settings(renamed, conn_max_age=0)["HOST"] == "a,b"


def _settings_in_a_process(database_url: str) -> subprocess.CompletedProcess[str]:
    code = (
        "from django.conf import settings; d = settings.DATABASES['default']; print(d['HOST'], d['PORT'], d['OPTIONS'])"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "inferia_site.settings", "DATABASE_URL": database_url}
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_settings_give_django_the_host_and_port_lists() -> None:
    done = _settings_in_a_process("postgres://u:pw@db1:5432,db2:5433/inferia?target_session_attrs=read-write")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "db1,db2 5432,5433 {'target_session_attrs': 'read-write'}"


def test_settings_stop_at_a_malformed_url_without_showing_the_password() -> None:
    done = _settings_in_a_process("postgres://u:hunter2secret@db1:5432,db2:5x/inferia")
    assert done.returncode != 0
    assert "ConfigError: DATABASE_URL has a port that is not a number" in done.stderr
    assert "hunter2secret" not in done.stderr
