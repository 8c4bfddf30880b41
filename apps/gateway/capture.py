"""Prompt and answer capture, for the organisations that opted in (`Organization.capture_prompts`, off by default).

Nothing here runs for the others: the pipeline checks the key principal's `capture` flag once, and the relay checks
one attribute per chunk. For those that opted in, the request's texts and the answer's text (what the client was
sent, after the output guardrails) go on the usage event, each cut to CAPTURE_TEXT_MAX bytes; the usage worker masks
them with the organisation's guardrail redactions and stores them (`apps.usage.capture`). Nothing is masked or
written here: the gateway only gathers text.
"""

from __future__ import annotations

import json
from typing import Any

from apps.usage.events import CAPTURE_TEXT_MAX


def capture_bounded(text: str) -> str:
    """`text` cut to CAPTURE_TEXT_MAX bytes of UTF-8 (never in the middle of a character)."""
    if len(text) * 4 <= CAPTURE_TEXT_MAX:
        return text
    return text.encode()[:CAPTURE_TEXT_MAX].decode(errors="ignore")


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: the text ones, others named
        return "\n".join(
            part["text"] if isinstance(part.get("text"), str) else f"[{part.get('type', 'part')}]"
            for part in content
            if isinstance(part, dict)
        )
    return ""


def prompt_text(body: bytes) -> str:
    """The texts a request body sends to the model, readable: chat messages one per paragraph as `role: content`,
    a completion's prompt, an embedding's input. A body that is no JSON object is kept as it came (decoded)."""
    try:
        document = json.loads(body)
    except ValueError:
        return capture_bounded(body.decode(errors="replace"))
    if not isinstance(document, dict):
        return capture_bounded(body.decode(errors="replace"))
    parts: list[str] = []
    messages = document.get("messages")
    if isinstance(messages, list):
        for message in messages:
            if isinstance(message, dict):
                parts.append(f"{message.get('role', 'user')}: {_content_text(message.get('content'))}")
    for name in ("prompt", "input"):
        value = document.get(name)
        if isinstance(value, str):
            parts.append(value)
        elif isinstance(value, list):
            parts.extend(item for item in value if isinstance(item, str))
    return capture_bounded("\n\n".join(parts))


class AnswerCapture:
    """The answer's text as it goes to the client: choices' deltas of a stream, or a complete body's choices, kept
    per choice until CAPTURE_TEXT_MAX characters were gathered (then the rest is not even parsed)."""

    __slots__ = ("full", "size", "texts")

    def __init__(self) -> None:
        self.texts: dict[int, list[str]] = {}
        self.size = 0
        self.full = False

    def events(self, data: bytes) -> None:
        """Whole server-sent events, as `stream_relay` forwards them."""
        if self.full:
            return
        for line in data.split(b"\n"):
            if not line.startswith(b"data: {"):
                continue
            try:
                document = json.loads(line[6:])
            except ValueError:
                continue
            for choice in document.get("choices") or ():
                if isinstance(choice, dict):
                    delta = choice.get("delta")
                    text = delta.get("content") if isinstance(delta, dict) else choice.get("text")
                    self._add(choice.get("index"), text)

    def body(self, data: bytes) -> None:
        """A complete answer's JSON document."""
        try:
            document = json.loads(data)
        except ValueError:
            return
        if not isinstance(document, dict):
            return
        for choice in document.get("choices") or ():
            if isinstance(choice, dict):
                message = choice.get("message")
                text = _content_text(message.get("content")) if isinstance(message, dict) else choice.get("text")
                self._add(choice.get("index"), text)

    def _add(self, index: Any, text: Any) -> None:
        if self.full or not isinstance(text, str) or not text:
            return
        self.texts.setdefault(index if isinstance(index, int) else 0, []).append(text)
        self.size += len(text)
        self.full = self.size >= CAPTURE_TEXT_MAX

    def text(self) -> str:
        """The answer; with several choices, each under its number."""
        if len(self.texts) <= 1:
            return capture_bounded("".join(next(iter(self.texts.values()), [])))
        return capture_bounded(
            "\n\n".join(f"[choice {index}]\n" + "".join(parts) for index, parts in sorted(self.texts.items()))
        )


def capture_texts(body: bytes, answer: AnswerCapture | None) -> dict[str, str]:
    """What goes on the usage event's `capture`: the prompt and the answer, each bounded."""
    return {"p": prompt_text(body), "a": answer.text() if answer is not None else ""}


__all__ = ["AnswerCapture", "capture_bounded", "capture_texts", "prompt_text"]
