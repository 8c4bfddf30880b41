"""The pipeline's answers to a `/v1/responses` request, translated into OpenAI's Response shapes on their way to the
client: an ASGI `send` in front of the real one (apps.gateway.responses has the request side).

- A JSON answer is held until its last byte (the pipeline sends that once the request is metered) and becomes a
  Response (`resp_...`, its output items: a `file_search_call` when retrieval ran, a `message` with `output_text`,
  `function_call`s; `usage`). Errors are already in OpenAI's shape and pass unchanged.
- A stream's chat chunks become the Responses events, each with its `sequence_number`: response.created and
  response.in_progress, then per output item output_item.added, content_part.added, output_text.delta/done and
  content_part.done (text) or function_call_arguments.delta/done (a call), output_item.done; and, once the engine's
  usage chunk and `[DONE]` have come, response.completed (or response.incomplete when the answer hit
  max_output_tokens). An error that ends a started stream becomes an `error` event.

Before the complete answer leaves (the last byte of a JSON answer, the final event of a stream), `completed` is
awaited with the final Response: storing it there means a client that has the answer can already read it back.
"""

from __future__ import annotations

import json
import time
import weakref
from collections.abc import Awaitable, Callable
from itertools import repeat
from typing import Any

import orjson

from apps.gateway.exchange import Exchange
from apps.gateway.translated_send import Send, TranslatedSend
from inferia_runtime.json_codec import json_compact, json_parsed
from inferia_runtime.random_ids import random_hex

Completed = Callable[[dict[str, Any]], Awaitable[None]]


def _item_id(prefix: str) -> str:
    return f"{prefix}_{random_hex(24)}"


def _event(document: dict[str, Any]) -> bytes:
    return b"event: " + str(document["type"]).encode() + b"\ndata: " + json_compact(document) + b"\n\n"


# A text delta event after its text: logprobs, then the sequence number (as `_emit` adds it, last), then the end;
# and how the same event with an empty delta ends before `_emit` adds anything (what is cut off to get its head).
_DELTA_SEQUENCE = b',"logprobs":[],"sequence_number":'
_EVENT_END = b"}\n\n"
_EMPTY_DELTA_END = b'""}\n\n'
_SEQUENCE_NUMBERS = [b"%d" % number for number in range(4096)]


def _sequence_numbers(start: int, count: int) -> list[bytes]:
    if start + count <= len(_SEQUENCE_NUMBERS):
        return _SEQUENCE_NUMBERS[start : start + count]
    return [b"%d" % number for number in range(start, start + count)]


def json_strings_joined(strings: list[bytes]) -> bytes:
    """Non-empty JSON strings (quotes included) as the one JSON string of their texts one after the other."""
    # Side by side, between the first start and the last end, each `""` is one's end and the next one's start, or
    # an escaped quote's `"` and an end beside a start, where dropping any two of the three leaves the same bytes.
    return b'"' + b"".join(strings)[1:-1].replace(b'""', b"") + b'"'


