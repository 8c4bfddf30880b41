"""The pipeline's answers to an `/ollama/api/...` request, translated into Ollama's shapes on their way to the
client: an ASGI `send` in front of the real one (apps.gateway.ollama has the request side).

- An error, from the pipeline or the engine, becomes Ollama's `{"error": "..."}` with the same status; an error
  that ends a started stream becomes that object as the stream's last line (Ollama's clients raise it).
- A JSON answer is held until its last byte (the pipeline sends that once the request is metered) and becomes
  Ollama's: a chat's `message` (tool calls with their arguments as objects), a generate's `response`, an embed's
  `embeddings`, each with the token counts and durations (nanoseconds) of Ollama's final object.
- A stream's chunks become newline-delimited JSON objects (`application/x-ndjson`) with `done: false`: a chat's
  message text, a generate's response text; tool calls arrive whole, in one object, once their arguments are
  complete. The final object (`done: true`, done_reason, counts, durations) follows the engine's usage chunk.

Answers that are already Ollama's (tags, show, version) pass through; only their errors are translated.
"""

from __future__ import annotations

import functools
import json
import time
from typing import Any

from apps.gateway.messages_out import error_message
from apps.gateway.translated_send import Headers, Send, TranslatedSend
from inferia_runtime.json_codec import json_compact, json_parsed

CHAT = "chat"
GENERATE = "generate"
EMBED = "embed"
_NDJSON = (b"content-type", b"application/x-ndjson")
# Ollama's done reasons: a tool call is a stop, and so is a stop by a content filter.
_DONE_REASONS = {"length": "length"}
# A text line (what `_piece` gives, as JSON) between its time and its text, and after its text.
_LINE_TEXT = {CHAT: b'","message":{"role":"assistant","content":', GENERATE: b'","response":'}
_TEXT_LINE_END = {CHAT: b'},"done":false}\n', GENERATE: b',"done":false}\n'}


@functools.lru_cache(maxsize=1)
def _date_and_time(seconds: int) -> bytes:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)).encode()


# The last time written, and the millisecond it is of.
_stamp: tuple[int, bytes] = (-1, b"")


def _now_bytes() -> bytes:
    """The time now as Ollama's lines carry it (UTC, to the millisecond). A busy web process writes several lines a
    millisecond, so it is formatted once a millisecond (the date and time of day once a second)."""
    global _stamp
    millisecond = time.time_ns() // 1_000_000
    if millisecond != _stamp[0]:
        seconds, rest = divmod(millisecond, 1000)
        _stamp = (millisecond, b"%b.%03dZ" % (_date_and_time(seconds), rest))
    return _stamp[1]


def _now() -> str:
    return _now_bytes().decode()


def _line(document: dict[str, Any]) -> bytes:
    return json_compact(document) + b"\n"


def _arguments(text: str) -> dict[str, Any]:
    # A model may produce arguments that are not a JSON object; Ollama's clients need an object.
    try:
        parsed = json.loads(text or "{}")
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _tool_calls(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {"function": {"name": call.get("name") or "", "arguments": _arguments(call.get("arguments") or "")}}
        for call in calls
    ]


