"""`inferia chat`: an interactive, streaming, multi-turn chat against `/v1`, with the official `openai` client.

Each line read from stdin is a user turn (a terminal or a pipe alike); the answer streams as it arrives and joins
the history that the next turn sends. `/exit`, end of input or Ctrl-C ends the session.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import IO, Any

from inferia_cli.remote import DEFAULT_URL, RemoteError

EXIT_WORDS = ("/exit", "/quit")


def command_chat(args: argparse.Namespace) -> int:
    key = os.environ.get("INFERIA_API_KEY", "").strip()
    if not key:
        raise RemoteError("set INFERIA_API_KEY to an API key with the `inference` scope")
    base = (args.url or os.environ.get("INFERIA_URL") or DEFAULT_URL).rstrip("/")
    import openai  # here, not at the top: it takes a while to import, and the other verbs do not need it

    client = openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0, timeout=args.timeout)
    try:
        return _converse(client, args, stdin=sys.stdin, out=sys.stdout)
    except KeyboardInterrupt:
        print(file=sys.stdout, flush=True)  # end the half-written line; no traceback
        return 0
    except openai.AuthenticationError:
        raise RemoteError("the server refused the API key (401: check INFERIA_API_KEY)") from None
    except openai.PermissionDeniedError as error:
        raise RemoteError(f"the key may not do this (403): {_message(error)}") from None
    except openai.NotFoundError as error:
        raise RemoteError(f"not found (404): {_message(error)}") from None
    except openai.APIConnectionError:
        raise RemoteError(f"cannot reach Inferia at {base} (is it running? see --url)") from None
    except openai.APIStatusError as error:
        raise RemoteError(f"the server answered {error.status_code}: {_message(error)}") from None


def _converse(client: Any, args: argparse.Namespace, *, stdin: IO[str], out: IO[str]) -> int:
    model = args.model or _first_model(client)
    messages: list[dict[str, str]] = [{"role": "system", "content": args.system}] if args.system else []
    interactive = stdin.isatty()
    if interactive:
        print(f"chatting with {model}; /exit or Ctrl-D ends", file=sys.stderr)
    turn = 0
    while True:
        if interactive:
            print("you> ", end="", file=sys.stderr, flush=True)
        line = stdin.readline()
        if not line:  # end of input
            return 0
        text = line.strip()
        if text in EXIT_WORDS:
            return 0
        if not text:
            continue
        turn += 1
        messages.append({"role": "user", "content": text})
        answer, usage = _stream_answer(client, model, messages, out)
        messages.append({"role": "assistant", "content": answer})
        if args.verbose:
            tokens = ""
            if usage is not None:
                tokens = f"; prompt_tokens {usage.prompt_tokens}, completion_tokens {usage.completion_tokens}"
            print(f"[turn {turn}: sent {len(messages) - 1} message(s){tokens}]", file=sys.stderr, flush=True)


def _stream_answer(client: Any, model: str, messages: list[dict[str, str]], out: IO[str]) -> tuple[str, Any]:
    """Print the answer chunk by chunk as it streams; return its text and the usage the server reported."""
    stream = client.chat.completions.create(
        model=model, messages=messages, stream=True, stream_options={"include_usage": True}
    )
    parts: list[str] = []
    usage = None
    with stream:
        for chunk in stream:
            if chunk.usage is not None:
                usage = chunk.usage
            for choice in chunk.choices:
                if choice.delta.content:
                    parts.append(choice.delta.content)
                    print(choice.delta.content, end="", file=out, flush=True)
    print(file=out, flush=True)
    return "".join(parts), usage


def _first_model(client: Any) -> str:
    models = sorted(model.id for model in client.models.list())
    if not models:
        raise RemoteError("this key may use no model (see /v1/models); give one with --model")
    return models[0]


def _message(error: Any) -> str:
    body = getattr(error, "body", None)
    if isinstance(body, dict):
        return str(body.get("message") or body.get("error", {}).get("message") or error)
    return str(error)
