"""Where a streamed chunk's web CPU goes: each step of the per-chunk path timed alone, and the floor no relay can go
under on this machine.

In process, per chunk of a 64-token chat stream (one token per chunk, as engines send them):
- upstream read: the fast relay's HTTP parse of one chunk (httptools, as `engine_stream` feeds it);
- SSE framing + usage: `EventRelay.feed` with nothing else on (what the fast relay does);
- model renames, output guardrails (secrets, e-mail addresses, cards), answer capture: what each adds to
  `EventRelay.feed` when active (then the general relay forwards the stream);
- server write: the fast relay's `BodyWriter.write` and uvicorn's ASGI `send` of one `http.response.body`, both to a
  transport that drops the bytes (the socket call itself is in the floor).

Then, end to end against inferia-sim at --itl-ms (default 5) and 64 concurrent streams: the web CPU per chunk of a
proxy that only copies bytes between two sockets in asyncio callbacks (uvloop), which is what the two socket calls
per chunk and the event loop cost here. The gateway's own figures are `run.py --itl-ms 5`'s.

    .venv/bin/python tests/bench/bench_relay.py [--iterations 20000] [--no-floor] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import timeit
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "inferia_site.settings")

import django  # noqa: E402

django.setup()

from uvicorn.protocols.http.httptools_impl import RequestResponseCycle  # noqa: E402

from apps.gateway.capture import AnswerCapture  # noqa: E402
from apps.gateway.engine_stream import EngineConnection  # noqa: E402
from apps.gateway.event_relay import EventRelay  # noqa: E402
from apps.gateway.output_guardrails import OutputGuard  # noqa: E402
from apps.policies.guardrails import guardrail_profile_compile  # noqa: E402
from apps.usage.events import UsageEvent  # noqa: E402
from inferia_cli.transport.uvicorn_http import BodyWriter  # noqa: E402
from tests.bench.bench_sim import cpu_seconds  # noqa: E402
from tests.kit.asgi_cycles import RecordingTransport, request_cycle  # noqa: E402
from tests.kit.processes import sim_start  # noqa: E402

LOADGEN = Path(__file__).resolve().parent / "loadgen.py"
CHUNK = (
    b'data: {"id":"chatcmpl-5f0c1a9e2b7d4c3a8e6f","object":"chat.completion.chunk","created":1796400000,'
    b'"model":"bench-model","choices":[{"index":0,"delta":{"content":" token"},"logprobs":null,'
    b'"finish_reason":null}]}\n\n'
)
RENAMES = ((b'"model":"sim/bench"', b'"model":"bench-model"'),)


def per_chunk_us(statement, iterations: int) -> float:
    """Best of 5 timings, in µs per call."""
    return min(timeit.repeat(statement, number=iterations, repeat=5)) / iterations * 1e6


def step_costs(iterations: int) -> dict[str, float]:
    costs: dict[str, float] = {}

    connection = EngineConnection(asyncio.new_event_loop())
    connection.parser.feed_data(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    connection.sink = lambda data: None
    framed = b"%x\r\n%b\r\n" % (len(CHUNK), CHUNK)
    costs["upstream read (httptools parse, fast relay)"] = per_chunk_us(
        lambda: connection.data_received(framed), iterations
    )

    def stream_us(**options) -> float:
        """`EventRelay.feed` per chunk over whole 64-chunk streams, each with a fresh relay (and guard, capture)."""

        def stream() -> None:
            made = {name: make() for name, make in options.items()}
            usage = UsageEvent(request_id="bench", started_at=0.0, endpoint="chat.completions")
            relay = EventRelay(usage, started=time.perf_counter(), client_wants_usage=False, **made)
            for _ in range(64):
                relay.feed(CHUNK)

        return per_chunk_us(stream, max(1, iterations // 64)) / 64

    framing = "SSE framing + usage (EventRelay.feed)"
    costs[framing] = stream_us()
    costs["+ model rename"] = stream_us(renames=lambda: RENAMES) - costs[framing]
    # An output profile as teams set one: secrets, e-mail addresses and card numbers redacted from answers.
    profile = guardrail_profile_compile({"output": {"secret": "redact", "email": "redact", "card": "redact"}})
    costs["+ output guardrails (secrets, e-mail, cards)"] = (
        stream_us(guard=lambda: OutputGuard(profile, chat=True)) - costs[framing]
    )
    costs["+ answer capture"] = stream_us(capture=AnswerCapture) - costs[framing]

    cycle = _cycle()
    writer = BodyWriter(cycle)
    costs["server write: BodyWriter.write (fast relay)"] = per_chunk_us(lambda: writer.write(CHUNK), iterations)
    loop = asyncio.new_event_loop()
    message = {"type": "http.response.body", "body": CHUNK, "more_body": True}

    async def sends(count: int) -> float:
        started = time.perf_counter()
        for _ in range(count):
            await cycle.send(message)
        return time.perf_counter() - started

    costs["server write: ASGI send (general relay)"] = (
        min(loop.run_until_complete(sends(iterations)) for _ in range(5)) / iterations * 1e6
    )
    loop.close()
    return {name: round(value, 2) for name, value in costs.items()}


def _cycle() -> RequestResponseCycle:
    # The transport drops what it is given: the socket call is measured by the floor, not here.
    cycle = request_cycle(RecordingTransport(keep=False))
    cycle.response_started = True
    cycle.chunked_encoding = True
    return cycle


FLOOR_PROXY = """
import asyncio, sys, uvloop
upstream_port, port = int(sys.argv[1]), int(sys.argv[2])
class Up(asyncio.Protocol):
    def __init__(self, down): self.down = down
    def data_received(self, data): self.down.write(data)
    def connection_lost(self, exc): self.down.close()
