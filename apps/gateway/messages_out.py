"""The pipeline's answers to a `/v1/messages` request, translated into Anthropic's shapes on their way to the client:
an ASGI `send` in front of the real one (apps.gateway.messages has the request side).

- A JSON answer is held until its last byte (the pipeline sends that once the request is metered) and becomes a
  Message (`msg_...`, text and tool_use blocks, stop_reason, usage), or Anthropic's error document.
- A stream's chat chunks become Anthropic's events: message_start and a ping, content_block_start/delta/stop
  (text_delta, input_json_delta) per text or tool call, then message_delta (stop_reason, usage) and message_stop
  once the engine's usage chunk (or `[DONE]`) arrives. An error that ends a started stream becomes an `error` event.

A stop reason of `stop` is `stop_sequence` when the engine names the stop string it matched (vLLM's `stop_reason`)
and that string is one the client sent, `end_turn` otherwise.
"""

from __future__ import annotations

import json
from typing import Any

from apps.gateway.translated_send import Headers, Send, TranslatedSend
from inferia_runtime.json_codec import json_compact, json_parsed

# Anthropic's error types by the HTTP status the pipeline answers with.
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    529: "overloaded_error",
}
# The pipeline's error types (OpenAI's) as Anthropic's, for an error that ends a started stream.
_STREAM_ERROR_TYPES = {
    "invalid_request_error": "invalid_request_error",
    "rate_limit_error": "rate_limit_error",
    "service_unavailable": "overloaded_error",
}
_STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "content_filter": "refusal"}
_REQUEST_ID_HEADER = b"x-request-id"
# Text chunks become text deltas by copying their strings (TranslatedSend.texts_copied): each is this head, the
# string, and this end.
_TEXT_DELTA = (
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":%d,"delta":{"type":"text_delta","text":'
)
_DELTA_END = b"}}\n\n"


def error_message(body: bytes) -> str:
    """The message of an error answer in OpenAI's shape (from the pipeline or the engine); its start otherwise."""
    try:
        return str(json.loads(body)["error"]["message"])
    except (ValueError, TypeError, KeyError):
        return body[:500].decode(errors="replace") or "The request failed."


def error_document(status: int, body: bytes) -> bytes:
    """An error answer (OpenAI's shape, from the pipeline or the engine) in Anthropic's."""
    message = error_message(body)
    kind = _ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return json.dumps({"type": "error", "error": {"type": kind, "message": message}}).encode()


def _stop_reason(choice: dict[str, Any], stop_sequences: tuple[str, ...]) -> tuple[str, str | None]:
    reason = choice.get("finish_reason") or "stop"
    matched = choice.get("stop_reason")
    if reason == "stop" and isinstance(matched, str) and matched in stop_sequences:
        return "stop_sequence", matched
    return _STOP_REASONS.get(reason, "end_turn"), None


