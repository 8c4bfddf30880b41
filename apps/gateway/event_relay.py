"""What the gateway does to an engine's server-sent events on their way to the client, chunk by chunk: cut them at
event boundaries (a half event is never sent, so an error event can always follow), read the engine's usage for
metering (dropping the usage-only event when the client did not ask for it), and, only where the request needs
them, pass each event through the output guardrails, rename the engine's model name and capture the answer's text.

Both relays use it: the general one (`upstream.stream_relay`, aiohttp's reader, one ASGI message per read) and the
fast one (`engine_stream`, bytes written from the socket's callback), so that they cannot answer differently.
Nothing here awaits.
"""

from __future__ import annotations

import math
import re
import time

from apps.gateway import errors, metrics
from apps.gateway.capture import AnswerCapture
from apps.gateway.catalog import DeploymentRoute
from apps.gateway.output_guardrails import OutputGuard
from apps.usage.events import UsageEvent
from inferia_runtime.json_codec import json_parsed
from inferia_runtime.text_search import counted_among

USAGE_MARKERS = (b'"usage":{', b'"usage": {')
# What `feed` counts in each read, in one call: the events, and the engine's usage (either way it may be spaced).
_COUNTED = (b"data: ", *USAGE_MARKERS)
_TEXT = re.compile(rb'"(?:content|text)": ?"[^"]')
# For estimates when the engine's usage never arrived (client gone, engine died): a rough bytes-per-token ratio.
_BYTES_PER_TOKEN = 4


class EventRelay:
    """One streamed answer's events: `feed` takes what the engine sent and returns what the client gets now."""

    __slots__ = (
        "capture",
        "client_wants_usage",
        "events",
        "first_at",
        "guard",
        "last_at",
        "pending",
        "renames",
        "started",
        "usage",
    )

    def __init__(
        self,
        usage: UsageEvent,
        *,
        started: float,
        client_wants_usage: bool,
        renames: tuple[tuple[bytes, bytes], ...] = (),
        guard: OutputGuard | None = None,
        capture: AnswerCapture | None = None,
    ) -> None:
        usage.streamed = True
        self.usage = usage
        self.started = started
        self.client_wants_usage = client_wants_usage
        self.renames = renames
        self.guard = guard
        self.capture = capture
        self.pending = b""
        self.events = 0  # `data:` events sent, for the estimate when the engine's usage never comes
        self.first_at = self.last_at = 0.0

    def feed(self, data: bytes) -> bytes:
        """The whole events `data` completes, as the client gets them (b"" while an event is incomplete)."""
        data, self.pending = whole_events(self.pending, data)
        if not data:
            return b""
        if self.guard is not None:
            data = self.guard.events(data)
        events, plain, spaced = counted_among(data, _COUNTED)
        if plain or spaced:
            data, dropped = usage_event_taken(data, self.client_wants_usage, self.usage, (plain, spaced))
            events -= dropped
        if self.renames:
            for upstream_name, served_name in self.renames:
                data = data.replace(upstream_name, served_name)
            events = data.count(b"data: ")
        if data:
            if self.capture is not None:
                self.capture.events(data)
            self.events += events
            self.last_at = time.perf_counter()
            if not self.first_at:
                self.first_at = self.last_at
                self.usage.ttft_ms = (self.last_at - self.started) * 1000
        return data

    def stopped(self) -> errors.GatewayError | None:
        """The error that ends the stream when an output guardrail stopped it (recorded on the usage), else None."""
        if self.guard is None or self.guard.stopped is None:
            return None
        stopped = errors.output_guardrail_violation(self.guard.stopped)
        self.failed(stopped, 400, "denied", "guardrail_violation")
        return stopped

    def failed(self, error: errors.GatewayError, status: int, outcome: str, code: str) -> None:
        """Record how the stream ended when it did not end well."""
        usage = self.usage
        usage.status, usage.outcome, usage.error_code, usage.error_message = status, outcome, code, error.message

    def finish(self, route: DeploymentRoute, request_bytes: int) -> None:
        """Settle the usage once the stream is over: the engine's counts, or an estimate of what was delivered when
        they never came (client left, engine died); its cost; and the inter-token latency it showed."""
        usage = self.usage
        if self.guard is not None:
            usage.guardrails = [*usage.guardrails, *self.guard.usage_entries()]
        if not usage.prompt_tokens and not usage.completion_tokens:
            usage.estimated = True
            usage.prompt_tokens = request_bytes // _BYTES_PER_TOKEN
            usage.completion_tokens = max(0, self.events - 1)  # less the role event
        usage.cost_micros = route.cost_micros(usage.prompt_tokens, usage.completion_tokens)
        if self.events > 2 and self.last_at > self.first_at:
            usage_itl = (self.last_at - self.first_at) / (self.events - 1)
            metrics.request_timed(
                model=usage.model, ttft_s=None, inter_token_s=usage_itl, prompt_tokens=0, completion_tokens=0
            )