class OllamaSend(TranslatedSend):
    """`send` for one `/ollama/api/...` exchange; `answers` is CHAT, GENERATE, EMBED, or "" (already Ollama's)."""

    def __init__(self, send: Send, *, answers: str = "") -> None:
        super().__init__(send)
        self.answers = answers
        self._started_ns = time.perf_counter_ns()
        self._first_ns = 0  # when the first generated text or call arrived
        self._model = ""
        self._line_start = b""  # a text line up to its time: `{"model":...,"created_at":"`
        self._ended = False
        self._done_reason = "stop"
        self._counts = (0, 0)  # prompt and generated tokens, from the engine's usage
        self._calls: dict[int, dict[str, Any]] = {}  # a streamed tool call's name and arguments so far, by index

    def response_headers(self, headers: Headers, *, streaming: bool) -> Headers:
        return [_NDJSON, *(item for item in headers if item[0] != b"content-type")] if streaming else headers

    async def whole_body(self, status: int, body: bytes) -> bytes:
        if status != 200:
            return json_compact({"error": error_message(body)})
        return self._answer(json.loads(body)) if self.answers else body

    async def stream_body(self, data: bytes, *, final: bool) -> bytes:
        return self._lines(data, final=final)

    def piece_translated(self, data: bytes) -> bytes:
        return self._lines(data, final=False)

    def _durations(self, prompt_tokens: int, generated_tokens: int) -> dict[str, int]:
        now = time.perf_counter_ns()
        # A whole answer does not say when its first token came: all of its time counts as generation.
        first = self._first_ns or self._started_ns
        return {
            "total_duration": now - self._started_ns,
            "load_duration": 0,
            "prompt_eval_count": prompt_tokens,
            "prompt_eval_duration": first - self._started_ns,
            "eval_count": generated_tokens,
            "eval_duration": now - first,
        }

    def _answer(self, answer: dict[str, Any]) -> bytes:
        usage = answer.get("usage") or {}
        prompt_tokens = int(usage.get("prompt_tokens") or 0)
        if self.answers == EMBED:
            vectors = [item.get("embedding") for item in sorted(answer.get("data") or (), key=lambda i: i["index"])]
            durations = self._durations(prompt_tokens, 0)
            return json_compact(
                {
                    "model": answer.get("model"),
                    "embeddings": vectors,
                    "total_duration": durations["total_duration"],
                    "load_duration": 0,
                    "prompt_eval_count": prompt_tokens,
                }
            )
        choice = (answer.get("choices") or [{}])[0]
        document: dict[str, Any] = {"model": answer.get("model"), "created_at": _now()}
        if self.answers == CHAT:
            message = choice.get("message") or {}
            reply: dict[str, Any] = {"role": "assistant", "content": message.get("content") or ""}
            calls = [call.get("function") or {} for call in message.get("tool_calls") or ()]
            if calls:
                reply["tool_calls"] = _tool_calls(calls)
            document["message"] = reply
        else:
            document["response"] = choice.get("text") or (choice.get("message") or {}).get("content") or ""
        document["done"] = True
        document["done_reason"] = _DONE_REASONS.get(choice.get("finish_reason") or "stop", "stop")
        document.update(self._durations(prompt_tokens, int(usage.get("completion_tokens") or 0)))
        return json_compact(document)

    # --- Streams ------------------------------------------------------------------------------------------------

    def _lines(self, data: bytes, *, final: bool) -> bytes:
        out: list[bytes] = []
        if not self._ended:
            self.events_translate(self.complete_events(data), out)
        if final and not self._ended and self._model:
            self._finish(out)  # the engine's stream ended without [DONE]: close it all the same
        return b"".join(out)

    def texts_copying(self) -> bool:
        return self.answers in _TEXT_LINE_END and not self._ended

    def texts_add(self, texts: list[bytes], out: list[bytes]) -> None:
        """Copied texts as text lines, which carry the time they are translated at."""
        head, end = self._text_line_ends()
        out += (head, (end + head).join(texts), end)

    def text_translated(self, text: bytes) -> bytes:
        head, end = self._text_line_ends()
        return b"%b%b%b" % (head, text, end)

    def _text_line_ends(self) -> tuple[bytes, bytes]:
        """What goes before and after a copied text in its line, now: the line carries the time."""
        self._first_ns = self._first_ns or time.perf_counter_ns()
        return self._line_start + _now_bytes() + _LINE_TEXT[self.answers], _TEXT_LINE_END[self.answers]

    def _piece(self, text: str) -> dict[str, Any]:
        if self.answers == CHAT:
            return {"model": self._model, "created_at": _now(), "message": {"role": "assistant", "content": text}}
        return {"model": self._model, "created_at": _now(), "response": text}

    def event_add(self, payload: bytes, out: list[bytes]) -> bool:
        """The event's lines; True once the stream has ended (what follows is not translated)."""
        if payload == b"[DONE]":
            self._finish(out)
            return True
        document = json_parsed(payload)
        if "error" in document:
            error = document["error"] or {}
            out.append(_line({"error": str(error.get("message") or "The request failed.")}))
            self._ended = True
            return True
        if not self._model:
            self._model = str(document.get("model") or "")
            self._line_start = b'{"model":' + json.dumps(self._model, ensure_ascii=False).encode() + b',"created_at":"'
            self.text_head_learn(payload)
        usage = document.get("usage")
        if isinstance(usage, dict):
            self._counts = (int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0))
        for choice in document.get("choices") or ():
            delta = choice.get("delta") or {}
            text = delta.get("content") or choice.get("text")  # a chat's chunk, or a raw generate's completion
            if text:
                self._first_ns = self._first_ns or time.perf_counter_ns()
                out.append(_line({**self._piece(text), "done": False}))
            for call in delta.get("tool_calls") or ():
                self._first_ns = self._first_ns or time.perf_counter_ns()
                function = call.get("function") or {}
                held = self._calls.setdefault(int(call.get("index") or 0), {"name": "", "arguments": ""})
                held["name"] = function.get("name") or held["name"]
                held["arguments"] += function.get("arguments") or ""
            if choice.get("finish_reason"):
                self._done_reason = _DONE_REASONS.get(choice["finish_reason"], "stop")
                self._calls_flush(out)
        return False

    def _calls_flush(self, out: list[bytes]) -> None:
        if not self._calls:
            return
        piece = self._piece("")
        piece["message"]["tool_calls"] = _tool_calls([self._calls[index] for index in sorted(self._calls)])
        out.append(_line({**piece, "done": False}))
        self._calls = {}

    def _finish(self, out: list[bytes]) -> None:
        if self._ended:
            return
        self._ended = True
        self._calls_flush(out)
        final = self._piece("")
        final["done"] = True
        final["done_reason"] = self._done_reason
        final.update(self._durations(*self._counts))
        out.append(_line(final))
