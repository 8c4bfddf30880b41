"""Admission control that makes the simulated engine queue like vLLM: a cap on running sequences and KV blocks."""

from __future__ import annotations

import asyncio
from collections import deque


class _Waiter:
    __slots__ = ("blocks", "future")

    def __init__(self, blocks: int, future: asyncio.Future[None]) -> None:
        self.blocks = blocks
        self.future = future


class SequenceScheduler:
    """Lets a sequence run when fewer than `max_num_seqs` run and its KV blocks fit; otherwise it waits in FIFO order.

    The counts feed `vllm:num_requests_running`, `vllm:num_requests_waiting` and `vllm:kv_cache_usage_perc`.
    A sequence reserves the blocks for its prompt plus its whole output up front; vLLM allocates them as it goes,
    but reserving up front keeps the hot path free of per-token bookkeeping.
    """

    def __init__(self, *, max_num_seqs: int, kv_cache_blocks: int, kv_block_size: int) -> None:
        self.max_num_seqs = max_num_seqs
        self.kv_cache_blocks = kv_cache_blocks
        self.kv_block_size = kv_block_size
        self.running = 0
        self.used_blocks = 0
        self._waiters: deque[_Waiter] = deque()

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    @property
    def kv_cache_usage(self) -> float:
        return min(1.0, self.used_blocks / self.kv_cache_blocks)

    def blocks_for(self, tokens: int) -> int:
        """KV blocks a sequence of `tokens` tokens occupies, never more than the whole cache."""
        return min(self.kv_cache_blocks, -(-tokens // self.kv_block_size))

    def _fits(self, blocks: int) -> bool:
        # An idle engine always takes the next sequence, so one huge request cannot wait forever.
        return self.running < self.max_num_seqs and (
            self.running == 0 or self.used_blocks + blocks <= self.kv_cache_blocks
        )

    def try_admit(self, blocks: int) -> bool:
        """Admit the sequence now if it may run without waiting; the caller then owes `release(blocks)`."""
        if self._waiters or not self._fits(blocks):
            return False
        self.running += 1
        self.used_blocks += blocks
        return True

    async def admit(self, blocks: int) -> None:
        """Wait until the sequence may run; the caller must call `release(blocks)` once it stops running."""
        if self.try_admit(blocks):
            return
        waiter = _Waiter(blocks, asyncio.get_running_loop().create_future())
        self._waiters.append(waiter)
        try:
            await waiter.future
        except asyncio.CancelledError:
            if waiter.future.done() and not waiter.future.cancelled():
                self.release(blocks)  # admitted in the same tick as the cancellation: give the slot back
            else:
                self._waiters.remove(waiter)
                self._wake()  # the head of the queue may have been the one blocking the others
            raise

    def release(self, blocks: int) -> None:
        """Mark a running sequence finished (or aborted) and let queued sequences in."""
        self.running -= 1
        self.used_blocks -= blocks
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self._fits(self._waiters[0].blocks):
            waiter = self._waiters.popleft()
            self.running += 1
            self.used_blocks += waiter.blocks
            waiter.future.set_result(None)