def message_document(body: bytes, stop_sequences: tuple[str, ...]) -> bytes:
    """A chat completion as an Anthropic Message."""
    completion = json.loads(body)
    choice = (completion.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    if message.get("content"):
        content.append({"type": "text", "text": message["content"]})
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        content.append(
            {"type": "tool_use", "id": call.get("id"), "name": function.get("name"), "input": _arguments(function)}
        )
    stop_reason, stop_sequence = _stop_reason(choice, stop_sequences)
    usage = completion.get("usage") or {}
    return json.dumps(
        {
            "id": _message_id(completion.get("id")),
            "type": "message",
            "role": "assistant",
            "model": completion.get("model"),
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": stop_sequence,
            "usage": {
                "input_tokens": usage.get("prompt_tokens", 0),
                "output_tokens": usage.get("completion_tokens", 0),
            },
        },
        ensure_ascii=False,
    ).encode()


def _arguments(function: dict[str, Any]) -> Any:
    # A model may produce arguments that are not a JSON object; the block still needs an object.
    try:
        parsed = json.loads(function.get("arguments") or "{}")
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _message_id(chat_id: object) -> str:
    text = str(chat_id or "")
    return "msg_" + (text.split("-", 1)[1] if "-" in text else text)


def _event(name: bytes, document: dict[str, Any]) -> bytes:
    return b"event: " + name + b"\ndata: " + json_compact(document) + b"\n\n"


_PING = _event(b"ping", {"type": "ping"})
_MESSAGE_STOP = _event(b"message_stop", {"type": "message_stop"})


class MessagesSend(TranslatedSend):
    """`send` for one `/v1/messages` exchange."""

    def __init__(self, send: Send, *, answers: bool = True) -> None:
        super().__init__(send)
        self._answers = answers  # False: a successful answer is already Anthropic's (count_tokens), errors are not
        self.stop_sequences: tuple[str, ...] = ()
        # Stream state: the next block's index, the open block's kind ("text", "tool" or None) and tool call index.
        self._started = False
        self._index = 0
        self._open: str | None = None
        self._tool = -1
        self._stop: tuple[str, str | None] = ("end_turn", None)
        self._usage = {"input_tokens": 0, "output_tokens": 0}
        self._ended = False

    def response_headers(self, headers: Headers, *, streaming: bool) -> Headers:
        request_id = next((value for name, value in headers if name == _REQUEST_ID_HEADER), None)
        if request_id is None:
            return headers
        return [*headers, (b"request-id", request_id)]  # where Anthropic's clients look for it

    async def whole_body(self, status: int, body: bytes) -> bytes:
        if status != 200:
            return error_document(status, body)
        return message_document(body, self.stop_sequences) if self._answers else body

    async def stream_body(self, data: bytes, *, final: bool) -> bytes:
        return self._events(data, final=final)

    def piece_translated(self, data: bytes) -> bytes:
        return self._events(data, final=False)

    # --- Streams ------------------------------------------------------------------------------------------------

    def _events(self, data: bytes, *, final: bool) -> bytes:
        out: list[bytes] = []
        self.events_translate(self.complete_events(data), out)
        if final and not self._ended and self._started:
            self._finish(out)  # the engine's stream ended without [DONE]: close the message all the same
        return b"".join(out)

    def texts_copying(self) -> bool:
        return self._started and not self._ended

    def texts_add(self, texts: list[bytes], out: list[bytes]) -> None:
        """Copied texts as text deltas of the open text block (opened first when another block, or none, is)."""
        if self._open != "text":
            self._block_open(out, {"type": "text", "text": ""}, "text")
        delta = _TEXT_DELTA % (self._index - 1)
        out += (delta, (_DELTA_END + delta).join(texts), _DELTA_END)

    def text_translated(self, text: bytes) -> bytes:
        if self._open != "text":
            return super().text_translated(text)  # the text block opens first
        return b"%b%b%b" % (_TEXT_DELTA % (self._index - 1), text, _DELTA_END)

    def event_add(self, payload: bytes, out: list[bytes]) -> bool:
        if payload == b"[DONE]":
            self._finish(out)
            return False
        document = json_parsed(payload)
        if "error" in document:
            error = document["error"] or {}
            kind = _STREAM_ERROR_TYPES.get(str(error.get("type")), "api_error")
            out.append(_event(b"error", {"type": "error", "error": {"type": kind, "message": error.get("message")}}))
            self._ended = True
            return False
        if not self._started:
            self._started = True
            self.text_head_learn(payload)
            out.append(
                _event(
                    b"message_start",
                    {
                        "type": "message_start",
                        "message": {
                            "id": _message_id(document.get("id")),
                            "type": "message",
                            "role": "assistant",
                            "model": document.get("model"),
                            "content": [],
                            "stop_reason": None,
                            "stop_sequence": None,
                            "usage": {"input_tokens": 0, "output_tokens": 0},
                        },
                    },
                )
            )
            out.append(_PING)
        usage = document.get("usage")
        if isinstance(usage, dict):
            self._usage = {
                "input_tokens": usage.get("prompt_tokens", 0),
                "output_tokens": usage.get("completion_tokens", 0),
            }
        for choice in document.get("choices") or ():
            delta = choice.get("delta") or {}
            text = delta.get("content")
            if text:
                if self._open != "text":
                    self._block_open(out, {"type": "text", "text": ""}, "text")
                out.append(self._delta({"type": "text_delta", "text": text}))
            for call in delta.get("tool_calls") or ():
                index = call.get("index", 0)
                function = call.get("function") or {}
                if self._open != "tool" or index != self._tool:
                    self._tool = index
                    block = {"type": "tool_use", "id": call.get("id"), "name": function.get("name"), "input": {}}
                    self._block_open(out, block, "tool")
                if function.get("arguments"):
                    out.append(self._delta({"type": "input_json_delta", "partial_json": function["arguments"]}))
            if choice.get("finish_reason"):
                self._stop = _stop_reason(choice, self.stop_sequences)
                self._block_close(out)
        return False

    def _delta(self, delta: dict[str, Any]) -> bytes:
        return _event(b"content_block_delta", {"type": "content_block_delta", "index": self._index - 1, "delta": delta})

    def _block_open(self, out: list[bytes], block: dict[str, Any], kind: str) -> None:
        self._block_close(out)
        out.append(
            _event(
                b"content_block_start", {"type": "content_block_start", "index": self._index, "content_block": block}
            )
        )
        self._index += 1
        self._open = kind

    def _block_close(self, out: list[bytes]) -> None:
        if self._open is not None:
            out.append(_event(b"content_block_stop", {"type": "content_block_stop", "index": self._index - 1}))
            self._open = None

    def _finish(self, out: list[bytes]) -> None:
        if self._ended:
            return
        self._ended = True
        self._block_close(out)
        stop_reason, stop_sequence = self._stop
        out.append(
            _event(
                b"message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
                    "usage": self._usage,
                },
            )
        )
        out.append(_MESSAGE_STOP)
