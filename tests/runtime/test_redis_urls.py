"""REDIS_URL's schemes, Sentinel's among them, turned into what each consumer (redis-py, kombu, channels_redis)
reads."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from inferia_runtime.redis_urls import (
    RedisUrlError,
    celery_broker_url,
    celery_transport_options,
    channels_host,
    redis_db_url,
    sentinel_target,
)

SENTINEL = "redis+sentinel://:p%40ss@s1:26379,[::1]:26380,s3/mymaster?sentinel_password=sp"


def test_it_reads_the_sentinels_the_master_and_both_passwords():
    target = sentinel_target(SENTINEL)
    assert target.sentinels == (("s1", 26379), ("::1", 26380), ("s3", 26379))
    assert target.master_name == "mymaster"
    assert target.db == 0
    assert target.connection_kwargs() == {"db": 0, "password": "p@ss"}
    assert target.sentinel_kwargs() == {"password": "sp"}


def test_a_purpose_database_follows_the_master_name():
    url = redis_db_url(SENTINEL, 2)
    assert url == "redis+sentinel://:p%40ss@s1:26379,[::1]:26380,s3/mymaster/2?sentinel_password=sp"
    assert sentinel_target(url).db == 2
    assert redis_db_url("redis://h:6379", 1) == "redis://h:6379/1"


def test_the_broker_gets_kombus_sentinel_url_and_the_master_name_as_a_transport_option():
    url = redis_db_url(SENTINEL, 0)
    assert (
        celery_broker_url(url)
        == "sentinel://:p%40ss@s1:26379;sentinel://:p%40ss@[::1]:26380;sentinel://:p%40ss@s3:26379/0"
    )
    assert celery_transport_options(url) == {"master_name": "mymaster", "sentinel_kwargs": {"password": "sp"}}
    assert celery_transport_options("redis://h:6379/0") == {}


def test_the_channel_layer_gets_a_sentinel_host_entry():
    host = channels_host(redis_db_url(SENTINEL, 2), socket_timeout=30)
    assert host["sentinels"] == [("s1", 26379), ("::1", 26380), ("s3", 26379)]
    assert host["master_name"] == "mymaster"
    assert (host["db"], host["password"], host["socket_timeout"]) == (2, "p@ss", 30)
    assert channels_host("redis://h:6379/2", socket_timeout=30) == {"address": "redis://h:6379/2", "socket_timeout": 30}


@pytest.mark.parametrize(
    "url",
    [
        "redis+sentinel://s1:26379",
        "redis+sentinel://s1:26379/m/x",
        "redis+sentinel://s1:port/m",
        "redis+sentinel://a b/m",
    ],
)
def test_it_refuses_a_sentinel_url_without_a_master_or_with_a_bad_address(url):
    with pytest.raises(RedisUrlError):
        sentinel_target(url)


def _settings_in_a_process(redis_url: str) -> subprocess.CompletedProcess[str]:
    code = (
        "from django.conf import settings as s; print(s.CELERY_BROKER_URL); print(s.CELERY_BROKER_TRANSPORT_OPTIONS);"
        "print(s.CACHES['default']['LOCATION']);"
        "print(s.CHANNEL_LAYERS['default']['CONFIG']['hosts'][0]['master_name']);"
        "print(s.INFERIA_REDIS_WAIT_REPLICAS)"
    )
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "inferia_site.settings",
        "REDIS_URL": redis_url,
        # The suite's per-purpose URLs would win over REDIS_URL's.
        "CELERY_BROKER_URL": "",
        "INFERIA_CACHE_REDIS_URL": "",
        "INFERIA_CHANNELS_REDIS_URL": "",
    }
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_settings_point_every_redis_use_at_the_sentinel_watched_master():
    done = _settings_in_a_process("redis+sentinel://:pw@s1:26379,s2:26380/mymaster")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "sentinel://:pw@s1:26379;sentinel://:pw@s2:26380/0",
        "{'master_name': 'mymaster'}",
        "['redis+sentinel://:pw@s1:26379,s2:26380/mymaster/1']",
        "mymaster",
        "1",  # usage appends wait for a replica
    ]


def test_settings_stop_at_a_malformed_sentinel_url_without_showing_the_password():
    done = _settings_in_a_process("redis+sentinel://:hunter2secret@s1:port/mymaster")
    assert done.returncode != 0
    assert "ConfigError: REDIS_URL: redis+sentinel:// URL: bad sentinel address 's1:port'" in done.stderr
    assert "hunter2secret" not in done.stderr