def _usage(usage: dict[str, Any] | None) -> dict[str, Any]:
    usage = usage or {}
    prompt = int(usage.get("prompt_tokens") or 0)
    completion = int(usage.get("completion_tokens") or 0)
    cached = int((usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt + completion,
    }


class ResponsesSend(TranslatedSend):
    """`send` for one `/v1/responses` exchange. `echo` holds the request's fields the Response repeats (model,
    instructions, tools, ...); `search_query` is the text retrieval searched for, when a file_search tool ran."""

    def __init__(self, send: Send) -> None:
        super().__init__(send)
        self.response_id = ""
        self.echo: dict[str, Any] = {}
        self.search_query = ""
        self._exchange: weakref.ref[Exchange] | None = None
        self.completed: Completed | None = None
        self._created_at = int(time.time())
        # Stream state.
        self._sequence = 0
        self._started = False
        self._ended = False
        self._output: list[dict[str, Any]] = []
        self._open: dict[str, Any] | None = None  # the output item being streamed
        self._tool_index = -1
        self._finish_reason = "stop"
        self._usage: dict[str, Any] | None = None
        # The open message's text deltas: their event's head (up to the text), and the copied texts (JSON strings) not
        # yet in its part.
        self._delta_head = b""
        self._texts: list[bytes] = []

    # --- The Response --------------------------------------------------------------------------------------------

    def _response(self, status: str, output: list[dict[str, Any]], usage: dict[str, Any] | None) -> dict[str, Any]:
        incomplete = status == "incomplete"
        return {
            "id": self.response_id,
            "object": "response",
            "created_at": self._created_at,
            "status": status,
            "error": None,
            "incomplete_details": {"reason": "max_output_tokens"} if incomplete else None,
            **self.echo,
            "output": output,
            "usage": usage,
        }

    def _status(self) -> str:
        return "incomplete" if self._finish_reason == "length" else "completed"

    def exchange_follow(self, exchange: Exchange) -> None:
        """Read what retrieval finds for the request from `exchange`: weakly, since the exchange holds this `send`
        (a cycle would leave every request's objects to the garbage collector)."""
        self._exchange = weakref.ref(exchange)

    def _search_item(self) -> dict[str, Any] | None:
        """The file_search_call retrieval made, when it ran for this request."""
        exchange = self._exchange() if self._exchange is not None else None
        retrieved = exchange.retrieved if exchange is not None else None
        if retrieved is None:
            return None
        chunks = json.loads(retrieved)["chunks"]
        return {
            "id": _item_id("fs"),
            "type": "file_search_call",
            "status": "completed",
            "queries": [self.search_query],
            "results": [
                {
                    "file_id": chunk["file_id"],
                    "filename": chunk["filename"],
                    "score": chunk["score"],
                    "attributes": {"index": chunk["index"], "flagged": chunk["flagged"]},
                }
                for chunk in chunks
            ],
        }

    async def _complete(self, response: dict[str, Any]) -> None:
        if self.completed is not None:
            await self.completed(response)

    # --- ASGI ----------------------------------------------------------------------------------------------------

    async def whole_body(self, status: int, body: bytes) -> bytes:
        if status != 200:
            return body  # already OpenAI's error shape
        response = self._response_of(json.loads(body))
        await self._complete(response)
        return json.dumps(response, ensure_ascii=False).encode()

    async def stream_body(self, data: bytes, *, final: bool) -> bytes:
        return await self._events(data, final=final)

    def _response_of(self, completion: dict[str, Any]) -> dict[str, Any]:
        """A chat completion as a Response."""
        choice = (completion.get("choices") or [{}])[0]
        message = choice.get("message") or {}
        self._finish_reason = choice.get("finish_reason") or "stop"
        output: list[dict[str, Any]] = []
        search = self._search_item()
        if search is not None:
            output.append(search)
        if message.get("content"):
            output.append(self._message_item(message["content"], "completed"))
        for call in message.get("tool_calls") or ():
            function = call.get("function") or {}
            output.append(
                self._call_item(call.get("id"), function.get("name"), function.get("arguments") or "", "completed")
            )
        return self._response(self._status(), output, _usage(completion.get("usage")))

    @staticmethod
    def _message_item(text: str | None, status: str) -> dict[str, Any]:
        content = [] if text is None else [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]
        return {"id": _item_id("msg"), "type": "message", "status": status, "role": "assistant", "content": content}

    @staticmethod
    def _call_item(call_id: str | None, name: str | None, arguments: str, status: str) -> dict[str, Any]:
        call_id = call_id or _item_id("call")
        return {
            "id": _item_id("fc"),
            "type": "function_call",
            "status": status,
            "call_id": call_id,
            "name": name,
            "arguments": arguments,
        }

    # --- Streams -------------------------------------------------------------------------------------------------

    def _emit(self, out: list[bytes], document: dict[str, Any]) -> None:
        out.append(_event({**document, "sequence_number": self._sequence}))
        self._sequence += 1

    async def _events(self, data: bytes, *, final: bool) -> bytes:
        out: list[bytes] = []
        if self._in_step(data, out) and not self._ended:
            if not self._started:
                self._begin(out)
            await self._finish(out)  # [DONE]: the response is complete (and stored) before its last events go
        if final and not self._ended and self._started:
            await self._finish(out)  # the engine's stream ended without [DONE]: close the response all the same
        return b"".join(out)

    def _in_step(self, data: bytes, out: list[bytes]) -> bool:
        """Translate the whole events of `data` up to the engine's [DONE], without awaiting; True once [DONE] came,
        which is left, with anything after it, for `_events` to finish the response with."""
        data = self.complete_events(data)
        stopped = self.events_translate(data, out)
        if stopped == len(data):
            return False
        self._pending = data[stopped:] + self._pending
        return True

    def texts_copying(self) -> bool:
        return self._started and not self._ended

    def event_add(self, payload: bytes, out: list[bytes]) -> bool:
        if payload == b"[DONE]":
            return True  # the end is `_events`' to translate: the response is stored before its last events go
        self._chunk(payload, out)
        return False

    def texts_add(self, texts: list[bytes], out: list[bytes]) -> None:
        """Copied texts as text deltas of the open message (opened first when another item, or none, is)."""
        if self._open is None or self._open["type"] != "message":
            self._message_open(out)
        self._texts += texts
        head, count = self._delta_head, len(texts)
        ends = map(b"".join, zip(texts, repeat(_DELTA_SEQUENCE), _sequence_numbers(self._sequence, count)))
        out += (head, (_EVENT_END + head).join(ends), _EVENT_END)
        self._sequence += count

    def text_translated(self, text: bytes) -> bytes:
        if self._open is None or self._open["type"] != "message":
            return super().text_translated(text)  # the message opens first
        self._texts.append(text)
        sequence = self._sequence
        self._sequence = sequence + 1
        return b"%b%b%b%d%b" % (self._delta_head, text, _DELTA_SEQUENCE, sequence, _EVENT_END)

    def piece_translated(self, data: bytes) -> bytes:
        # Up to [DONE] in step; the end (storing the response) when the stream ends, through `stream_body`.
        out: list[bytes] = []
        self._in_step(data, out)
        return b"".join(out)

    def _begin(self, out: list[bytes]) -> None:
        self._started = True
        response = json_compact(self._response("in_progress", [], None))
        for kind in (b"response.created", b"response.in_progress"):  # one Response, encoded once
            out.append(
                b'event: %b\ndata: {"type":"%b","response":%b,"sequence_number":%d}\n\n'
                % (kind, kind, response, self._sequence)
            )
            self._sequence += 1
        search = self._search_item()
        if search is not None:
            index = len(self._output)
            self._output.append(search)
            self._emit(out, {"type": "response.output_item.added", "output_index": index, "item": search})
            for step in ("in_progress", "searching", "completed"):
                self._emit(
                    out, {"type": f"response.file_search_call.{step}", "output_index": index, "item_id": search["id"]}
                )
            self._emit(out, {"type": "response.output_item.done", "output_index": index, "item": search})

    def _chunk(self, payload: bytes, out: list[bytes]) -> None:
        if self._ended:
            return
        document = json_parsed(payload)
        if not self._started:
            self._begin(out)
            self.text_head_learn(payload)
        if "error" in document:
            error = document["error"] or {}
            self._item_close(out)
            self._emit(
                out,
                {
                    "type": "error",
                    "code": error.get("code"),
                    "message": error.get("message"),
                    "param": error.get("param"),
                },
            )
            self._ended = True
            return
        if isinstance(document.get("usage"), dict):
            self._usage = document["usage"]
        for choice in document.get("choices") or ():
            delta = choice.get("delta") or {}
            text = delta.get("content")
            if text:
                self._text_delta(out, text)
            for call in delta.get("tool_calls") or ():
                self._call_delta(out, call)
            if choice.get("finish_reason"):
                self._finish_reason = choice["finish_reason"]
                self._item_close(out)

    def _position(self) -> dict[str, Any]:
        assert self._open is not None
        return {"item_id": self._open["id"], "output_index": len(self._output) - 1}

    def _item_open(self, out: list[bytes], item: dict[str, Any]) -> None:
        self._item_close(out)
        self._output.append(item)
        self._open = item
        self._emit(out, {"type": "response.output_item.added", "output_index": len(self._output) - 1, "item": item})

    def _message_open(self, out: list[bytes]) -> None:
        item = self._message_item(None, "in_progress")
        self._item_open(out, item)
        part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        self._emit(out, {"type": "response.content_part.added", **self._position(), "content_index": 0, "part": part})
        item["content"].append({**part})
        delta = {"type": "response.output_text.delta", **self._position(), "content_index": 0, "delta": ""}
        self._delta_head = _event(delta)[: -len(_EMPTY_DELTA_END)]

    def _text_delta(self, out: list[bytes], text: str) -> None:
        if self._open is None or self._open["type"] != "message":
            self._message_open(out)
        assert self._open is not None
        self._texts_flush()
        self._open["content"][0]["text"] += text
        self._emit(
            out,
            {
                "type": "response.output_text.delta",
                **self._position(),
                "content_index": 0,
                "delta": text,
                "logprobs": [],
            },
        )

    def _texts_flush(self) -> None:
        """The texts of deltas copied as they came, into the open message's part."""
        if self._texts and self._open is not None:
            self._open["content"][0]["text"] += orjson.loads(json_strings_joined(self._texts))
        self._texts = []

    def _call_delta(self, out: list[bytes], call: dict[str, Any]) -> None:
        index = call.get("index", 0)
        function = call.get("function") or {}
        if self._open is None or self._open["type"] != "function_call" or index != self._tool_index:
            self._tool_index = index
            self._item_open(out, self._call_item(call.get("id"), function.get("name"), "", "in_progress"))
        assert self._open is not None
        arguments = function.get("arguments")
        if arguments:
            self._open["arguments"] += arguments
            self._emit(out, {"type": "response.function_call_arguments.delta", **self._position(), "delta": arguments})

    def _item_close(self, out: list[bytes]) -> None:
        item = self._open
        if item is None:
            return
        position = self._position()
        self._texts_flush()
        self._delta_head = b""
        if item["type"] == "message":
            part = item["content"][0]
            text = {"type": "response.output_text.done", **position, "content_index": 0, "text": part["text"]}
            self._emit(out, {**text, "logprobs": []})
            self._emit(out, {"type": "response.content_part.done", **position, "content_index": 0, "part": part})
        else:
            done = {"type": "response.function_call_arguments.done", **position, "arguments": item["arguments"]}
            self._emit(out, {**done, "name": item["name"]})
        item["status"] = "completed"
        self._emit(out, {"type": "response.output_item.done", "output_index": position["output_index"], "item": item})
        self._open = None

    async def _finish(self, out: list[bytes]) -> None:
        self._ended = True
        self._item_close(out)
        status = self._status()
        response = self._response(status, self._output, _usage(self._usage))
        await self._complete(response)
        self._emit(out, {"type": f"response.{status}", "response": response})
