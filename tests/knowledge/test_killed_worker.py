"""An ingestion worker SIGKILLed in the middle of a file, with real Celery worker processes (`inferia start worker`)
on the test database and broker, embedding through their own in-process gateway on an inferia-sim engine.

The first worker is killed once it has written some of the file's chunks (it renews its lease after each batch of
64); the file stays `in_progress` under a lease nobody renews. A SIGKILLed worker's message stays unacknowledged in
Redis for the broker's visibility timeout (an hour), so what rescues the file is the periodic resume once the lease
runs out: the test shortens the lease with INFERIA_KNOWLEDGE_INGEST_LEASE_SECONDS and sends the resume task, as beat
does every 30 seconds, to a second worker. That worker must finish the file without writing any chunk twice and
without rewriting the ones already there.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import os
import signal
import time
from collections.abc import Iterator

import pytest
from django.db.models import Count
from django.utils import timezone

from apps.knowledge import ingestion, services
from apps.knowledge.models import Chunk, VectorStoreFile
from tests.kit.processes import TestProcess, child_database_url, inferia_start
from tests.kit.waiting import eventually
from tests.knowledge.conftest import EMBED_MODEL

pytestmark = pytest.mark.slow

LEASE_SECONDS = 3
# About 60 batches of 64 chunks: long enough that the first worker is still inside the file when it is killed.
SENTENCES = 25_000
TEXT = " ".join(f"Sentence {n} of the handbook describes item {n} in plain words." for n in range(SENTENCES))


def broker_discard_everything() -> None:
    """Empty the queues and forget unacknowledged messages (the killed worker's would come back in an hour)."""
    from celery_app import app

    app.control.purge()
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        channel.client.delete(channel.unacked_key, channel.unacked_index_key)


class Workers:
    """Celery workers of this test's own, on the test database, the test's file storage and a short lease."""

    def __init__(self, knowledge_dir: str) -> None:
        self.env = {
            **os.environ,
            "DATABASE_URL": child_database_url(),
            "INFERIA_KNOWLEDGE_DIR": knowledge_dir,
            "INFERIA_KNOWLEDGE_INGEST_LEASE_SECONDS": str(LEASE_SECONDS),
            "INFERIA_WORKER_CONCURRENCY": "1",
        }
        self.processes: list[TestProcess] = []

    def start(self) -> TestProcess:
        worker = inferia_start(["start", "worker"], env=self.env)
        self.processes.append(worker)
        worker.wait_until(lambda: any(" ready." in line for line in worker.lines), timeout=120, what="worker ready")
        return worker

    def kill(self, worker: TestProcess) -> None:
        """SIGKILL the worker's process group (Celery's main process and its pool), as the OOM killer would."""
        os.killpg(worker.pid, signal.SIGKILL)
        worker.popen.wait(timeout=10)
        eventually(lambda: not worker.session_processes(), timeout=10, what="the killed worker's pool gone")

    def output(self) -> str:
        return "\n".join(f"--- worker {n}\n" + "\n".join(p.lines[-40:]) for n, p in enumerate(self.processes))

    def close(self) -> None:
        for process in reversed(self.processes):
            if process.returncode is None:
                with contextlib.suppress(Exception):
                    process.interrupt(timeout=30)
            process.kill_everything()


@pytest.fixture
def workers(organization, knowledge_files) -> Iterator[Workers]:
    """Workers torn down before the test database is flushed; no other worker may consume this broker."""
    from celery_app import app

    assert app.control.ping(timeout=1.0) == [], "another Celery worker consumes this broker"
    broker_discard_everything()
    plane = Workers(str(knowledge_files))
    try:
        yield plane
    finally:
        plane.close()
        broker_discard_everything()


def _written(store_file_id: int) -> int:
    return Chunk.objects.filter(store_file_id=store_file_id).count()


def test_a_file_whose_worker_was_killed_is_finished_by_another_without_a_duplicate_chunk(organization, workers):
    from celery import current_app

    file = services.knowledge_file_create(
        organization=organization,
        handle=io.BytesIO(TEXT.encode()),
        filename="handbook.txt",
        purpose="assistants",
        actor=None,
    )
    # Committed at once (no test transaction): the ingestion task is on the broker before any worker runs.
    store = services.vector_store_create(
        organization=organization,
        embedding_model=EMBED_MODEL,
        dimensions=384,
        actor=None,
        chunk_max_tokens=100,
        chunk_overlap_tokens=0,
        file_ids=[file.public_id],
    )
    store_file = VectorStoreFile.objects.get(vector_store=store)
    first = workers.start()

    try:
        eventually(lambda: _written(store_file.pk) > 0, timeout=120, interval=0.01, what="the first chunks written")
    except AssertionError as error:
        raise AssertionError(f"{error}\n{workers.output()}") from None
    workers.kill(first)

    store_file.refresh_from_db()
    before_kill = dict(Chunk.objects.filter(store_file=store_file).values_list("index", "pk"))
    assert store_file.status == "in_progress"
    assert 0 < len(before_kill) < store_file.chunks_total, "the worker was not killed in the middle of the file"
    assert store_file.claimed_until > timezone.now()  # the dead worker's lease, which nobody renews
    assert "Hard time limit" not in first.output

    workers.start()
    time.sleep(max(0.0, (store_file.claimed_until - timezone.now()).total_seconds()) + 0.2)
    current_app.send_task("apps.knowledge.tasks.store_files_resume")  # what beat sends every 30 seconds

    def completed() -> bool:
        store_file.refresh_from_db()
        return store_file.status != "in_progress"

    try:
        eventually(completed, timeout=180, interval=0.2, what="the file finished by the second worker")
    except AssertionError as error:
        raise AssertionError(f"{error}\n{workers.output()}") from None

    assert store_file.status == "completed", (store_file.last_error_code, store_file.last_error_message)
    chunks = list(Chunk.objects.filter(store_file=store_file).order_by("index"))
    assert len(chunks) == store_file.chunks_total == store_file.chunks_done
    assert [chunk.index for chunk in chunks] == list(range(store_file.chunks_total))
    duplicates = (
        Chunk.objects.filter(store_file=store_file)
        .values("store_file", "generation", "index")
        .annotate(rows=Count("pk"))
        .filter(rows__gt=1)
    )
    assert not duplicates.exists()
    after = {chunk.index: chunk.pk for chunk in chunks}
    assert all(after[index] == pk for index, pk in before_kill.items())  # kept, not written again
    # Complete and in order: each chunk is its span of the text, the spans follow one another, and together they
    # hold every word of the file.
    assert all(TEXT[chunk.char_start : chunk.char_end] == chunk.text for chunk in chunks)
    assert all(a.char_end <= b.char_start for a, b in itertools.pairwise(chunks))
    assert " ".join(chunk.text for chunk in chunks).split() == TEXT.split()
    cut = ingestion.text_cut(
        TEXT, markdown=False, max_tokens=100, overlap_tokens=0, organization_id=organization.pk, model=EMBED_MODEL
    )
    assert [(piece.char_start, piece.char_end, piece.tokens) for piece in cut] == [
        (chunk.char_start, chunk.char_end, chunk.tokens) for chunk in chunks
    ]