def whole_events(pending: bytes, data: bytes) -> tuple[bytes, bytes]:
    """The events that `data` completes after `pending` (the unfinished one it follows), and the unfinished event
    after them: server-sent events end with a blank line."""
    if pending:
        data = pending + data
    end = data.rfind(b"\n\n") + 2
    if end == 1:
        return b"", data
    if end == len(data):
        return data, b""
    return data[:end], data[end:]


class Coalescer:
    """A deployment's stream interval: whole events are held and go out together once `chunks` of them wait (when
    set), or when the first of them has waited `interval_s` (when set), whichever comes first; the end of the stream
    takes what is left. The relays ask `due` when to take the rest, on a timer: no chunk waits longer than that.
    Nothing is held until the first generated text went out, so the time to first token stays the engine's."""

    __slots__ = ("chunks", "due", "held", "held_events", "interval_s", "texting")

    def __init__(self, interval_s: float, chunks: int) -> None:
        self.interval_s = interval_s
        self.chunks = chunks
        self.held: list[bytes] = []
        self.held_events = 0
        self.due = 0.0  # when what is held must go (loop time); meaningful while something is held
        self.texting = False  # the first text went out

    def hold(self, data: bytes, now: float) -> bytes:
        """What goes out now of what waits plus `data` (b"" while it all waits)."""
        if not data:
            return b""
        if not self.texting:
            self.texting = _has_text(data)
            return data
        if not self.held:
            self.due = now + self.interval_s if self.interval_s else math.inf
        self.held.append(data)
        self.held_events += data.count(b"data: ")
        if (self.chunks and self.held_events >= self.chunks) or now >= self.due:
            return self.take()
        return b""

    def take(self) -> bytes:
        """Everything held, now."""
        data = b"".join(self.held)
        self.held.clear()
        self.held_events = 0
        return data


def _has_text(data: bytes) -> bool:
    """Whether the events hold generated text: a chat delta's or a completion's non-empty string (a quote inside
    text is escaped, so the pattern only matches keys)."""
    return _TEXT.search(data) is not None


def coalescer_for(route: DeploymentRoute) -> Coalescer | None:
    """The deployment's stream interval, or None when its chunks go as they come (the default)."""
    if not route.stream_interval_s and not route.stream_interval_chunks:
        return None
    return Coalescer(route.stream_interval_s, route.stream_interval_chunks)


def usage_event_taken(
    data: bytes, client_wants_usage: bool, usage: UsageEvent, markers: tuple[int, int] | None = None
) -> tuple[bytes, int]:
    """Read the engine's usage from the whole events in `data`; drop the usage-only event unless the client asked
    for it. Only events holding a usage object are parsed, searched from the end (the last one counts): the rest of
    the stream passes as it came. The marker cannot occur inside generated text, where JSON escapes its quotes.
    `markers`: how often each of `USAGE_MARKERS` occurs in `data`, when the caller counted them already.

    Returns what is kept, and how many `data: ` the dropped events held (none spans the cut: it holds no newline)."""
    plain, spaced = markers if markers is not None else counted_among(data, USAGE_MARKERS)
    found = False
    dropped = 0
    position = len(data)
    # Only a form still to come is searched for: a search for one that is not there would cross the whole answer.
    while plain or spaced:
        plain_at = data.rfind(USAGE_MARKERS[0], 0, position) if plain else -1
        spaced_at = data.rfind(USAGE_MARKERS[1], 0, position) if spaced else -1
        if plain_at > spaced_at:
            marker_at, plain = plain_at, plain - 1
        else:
            marker_at, spaced = spaced_at, spaced - 1
        if marker_at == -1:
            break
        boundary = data.rfind(b"\n\n", 0, marker_at)
        start = boundary + 2 if boundary != -1 else 0
        end = data.find(b"\n\n", marker_at)
        end = len(data) if end == -1 else end + 2
        position = start
        if not data.startswith(b"data: ", start):
            continue
        try:
            document = json_parsed(data[start + 6 : end])
        except ValueError:
            continue
        if not isinstance(document, dict) or not isinstance(document.get("usage"), dict):
            continue
        if not found:
            counts = document["usage"]
            usage.prompt_tokens = int(counts.get("prompt_tokens") or 0)
            usage.completion_tokens = int(counts.get("completion_tokens") or 0)
            found = True
        if not client_wants_usage and not document.get("choices"):
            dropped += data.count(b"data: ", start, end)
            data = data[:start] + data[end:]
    return data, dropped
