"""Automatic prefix caching in the simulated engine: chained block hashes, LRU capacity, prefill time saved, and
vLLM's hit counters."""

from __future__ import annotations

import time

from inferia_sim.cli import config_from_args
from inferia_sim.prefix_cache import PrefixCache
from inferia_sim.testing import running_sim
from tests.sim.conftest import chat_body, metrics, post

LABEL = '{model_name="inferia/sim-model"}'


def test_a_prompt_sharing_whole_blocks_with_an_earlier_one_hits_them():
    cache = PrefixCache(capacity_blocks=100, block_size=4)
    assert cache.lookup_and_store(list(range(10))) == 0  # two full blocks stored, the two-token tail is not
    assert cache.lookup_and_store([*range(8), 50, 51, 52, 53]) == 8
    assert (cache.queried_tokens, cache.hit_tokens) == (22, 8)


def test_a_block_only_hits_after_the_same_whole_prefix():
    cache = PrefixCache(capacity_blocks=100, block_size=4)
    cache.lookup_and_store([1, 2, 3, 4, 5, 6, 7, 8])
    assert cache.lookup_and_store([9, 9, 9, 9, 5, 6, 7, 8]) == 0  # the second block alone, after another first one


def test_a_repeated_prompt_still_computes_its_last_token():
    cache = PrefixCache(capacity_blocks=100, block_size=4)
    cache.lookup_and_store(list(range(8)))
    assert cache.lookup_and_store(list(range(8))) == 7


def test_the_least_recently_used_blocks_are_evicted_beyond_capacity():
    cache = PrefixCache(capacity_blocks=4, block_size=2)
    first, second = [1, 1, 2, 2], [3, 3, 4, 4]
    cache.lookup_and_store(first)
    cache.lookup_and_store(second)
    assert cache.lookup_and_store(first) == 3  # touched: now the most recent
    cache.lookup_and_store([5, 5, 6, 6])  # pushes out the least recently used: `second`
    assert len(cache) == 4
    assert cache.lookup_and_store(second) == 0
    assert cache.lookup_and_store(first) == 0  # then the least recent, pushed out by `second` coming back


def test_the_flags_and_environment_set_prefill_cost_and_cache_capacity(monkeypatch):
    config, _level = config_from_args(["--prefill-ms-per-token", "0.25", "--prefix-cache-blocks", "512"])
    assert (config.prefill_ms_per_token, config.prefix_cache_blocks) == (0.25, 512)
    monkeypatch.setenv("INFERIA_SIM_PREFILL_MS_PER_TOKEN", "0.5")
    monkeypatch.setenv("INFERIA_SIM_PREFIX_CACHE_BLOCKS", "64")
    config, _level = config_from_args([])
    assert (config.prefill_ms_per_token, config.prefix_cache_blocks) == (0.5, 64)


def _timed_chat(url: str, messages: list[dict[str, str]]) -> float:
    started = time.monotonic()
    status, _headers, _body = post(url, "/v1/chat/completions", chat_body(messages=messages, max_tokens=1))
    assert status == 200
    return time.monotonic() - started


def test_a_cached_prefix_shortens_the_time_to_first_token_and_counts_as_hits():
    history = [{"role": "system", "content": "You answer questions about ships. " * 100}]  # 850 tokens
    with running_sim(prefill_ms_per_token=0.3, prefix_cache_blocks=1000) as sim:
        cold = _timed_chat(sim.url, [*history, {"role": "user", "content": "How long is a knot?"}])
        warm = _timed_chat(sim.url, [*history, {"role": "user", "content": "And a fathom?"}])
        samples = metrics(sim.url)

    assert cold >= 0.25  # about 860 tokens of prefill at 0.3 ms
    assert warm < cold / 3  # only the tokens after the shared blocks
    queries = samples["vllm:prefix_cache_queries_total" + LABEL]
    hits = samples["vllm:prefix_cache_hits_total" + LABEL]
    assert 1700 < queries < 1750
    assert 800 < hits < 870
    assert samples["vllm:gpu_prefix_cache_hit_rate" + LABEL] == hits / queries


def test_without_a_prefix_cache_every_prompt_pays_its_whole_prefill():
    history = [{"role": "system", "content": "You answer questions about ships. " * 100}]
    with running_sim(prefill_ms_per_token=0.3) as sim:
        _timed_chat(sim.url, [*history, {"role": "user", "content": "How long is a knot?"}])
        again = _timed_chat(sim.url, [*history, {"role": "user", "content": "And a fathom?"}])
        samples = metrics(sim.url)
    assert again >= 0.25
    assert "vllm:prefix_cache_queries_total" not in samples


def test_completions_prompts_share_prefixes_too():
    prompt = "Once upon a time, " * 60
    with running_sim(prefix_cache_blocks=100) as sim:
        for ending in ("there was a ship.", "there was a fish."):
            status, _headers, _body = post(
                sim.url, "/v1/completions", {"model": "inferia/sim-model", "prompt": prompt + ending, "max_tokens": 1}
            )
            assert status == 200
        samples = metrics(sim.url)
    assert samples["vllm:prefix_cache_hits_total" + LABEL] >= 256
