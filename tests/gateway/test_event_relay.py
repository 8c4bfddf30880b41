"""`EventRelay.feed`, the per-read work both relays share, against what it must do with any engine stream cut at any
point: pass every event as it came, read the engine's usage from the last event that holds it, drop the usage-only
event unless the client asked for it, and count the events the client got."""

from __future__ import annotations

import itertools
import json

from hypothesis import example, given
from hypothesis import strategies as st

from apps.gateway.event_relay import EventRelay, usage_event_taken
from apps.usage.events import UsageEvent


def _event(document: dict, *, spaced: bool = False) -> bytes:
    separators = (", ", ": ") if spaced else (",", ":")
    return b"data: " + json.dumps(document, separators=separators).encode() + b"\n\n"


def _delta(text: str) -> dict:
    return {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": text}}]}


def _counts(prompt: int, completion: int) -> dict:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


# What engines send: text (with what looks like a marker inside it, escaped), a chunk that carries running usage
# (vLLM's continuous usage stats), OpenAI's `"usage": null` on every chunk, the usage-only event, either spacing.
EVENTS = st.one_of(
    st.sampled_from(["Hi", ' "usage":{', "data: x", "\n"]).map(lambda text: (_event(_delta(text)), None, False)),
    st.tuples(st.integers(0, 9), st.integers(0, 9), st.booleans()).map(
        lambda t: (_event({**_delta("x"), "usage": _counts(t[0], t[1])}, spaced=t[2]), (t[0], t[1]), False)
    ),
    st.booleans().map(lambda spaced: (_event({**_delta("y"), "usage": None}, spaced=spaced), None, False)),
    st.tuples(st.integers(0, 9), st.integers(0, 9), st.booleans()).map(
        lambda t: (_event({"choices": [], "usage": _counts(t[0], t[1])}, spaced=t[2]), (t[0], t[1]), True)
    ),
)


@given(st.lists(EVENTS, max_size=12), st.lists(st.integers(0, 4000), max_size=6), st.booleans())
@example([(_event({"choices": [], "usage": _counts(7, 3)}, spaced=True), (7, 3), True)], [], False)
def test_any_stream_cut_anywhere_is_relayed_with_the_last_usage_and_its_events_counted(events, cuts, wants_usage):
    stream = b"".join(event for event, _, _ in events) + b"data: [DONE]\n\n"
    usage = UsageEvent(request_id="r1", started_at=0.0, endpoint="chat.completions")
    relay = EventRelay(usage, started=0.0, client_wants_usage=wants_usage)
    bounds = [0, *sorted(cut % (len(stream) + 1) for cut in cuts), len(stream)]
    sent = b"".join(relay.feed(stream[start:end]) for start, end in itertools.pairwise(bounds))

    expected = b"".join(event for event, _, usage_only in events if wants_usage or not usage_only)
    assert sent == expected + b"data: [DONE]\n\n"
    counted = [counts for _, counts, _ in events if counts is not None]
    assert (usage.prompt_tokens, usage.completion_tokens) == (counted[-1] if counted else (0, 0))
    assert relay.events == sent.count(b"data: ")


def test_usage_counted_by_the_caller_reads_the_same_as_usage_searched():
    """`markers` only spares the search: the same answer, each spacing found once it is counted."""
    events = (
        _event({"choices": [], "usage": _counts(1, 1)})
        + _event({**_delta("x"), "usage": _counts(2, 2)}, spaced=True)
        + _event({"choices": [], "usage": _counts(5, 8)}, spaced=True)
    )
    for markers in [None, (1, 2)]:
        usage = UsageEvent(request_id="r1", started_at=0.0, endpoint="chat.completions")
        kept = usage_event_taken(events, False, usage, markers)
        assert kept == (_event({**_delta("x"), "usage": _counts(2, 2)}, spaced=True), 2)
        assert (usage.prompt_tokens, usage.completion_tokens) == (5, 8)
