"""Many simulated engines in one process, for the health-check benchmark: each on its own loopback address.

Binds `--count` addresses 127.0.x.y (from 127.0.1.1, 250 per /24) on one port and answers what the health checker
asks of a vLLM server: `GET /health` (200, empty) and `GET /metrics` (inferia-sim's own exposition under vLLM's
names, so parsing costs what it costs against a real engine), with keep-alive, optionally after --delay-ms.
Distinct addresses mean distinct connections: nothing pooled flatters the checker. A bare asyncio protocol on uvloop,
so the engines' side stays cheap and the figure measures the checker.

    python tests/bench/health_engines.py --port 24000 --count 1000
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from inferia_sim.cli import new_event_loop
from inferia_sim.metrics import PROMETHEUS_CONTENT_TYPE, EngineStats, metrics_render
from inferia_sim.scheduler import SequenceScheduler

PER_SUBNET = 250


def engine_address(index: int) -> str:
    """The loopback address of engine `index` (0-based): 127.0.1.1 ... 127.0.1.250, 127.0.2.1, ..."""
    return f"127.0.{1 + index // PER_SUBNET}.{1 + index % PER_SUBNET}"


def _response(status: bytes, body: bytes, content_type: bytes) -> bytes:
    head = b"HTTP/1.1 " + status + b"\r\ncontent-type: " + content_type + b"\r\ncontent-length: "
    return head + str(len(body)).encode() + b"\r\n\r\n" + body


class EngineProtocol(asyncio.Protocol):
    """Answers each request head as it completes (requests without bodies only, which is all a checker sends)."""

    def __init__(self, answers: dict[bytes, bytes], delay_s: float = 0.0) -> None:
        self.answers = answers
        self.delay_s = delay_s
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            head, self.buffer = self.buffer[:end], self.buffer[end + 4 :]
            path = head.split(b" ", 2)[1] if head.count(b" ") >= 2 else b""
            answer = self.answers.get(path, self.answers[b""])
            if self.delay_s:
                asyncio.get_running_loop().call_later(self.delay_s, self._write, answer)
            else:
                self._write(answer)

    def _write(self, answer: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(answer)


async def serve(port: int, count: int, delay_s: float = 0.0) -> None:
    scheduler = SequenceScheduler(max_num_seqs=256, kv_cache_blocks=1000, kv_block_size=16)
    scheduler.running, scheduler.used_blocks = 3, 250
    metrics = metrics_render(model_name="bench-model", stats=EngineStats(), scheduler=scheduler)
    answers = {
        b"/health": _response(b"200 OK", b"", b"text/plain"),
        b"/metrics": _response(b"200 OK", metrics, PROMETHEUS_CONTENT_TYPE),
        b"": _response(b"404 Not Found", b"", b"text/plain"),
    }
    loop = asyncio.get_running_loop()
    servers = [
        await loop.create_server(lambda: EngineProtocol(answers, delay_s), engine_address(index), port, backlog=64)
        for index in range(count)
    ]
    print(f"listening on {count} addresses, port {port}", flush=True)
    await asyncio.gather(*(server.serve_forever() for server in servers))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--delay-ms", type=float, default=0.0, help="before each answer (a slow engine)")
    args = parser.parse_args()
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        runner.run(serve(args.port, args.count, args.delay_ms / 1000))


if __name__ == "__main__":
    main()
