"""The usage event: what one `/v1` request used and how it went, as the gateway appends it to the usage stream.

`UsageEvent` is the one list of a usage event's fields. Each field says, in its metadata, its short key in the
stream's compact JSON and the UsageRecord column it is stored in; the gateway's append, the worker's decode and
insert, the CSV export and the REST API all read their fields from here. Nothing here touches the database: the hot
path imports this module.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from copy import copy
from dataclasses import dataclass, field, fields
from functools import partial
from operator import attrgetter
from typing import Any

from inferia_runtime.json_codec import json_compact

# The stream entry's one field, holding the encoded event.
EVENT_FIELD = "e"
# Bounds of what an event carries as text: the error message shown to the client, each captured text (in bytes).
ERROR_MESSAGE_MAX = 500
CAPTURE_TEXT_MAX = 32 * 1024


def _wire(
    key: str, *, column: str = "", optional: bool = False, exported: bool = True, recorded: bool = True
) -> dict[str, Any]:
    """Metadata of one event field: `key` in the stream's JSON; `column` when UsageRecord names it otherwise;
    `optional` for keys that events of earlier releases lack; `exported` when the CSV export and REST API show it;
    `recorded` unless the field is no UsageRecord column (the worker stores it elsewhere)."""
    return {"wire": key, "column": column, "optional": optional, "exported": exported, "recorded": recorded}


@dataclass(slots=True, kw_only=True)
class UsageEvent:
    """What one request used and how it went. Filled in as the request goes through the pipeline. The fields are in
    the order of UsageRecord's columns (and of the export)."""

    request_id: str = field(metadata=_wire("rid"))  # ours, unique (see `Exchange`)
    client_request_id: str = field(default="", metadata=_wire("crid", optional=True))  # the caller's own id
    started_at: float = field(metadata=_wire("t"))  # POSIX time
    organization_id: int | None = field(default=None, metadata=_wire("o"))
    team_id: int | None = field(default=None, metadata=_wire("tm"))
    key_id: int | None = field(default=None, metadata=_wire("k", column="api_key_id"))
    deployment_id: int | None = field(default=None, metadata=_wire("d"))
    replica_id: int | None = field(default=None, metadata=_wire("r", exported=False))
    endpoint: str = field(metadata=_wire("ep"))
    model: str = field(default="", metadata=_wire("m"))
    prompt_tokens: int = field(default=0, metadata=_wire("pt"))
    completion_tokens: int = field(default=0, metadata=_wire("ct"))
    cost_micros: int = field(default=0, metadata=_wire("c"))
    ttft_ms: float | None = field(default=None, metadata=_wire("ttft"))
    latency_ms: float = field(default=0.0, metadata=_wire("lat"))
    status: int = field(default=200, metadata=_wire("st", column="status_code"))
    outcome: str = field(default="ok", metadata=_wire("out"))  # UsageRecord.Outcome values
    error_code: str = field(default="", metadata=_wire("err"))
    # What the client was told, cut to ERROR_MESSAGE_MAX (UsageRecord.error_message).
    error_message: str = field(default="", metadata=_wire("msg", optional=True))
    estimated: bool = field(default=False, metadata=_wire("est", exported=False))
    streamed: bool = field(default=False, metadata=_wire("s"))
    # Which guardrails fired and what was done: [{"category", "action", "count"}, ...] (UsageRecord.guardrails).
    guardrails: list[dict[str, Any]] = field(default_factory=list, metadata=_wire("g", optional=True, exported=False))
    # The prompt and the answer as text, each cut to CAPTURE_TEXT_MAX bytes, only for an organisation that opted in
    # to capture ({"p": ..., "a": ...}); None otherwise. Masked and stored by the worker (RequestCapture), never here.
    capture: dict[str, str] | None = field(
        default=None, metadata=_wire("cap", optional=True, exported=False, recorded=False)
    )

    def encoded(self) -> bytes:
        document = dict(zip(_WIRE_KEYS, _wire_values(self), strict=True))
        if self.capture is not None:  # only for an organisation that opted in: other events stay as small as they were
            document[_CAPTURE_WIRE] = self.capture
        return json_compact(document)


@dataclass(frozen=True, slots=True)
class UsageEventField:
    """One field of the usage event, as the producer, the stream and the record name it."""

    attribute: str  # on UsageEvent
    wire: str  # in the stream's JSON
    column: str  # on UsageRecord (its attname: `api_key_id`, not `api_key`)
    optional: bool
    exported: bool
    recorded: bool  # a UsageRecord column (the capture is not: it goes to RequestCapture)
    empty: Callable[[], Any]  # makes what a missing optional key reads as (a fresh list for each event)


USAGE_EVENT_FIELDS: tuple[UsageEventField, ...] = tuple(
    UsageEventField(
        attribute=spec.name,
        wire=spec.metadata["wire"],
        column=spec.metadata["column"] or spec.name,
        optional=spec.metadata["optional"],
        exported=spec.metadata["exported"],
        recorded=spec.metadata["recorded"],
        empty=spec.default_factory if callable(spec.default_factory) else partial(copy, spec.default),
    )
    for spec in fields(UsageEvent)
)
# What `encoded()` reads per request, worked out once: the keys in order and one getter for all the values (the record's
# fields; the capture, rare, is added apart).
_WIRE_KEYS: tuple[str, ...] = tuple(spec.wire for spec in USAGE_EVENT_FIELDS if spec.recorded)
_wire_values = attrgetter(*(spec.attribute for spec in USAGE_EVENT_FIELDS if spec.recorded))
_CAPTURE_WIRE = next(spec.wire for spec in USAGE_EVENT_FIELDS if spec.attribute == "capture")
# The UsageRecord columns an event fills, in order; and those the CSV export and the REST API show.
USAGE_RECORD_COLUMNS: tuple[str, ...] = tuple(spec.column for spec in USAGE_EVENT_FIELDS if spec.recorded)
USAGE_EXPORT_COLUMNS: tuple[str, ...] = tuple(
    spec.column for spec in USAGE_EVENT_FIELDS if spec.exported and spec.recorded
)


def usage_event_decode(raw: bytes | str) -> dict[str, Any]:
    """The fields of an encoded event, named as UsageRecord's columns (for the worker; `capture` by its own name).
    A missing key raises KeyError, unless the field is optional (then it reads as its empty value)."""
    data = json.loads(raw)
    return {
        spec.column: (data.get(spec.wire) or spec.empty()) if spec.optional else data[spec.wire]
        for spec in USAGE_EVENT_FIELDS
    }


__all__ = [
    "CAPTURE_TEXT_MAX",
    "ERROR_MESSAGE_MAX",
    "EVENT_FIELD",
    "USAGE_EVENT_FIELDS",
    "USAGE_EXPORT_COLUMNS",
    "USAGE_RECORD_COLUMNS",
    "UsageEvent",
    "UsageEventField",
    "usage_event_decode",
]
