"""Output guardrails on an answer as it passes through the gateway: one `StreamScanner` per choice of a completion.

Only used when the key's guardrail profile scans output; under the default profile the pipeline never builds an
`OutputGuard` and streams stay byte-for-byte unbuffered. A scanner holds back only the tail of a choice's text that
could still complete a match; what it releases is forwarded at once in the event it arrived with (re-serialised
when its text changed). A choice's held tail goes out with its `finish_reason` event, or in an extra event before
`[DONE]` when none came.
"""

from __future__ import annotations

import json
from typing import Any

from apps.policies.guardrails import CompiledProfile
from apps.policies.guardrails.engine import StreamScannerProtocol

_DONE = b"data: [DONE]"


class OutputGuard:
    """Scans the text of every choice of one response (streamed events or a whole JSON answer)."""

    def __init__(self, profile: CompiledProfile, *, chat: bool) -> None:
        self._profile = profile
        self._chat = chat
        self._scanners: dict[int, StreamScannerProtocol] = {}
        self._finished: set[int] = set()
        self._template: dict[str, Any] = {}  # id, object, created, model of the last event, for the tail event
        self.stopped: str | None = None

    # --- streamed -----------------------------------------------------------------------------------------------

    def events(self, data: bytes) -> bytes:
        """Whole SSE events in, the events to forward out. After a stop (`stopped` set), only the text released
        before the match is forwarded; the caller ends the stream with an error event."""
        out: list[bytes] = []
        for event in data.split(b"\n\n"):
            if not event:
                continue
            if event.startswith(_DONE):
                tail = self._tail_event()
                if tail:
                    out.append(tail)
                out.append(event)
                continue
            out.append(self._event(event))
            if self.stopped is not None:
                break
        return b"".join(item + b"\n\n" for item in out if item)

    def _event(self, event: bytes) -> bytes:
        if not event.startswith(b"data: ") or b'"choices"' not in event:
            return event
        try:
            document = json.loads(event[6:])
        except ValueError:
            return event
        choices = document.get("choices") if isinstance(document, dict) else None
        if not isinstance(choices, list) or not choices:
            return event
        self._template = {name: document[name] for name in ("id", "object", "created", "model") if name in document}
        changed = False
        for choice in choices:
            if not isinstance(choice, dict):
                continue
            changed |= self._choice_scanned(choice)
            if self.stopped is not None:
                break
        return b"data: " + json.dumps(document, separators=(",", ":")).encode() if changed else event

    def _choice_scanned(self, choice: dict[str, Any]) -> bool:
        """Feed one choice's delta to its scanner and put back what may go out now. True when the text changed."""
        index = choice.get("index", 0)
        holder, field = (choice.get("delta"), "content") if self._chat else (choice, "text")
        text = holder.get(field) if isinstance(holder, dict) else None
        scanner = self._scanner(index)
        released = ""
        if isinstance(text, str) and text:
            chunk = scanner.feed(text)
            released, self.stopped = chunk.text, chunk.stop
        if self.stopped is None and choice.get("finish_reason") is not None and index not in self._finished:
            self._finished.add(index)
            chunk = scanner.finish()
            released, self.stopped = released + chunk.text, chunk.stop
        if not isinstance(holder, dict) or (released == text) or (text is None and not released):
            return False
        holder[field] = released
        return True

    def _tail_event(self) -> bytes:
        """An event carrying what the scanners still hold for choices that never sent a finish_reason."""
        choices = []
        for index, scanner in sorted(self._scanners.items()):
            if index in self._finished:
                continue
            self._finished.add(index)
            chunk = scanner.finish()
            if chunk.stop is not None:
                self.stopped = chunk.stop
                break
            if chunk.text:
                choice: dict[str, Any] = {"index": index, "finish_reason": None}
                if self._chat:
                    choice["delta"] = {"content": chunk.text}
                else:
                    choice["text"] = chunk.text
                choices.append(choice)
        if not choices:
            return b""
        return b"data: " + json.dumps({**self._template, "choices": choices}, separators=(",", ":")).encode()

    def _scanner(self, index: int) -> StreamScannerProtocol:
        scanner = self._scanners.get(index)
        if scanner is None:
            scanner = self._scanners[index] = self._profile.stream_scanner()  # type: ignore[assignment]
        return scanner  # type: ignore[return-value]

    # --- whole answers ------------------------------------------------------------------------------------------

    def body(self, body: bytes) -> bytes:
        """A complete JSON answer with every choice's text scanned (redacted in place); `stopped` says whether a
        stop category matched, in which case the answer must not be sent at all."""
        try:
            document = json.loads(body)
        except ValueError:
            return body
        choices = document.get("choices") if isinstance(document, dict) else None
        if not isinstance(choices, list):
            return body
        changed = False
        for choice in choices:
            if not isinstance(choice, dict):
                continue
            holder, field = (choice.get("message"), "content") if self._chat else (choice, "text")
            text = holder.get(field) if isinstance(holder, dict) else None
            if not isinstance(text, str) or not text:
                continue
            scanner = self._profile.stream_scanner()
            assert scanner is not None
            first, last = scanner.feed(text), scanner.finish()
            self._scanners[choice.get("index", 0)] = scanner
            if first.stop or last.stop:
                self.stopped = first.stop or last.stop
                return b""
            released = first.text + last.text
            if released != text:
                holder[field] = released  # type: ignore[index]
                changed = True
        return json.dumps(document, separators=(",", ":")).encode() if changed else body

    # --- reporting ----------------------------------------------------------------------------------------------

    def usage_entries(self) -> list[dict[str, Any]]:
        """What fired on output, for the usage event, in the shape of the input check's entries."""
        counts: dict[str, int] = {}
        for scanner in self._scanners.values():
            for category, count in getattr(scanner, "hits", {}).items():
                counts[category] = counts.get(category, 0) + count
        actions = self._profile.output_actions
        return [
            {"category": category, "action": actions.get(category, "off"), "count": count, "on": "output"}
            for category, count in sorted(counts.items())
        ]
