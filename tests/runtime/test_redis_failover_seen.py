"""Noticing that the Redis master changed (its replication id), once per watcher across processes."""

from __future__ import annotations

from inferia_runtime.redis_clients import redis_epoch, redis_failover_seen


def test_it_sees_a_new_master_once_and_then_nothing(redis_cache):
    assert redis_failover_seen(redis_cache, watcher="test")  # no epoch recorded yet: repair once
    assert not redis_failover_seen(redis_cache, watcher="test")
    redis_cache.set("inferia:redis-epoch:test", "an-earlier-master")
    assert redis_failover_seen(redis_cache, watcher="test")
    assert not redis_failover_seen(redis_cache, watcher="test")
    assert redis_cache.get("inferia:redis-epoch:test").decode() == redis_epoch(redis_cache)