class Down(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport, self.up, self.early = transport, None, []
        asyncio.ensure_future(self.connect())
    async def connect(self):
        loop = asyncio.get_running_loop()
        up, _ = await loop.create_connection(lambda: Up(self.transport), "127.0.0.1", upstream_port)
        self.up = up
        for data in self.early: up.write(data)
    def data_received(self, data):
        if self.up: self.up.write(data)
        else: self.early.append(data)
    def connection_lost(self, exc):
        if self.up: self.up.close()
async def main():
    server = await asyncio.get_running_loop().create_server(Down, "127.0.0.1", port)
    print("ready", flush=True)
    await server.serve_forever()
uvloop.run(main())
"""


def floor_us_per_chunk(*, itl_ms: float, concurrency: int, requests: int, max_tokens: int) -> float:
    """Web CPU per chunk of a byte-copying proxy in front of the engine (µs)."""
    from tests.kit.ports import port_reserve

    with sim_start("--itl-ms", str(itl_ms), models=("bench-model",)) as sim:
        port = port_reserve()
        proxy = subprocess.Popen(
            [sys.executable, "-c", FLOOR_PROXY, str(sim.url.rsplit(":", 1)[1]), str(port)], stdout=subprocess.PIPE
        )
        try:
            assert proxy.stdout is not None
            assert proxy.stdout.readline().strip() == b"ready"
            before = cpu_seconds(proxy.pid)
            subprocess.run(
                [sys.executable, str(LOADGEN), "--url", f"http://127.0.0.1:{port}", "--concurrency", str(concurrency),
                 "--requests", str(requests), "--max-tokens", str(max_tokens), "--model", "bench-model", "--json"],
                check=True, capture_output=True,
            )  # fmt: skip
            used = cpu_seconds(proxy.pid) - before
        finally:
            proxy.terminate()
            proxy.wait(10)
    return round(used / (requests + concurrency) / max_tokens * 1e6, 2)


def main() -> int:
    parser = argparse.ArgumentParser(description="Per-chunk costs of the gateway's stream relays.")
    parser.add_argument("--iterations", type=int, default=20000)
    parser.add_argument("--itl-ms", type=float, default=5.0)
    parser.add_argument("--no-floor", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    costs = step_costs(args.iterations)
    if not args.no_floor:
        costs["floor: two socket calls + event loop (byte-copying proxy, end to end)"] = floor_us_per_chunk(
            itl_ms=args.itl_ms, concurrency=64, requests=1000, max_tokens=64
        )
    if args.json:
        print(json.dumps(costs))
    else:
        for name, value in costs.items():
            print(f"{value:8.2f} µs per chunk  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
