"""Automatic prefix caching as vLLM does it: a prompt's KV blocks are identified by chained hashes of fixed-size token
blocks, so a block is only ever reused after the same whole prefix; blocks are kept up to a capacity and the least
recently used go first.

The simulator keeps no KV data, only the hashes, and what a hit buys is time: prefill is paid only for the tokens
after the cached prefix (see `SimConfig.prefill_ms_per_token`). Counters follow vLLM's `prefix_cache_queries` and
`prefix_cache_hits`, in tokens.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence


class PrefixCache:
    """The cached prompt blocks of one engine, by chained block hash, in least recently used order."""

    def __init__(self, *, capacity_blocks: int, block_size: int) -> None:
        self.capacity_blocks = capacity_blocks
        self.block_size = block_size
        self.queried_tokens = 0
        self.hit_tokens = 0
        self._blocks: OrderedDict[int, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._blocks)

    def lookup_and_store(self, token_ids: Sequence[int]) -> int:
        """How many of the prompt's leading tokens are cached; its full blocks are cached afterwards (as they are
        once prefill has computed them). At least the last token is always computed, as in vLLM, so a repeated
        prompt still has one token of prefill."""
        size = self.block_size
        blocks = self._blocks
        full = len(token_ids) // size
        parent = 0
        hits = 0
        missed = False
        for index in range(full):
            parent = hash((parent, tuple(token_ids[index * size : (index + 1) * size])))
            if not missed and parent in blocks:
                blocks.move_to_end(parent)
                hits += 1
                continue
            missed = True
            blocks[parent] = None
        while len(blocks) > self.capacity_blocks:
            blocks.popitem(last=False)
        cached = min(hits * size, max(0, len(token_ids) - 1))
        self.queried_tokens += len(token_ids)
        self.hit_tokens += cached
        return cached
