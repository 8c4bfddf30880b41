"""Which replica most likely holds a prompt's prefix in its KV cache, as one web process has seen it.

Engines with automatic prefix caching (vLLM's) skip the prefill of a prompt's leading blocks when they computed the
same prefix recently, which makes the time to first token of a long conversation's next turn a fraction of a cold
one, but only on the replica that served the previous turn. llm-d's and vLLM production stack's routers keep an
approximate map of prefix hashes to replicas for that; this is ours: the prompt's text is cut into fixed-size chunks
of characters (the gateway does not tokenize), each chunk hashed together with everything before it (so a chunk only
matches after the same whole prefix), and each hash remembers the replicas last sent a prompt through it (a few: a
prefix every conversation shares, such as an application's instructions, is cached on many replicas, and any of
them will do, so the least loaded of those can take a new conversation). The map is bounded and forgets the least
recently written entries first; it is a guess, and a wrong one costs one cold prefill.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

# About 64 tokens of English at 4 characters a token: a few KV blocks, so a match means real prefill saved.
PREFIX_CHUNK_CHARS = 256
# Only the start of a prompt is hashed (64 KiB of text): bounded work per request whatever a client sends, and
# conversations that share that much share a replica anyway.
PREFIX_MAX_CHUNKS = 256
# Hashes one process remembers: about 15 MB when full, enough for some 6,000 live conversations of 16 chunks (4,000
# characters each) per web process.
PREFIX_INDEX_MAX_ENTRIES = 100_000
# Replicas remembered per hash, most recent last: enough to spread a prefix everyone shares over a deployment's busiest
# hours, few enough that choosing among them stays cheap.
PREFIX_MAX_HOLDERS = 8
_MAX_CHARS = PREFIX_CHUNK_CHARS * PREFIX_MAX_CHUNKS


def _content_text(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part.get("text", "") for part in content if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


def prompt_text(request: Any) -> str:
    """The start of what the engine will prefill for `request`, as text: chat messages with their roles, or a
    completion's prompt; "" when there is nothing to share (embeddings, token-id prompts)."""
    messages = getattr(request, "messages", None)
    if messages is not None:
        parts: list[str] = []
        size = 0
        for message in messages:
            text = _content_text(message.content)
            parts += (message.role, "\x1f", text, "\x1e")
            size += len(text) + len(message.role) + 2
            if size >= _MAX_CHARS:
                break
        return "".join(parts)[:_MAX_CHARS]
    prompt = getattr(request, "prompt", None)
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
    return prompt[:_MAX_CHARS] if isinstance(prompt, str) else ""


def prefix_hashes(text: str, *, seed: int) -> tuple[int, ...]:
    """Chained hashes of `text`'s whole chunks; `seed` (the deployment) keeps deployments' prompts apart."""
    hashes = []
    chained = seed
    for start in range(0, len(text) - PREFIX_CHUNK_CHARS + 1, PREFIX_CHUNK_CHARS):
        chained = hash((chained, text[start : start + PREFIX_CHUNK_CHARS]))
        hashes.append(chained)
    return tuple(hashes)


@dataclass(frozen=True, slots=True)
class PrefixMatch:
    """What the index knows of a prompt: the replicas that hold its longest known prefix, how many chunks that prefix
    is, and whether other prompts have already gone on differently after it (`shared`: the prompt opens a new
    conversation on instructions others use too, rather than continuing its own)."""

    holders: tuple[int, ...] = ()
    depth: int = 0
    shared: bool = False


NO_MATCH = PrefixMatch()


class PrefixIndex:
    """Chained prefix hash -> whether prompts branched after it, and the replicas last sent a prompt through it (most
    recent last); the least recently written hash forgotten first."""

    def __init__(self, max_entries: int = PREFIX_INDEX_MAX_ENTRIES) -> None:
        self.max_entries = max_entries
        # Ordered by last write, oldest first. Not a plain dict: removing its oldest entries one at a time leaves
        # deleted slots at the front that every later removal walks over until the next resize.
        self._entries: OrderedDict[int, tuple[bool, tuple[int, ...]]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def longest_match(self, hashes: Sequence[int]) -> PrefixMatch:
        """The replicas that hold the longest known prefix of the prompt, and what kind of prefix it is."""
        entries = self._entries
        found: tuple[bool, tuple[int, ...]] | None = None
        depth = 0
        for chained in hashes:
            entry = entries.get(chained)
            if entry is None:
                break
            found, depth = entry, depth + 1
        if found is None:
            return NO_MATCH
        return PrefixMatch(holders=found[1], depth=depth, shared=found[0] and depth < len(hashes))

    def record(self, hashes: Sequence[int], replica_id: int, *, matched: int = 0, known: int = 0) -> None:
        """Remember that `replica_id` now holds the prompt's prefix. The first `matched` chunks were known before
        (the prompt goes on differently after them); the first `known` ones already name this replica."""
        entries = self._entries
        if 0 < matched < len(hashes):
            # Something continued after this chunk before: mark it as a point where prompts branch.
            branch_point = hashes[matched - 1]
            entry = entries.get(branch_point)
            if entry is not None and not entry[0]:
                entries[branch_point] = (True, entry[1])
        for index in range(known, len(hashes)):
            chained = hashes[index]
            entry = entries.get(chained)
            if entry is None:
                # A new chunk's successor in the same prompt follows at once: only the prompt's last chunk is a leaf.
                entries[chained] = (False, (replica_id,))
                continue
            branched, holders = entry
            if holders[-1] != replica_id:
                if replica_id in holders:
                    holders = tuple(holder for holder in holders if holder != replica_id)
                entries[chained] = (branched, (*holders[-(PREFIX_MAX_HOLDERS - 1) :], replica_id))
            entries.move_to_end(chained)  # forgotten last
        while len(entries) > self.max_entries:
            entries.popitem(last=False)
