"""`make bench-knowledge`: knowledge bases at scale, through the real `/v1` endpoints of a real web process.

Seeds (once; later runs reuse them) a dedicated database with two vector stores of 384-dimension chunks, 10,000 and
100,000, whose vectors are the simulated engine's own embeddings of generated sentences (computed in process with
the engine's function, then written with COPY), in files of 1,000 chunks, each file with an attribute `bucket` (0-9)
so that a filter keeps 10% of the chunks. Then, against one inferia-sim (embeddings and chat) and one web process:

- the HNSW index build time (REINDEX of the 384-dimension index, over 110,000 chunks);
- `POST /v1/vector_stores/{id}/search` latency (p50, p95; the query's embedding included), at 10k and 100k, with
  and without the 10% filter, and how many results came back (must be `max_num_results`);
- recall@10 of the indexed search against an exact scan, with and without the filter;
- ingestion end to end: a document uploaded through `/v1/files`, attached, cut, embedded through the gateway and
  written by a real worker (`inferia start worker`), in chunks per second;
- what retrieval adds to a chat completion (p50 of the same request with and without `retrieval`).

Prints a table and writes JSON under bench-results/.

    .venv/bin/python tests/bench/bench_knowledge.py [--queries 200] [--database inferia_bench_knowledge] [--reseed]
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import random
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "inferia_site.settings")

from tests.bench.bench_console import _pg_admin_url, _psql, database_prepare  # noqa: E402

DIMENSIONS = 384
EMBED_MODEL = "bench-embed"
CHAT_MODEL = "bench-chat"
SIZES = (10_000, 100_000)
FILE_CHUNKS = 1000
INDEX = f"knowledge_chunk_hnsw_{DIMENSIONS}"
TARGETS = {"search_p95_ms": 20.0, "recall_at_10": 0.95, "ingest_chunks_per_s": 200.0, "retrieval_added_p50_ms": 15.0}
_VOCABULARY = """
gpu memory bandwidth replica deployment tenant budget quota latency token stream router engine cluster node kernel
cache batch model prompt answer policy audit usage cost region pool provider scale health vector index search chunk
file store embedding sentence tomato basil sauce tax return income april river mountain forest music guitar piano
violin football tennis league season harbour ship cargo train station ticket weather rain
"""
WORDS = tuple(_VOCABULARY.split())


def sentence(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(12, 30))).capitalize() + "."


def seed(database: str, *, reseed: bool) -> dict[str, str]:
    """The two stores (public ids by size), created once."""
    import django

    database_prepare(database, drop=reseed)
    django.setup()
    from apps.knowledge.models import KnowledgeFile, VectorStore, VectorStoreFile
    from apps.orgs.models import Organization

    stores = {s.name: s.public_id for s in VectorStore.objects.filter(name__startswith="bench-")}
    files = VectorStoreFile.objects.filter(vector_store__name__startswith="bench-").count()
    if all(f"bench-{size}" in stores for size in SIZES) and files == sum(SIZES) // FILE_CHUNKS:
        return {str(size): stores[f"bench-{size}"] for size in SIZES}
    # An older layout (one file a store, attributes on chunks) is seeded again.
    Organization.objects.filter(slug="bench-knowledge").delete()
    from django.db import connection

    from inferia_sim.inference import embedding_vector
    from tests.factories import OrganizationFactory

    organization = OrganizationFactory(name="Bench knowledge", slug="bench-knowledge")
    rng = random.Random(7)
    result = {}
    # Built once after the rows are in: inserting 110,000 rows one by one into the HNSW index takes many times longer.
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexdef FROM pg_indexes WHERE indexname = %s", [INDEX])
        (definition,) = cursor.fetchone()
        cursor.execute(f"DROP INDEX {INDEX}")
    for size in SIZES:
        store = VectorStore.objects.create(
            organization=organization, name=f"bench-{size}", embedding_model=EMBED_MODEL, dimensions=DIMENSIONS
        )
        started, now = time.monotonic(), datetime.now(UTC).isoformat()
        for number in range(size // FILE_CHUNKS):
            # Attributes belong to files (chunks carry a copy), as in OpenAI's API: a tenth of the files per bucket.
            attributes = {"bucket": number % 10}
            file = KnowledgeFile.objects.create(
                organization=organization,
                filename=f"bench-{size}-{number}.txt",
                purpose="assistants",
                bytes=0,
                sha256="",
            )
            store_file = VectorStoreFile.objects.create(
                organization=organization,
                vector_store=store,
                file=file,
                status="completed",
                attributes=attributes,
                chunks_total=FILE_CHUNKS,
                chunks_done=FILE_CHUNKS,
                chunk_max_tokens=800,
                chunk_overlap_tokens=400,
            )
            with (
                connection.cursor() as cursor,
                cursor.copy(
                    "COPY knowledge_chunk (organization_id, vector_store_id, store_file_id, generation, index, text, "
                    "tokens, char_start, char_end, dimensions, embedding, attributes, flagged, flag_categories, "
                    "created_at) FROM STDIN"
                ) as copy,
            ):
                for index in range(FILE_CHUNKS):
                    text = sentence(rng)
                    vector = "[" + ",".join(f"{x:.6f}" for x in embedding_vector(text, DIMENSIONS)) + "]"
                    copy.write_row(
                        (organization.pk, store.pk, store_file.pk, 1, index, text, len(text) // 4, 0, len(text),
                         DIMENSIONS, vector, json.dumps(attributes), False, "{}", now)
                    )  # fmt: skip
        print(f"seeded {size} chunks in {time.monotonic() - started:.0f} s", flush=True)
        result[str(size)] = store.public_id
    with connection.cursor() as cursor:
        cursor.execute("SET maintenance_work_mem = '1GB'")
        cursor.execute(definition)
        cursor.execute("ANALYZE knowledge_chunk")
    return result


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)


def index_build_seconds(database: str) -> float:
    base, _ = _pg_admin_url(database)
    name = _psql(
        base,
        "SELECT indexname FROM pg_indexes WHERE tablename = 'knowledge_chunk' AND indexdef LIKE '%vector(384)%'",
        database,
    )
    started = time.monotonic()
    _psql(base, f'REINDEX INDEX "{name}"', database)
    return round(time.monotonic() - started, 1)


def search_run(client, store_id: str, queries: list[str], filters: dict | None) -> dict:
    latencies, counts = [], []
    for query in queries:
        started = time.perf_counter()
        page = client.vector_stores.search(store_id, query=query, max_num_results=10, filters=filters or None)
        latencies.append((time.perf_counter() - started) * 1000)
        counts.append(len(page.data))
    return {
        "p50_ms": percentile(latencies, 0.50),
        "p95_ms": percentile(latencies, 0.95),
        "min_results": min(counts),
    }


def recall_at_10(store_id: str, queries: list[str], filters: dict | None) -> float:
    """Indexed search (as the endpoint runs it) against an exact scan, on the same query vectors."""
    from django.db import connection, transaction

    from apps.knowledge.models import VectorStore
    from apps.knowledge.search import vector_store_search
    from inferia_sim.inference import embedding_vector

    store = VectorStore.objects.get(public_id=store_id)
    found = 0
    for query in queries:
        vector = list(embedding_vector(query, DIMENSIONS))
        indexed = {hit.chunk_id for hit in vector_store_search(store=store, vector=vector, filters=filters)}
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SET LOCAL enable_indexscan = off")
            exact_sql = (
                "SELECT id FROM knowledge_chunk WHERE vector_store_id = %s AND generation = %s AND dimensions = 384 "
                + ("AND attributes->>'bucket' = %s " if filters else "")
                + "ORDER BY embedding::vector(384) <=> %s::vector(384) LIMIT 10"
            )
            params = [store.pk, store.generation, *([str(filters["value"])] if filters else []), str(vector)]
            cursor.execute(exact_sql, params)
            exact = {row[0] for row in cursor.fetchall()}
        found += len(indexed & exact)
    return round(found / (10 * len(queries)), 4)


def ingestion_rate(client, web_env: dict[str, str]) -> dict:
    from tests.kit.processes import inferia_start
    from tests.kit.waiting import eventually

    worker = inferia_start(["start", "worker"], env=web_env)
    try:
        eventually(lambda: any(" ready." in line for line in worker.lines), timeout=120, what="the worker")
        rng = random.Random(11)
        text = "\n\n".join(" ".join(sentence(rng) for _ in range(4)) for _ in range(1500))
        uploaded = client.files.create(file=("bench.md", io.BytesIO(text.encode())), purpose="assistants")
        store = client.vector_stores.create(
            name=f"ingest-{uuid.uuid4().hex[:6]}",
            chunking_strategy={"type": "static", "static": {"max_chunk_size_tokens": 100, "chunk_overlap_tokens": 0}},
        )
        started = time.monotonic()
        attached = client.vector_stores.files.create_and_poll(
            vector_store_id=store.id, file_id=uploaded.id, poll_interval_ms=100
        )
        seconds = time.monotonic() - started
        from apps.knowledge.models import VectorStoreFile

        chunks = VectorStoreFile.objects.get(vector_store__public_id=store.id).chunks_total or 0
        # Its chunks would otherwise stay in the HNSW index that the next run's searches go through.
        client.vector_stores.delete(store.id)
        client.files.delete(uploaded.id)
        return {"status": attached.status, "chunks": chunks, "seconds": round(seconds, 2),
                "chunks_per_s": round(chunks / seconds, 1)}  # fmt: skip
    finally:
        worker.stop()


def retrieval_overhead(client, store_id: str, runs: int) -> dict:
    messages = [{"role": "user", "content": "How much memory bandwidth does a gpu replica have?"}]
    timings: dict[str, list[float]] = {"plain": [], "retrieval": []}
    for _ in range(runs):
        for kind in ("plain", "retrieval"):
            extra = {"retrieval": {"vector_store_ids": [store_id], "max_num_results": 5}} if kind == "retrieval" else {}
            started = time.perf_counter()
            client.chat.completions.create(model=CHAT_MODEL, messages=messages, max_tokens=1, extra_body=extra)
            timings[kind].append((time.perf_counter() - started) * 1000)
    plain, augmented = statistics.median(timings["plain"]), statistics.median(timings["retrieval"])
    return {"plain_p50_ms": round(plain, 2), "retrieval_p50_ms": round(augmented, 2),
            "added_p50_ms": round(augmented - plain, 2)}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Knowledge-base benchmark.")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--database", default="inferia_bench_knowledge")
    parser.add_argument("--reseed", action="store_true")
    args = parser.parse_args(argv)

    _, url = _pg_admin_url(args.database)
    os.environ["DATABASE_URL"] = url
    stores = seed(args.database, reseed=args.reseed)
    # The HTTP client logs each request at INFO under Django's logging: thousands of lines around the table.
    for name in ("httpx", "httpx2"):
        logging.getLogger(name).setLevel(logging.WARNING)

    import openai

    from apps.compute.models import ModelDeployment
    from apps.keys.services import api_key_create
    from apps.knowledge.models import VectorStore
    from apps.orgs.models import Organization
    from tests.factories import ComputePoolFactory, deployment_serving
    from tests.kit.processes import sim_start, web_start

    results: dict = {"index_build_s": index_build_seconds(args.database)}
    sim = sim_start("--embedding-dimensions", str(DIMENSIONS), models=(EMBED_MODEL, CHAT_MODEL))
    files = REPO / "bench-results" / "knowledge-files"
    web_env = {
        **os.environ,
        "DATABASE_URL": url,
        "INFERIA_UPSTREAM_ALLOW_PRIVATE": "1",
        "INFERIA_KNOWLEDGE_EMBEDDING_MODEL": EMBED_MODEL,
        "INFERIA_KNOWLEDGE_DIR": str(files),
    }
    web = web_start(url, extra_env=web_env)
    try:
        organization = Organization.objects.get(slug="bench-knowledge")
        tag = uuid.uuid4().hex[:6]
        # Each run serves the models from its own engine: the last run's deployments go (a bench database only).
        ModelDeployment.objects.filter(organization=organization).delete()
        # Factory sequences start again in every run: this run's provider and pool get names of their own.
        pool = ComputePoolFactory(organization=organization, provider__name=f"bench-{tag}", name=f"bench-{tag}")
        deployment_serving(organization, f"embed-{tag}", [sim.url], served_model_name=EMBED_MODEL, pool=pool)
        deployment_serving(organization, f"chat-{tag}", [sim.url], served_model_name=CHAT_MODEL, pool=pool)
        secret = api_key_create(organization=organization, name="bench", scopes=["inference", "manage"]).secret
        client = openai.OpenAI(base_url=f"{web.url}/v1", api_key=secret, max_retries=0, timeout=60)
        time.sleep(1.0)  # the catalog reaches the web process through Redis
        rng = random.Random(3)
        queries = [" ".join(sentence(rng).split()[:8]) for _ in range(args.queries)]
        bucket = {"type": "eq", "key": "bucket", "value": 3}
        for size in SIZES:
            store_id = stores[str(size)]
            client.vector_stores.search(store_id, query="warm up")
            results[f"search_{size}"] = search_run(client, store_id, queries, None)
            results[f"search_{size}_filtered"] = search_run(client, store_id, queries, bucket)
        big = stores[str(SIZES[-1])]
        results["recall_at_10"] = recall_at_10(big, queries[:100], None)
        results["recall_at_10_filtered"] = recall_at_10(big, queries[:100], bucket)
        results["ingestion"] = ingestion_rate(client, web_env)
        results["retrieval"] = retrieval_overhead(client, big, runs=max(20, args.queries // 4))
        results["chunks"] = {
            size: VectorStore.objects.get(public_id=stores[str(size)]).chunks.count() for size in SIZES
        }
    finally:
        web.stop()
        sim.stop()

    print(json.dumps(results, indent=2))
    big = results[f"search_{SIZES[-1]}"]
    print(
        f"\nsearch p95 at 100k: {big['p95_ms']} ms (filtered {results[f'search_{SIZES[-1]}_filtered']['p95_ms']} ms; "
        f"target {TARGETS['search_p95_ms']}); at 10k: {results[f'search_{SIZES[0]}']['p95_ms']} ms\n"
        f"recall@10: {results['recall_at_10']} (filtered {results['recall_at_10_filtered']}; target "
        f"{TARGETS['recall_at_10']})\ningestion: {results['ingestion']['chunks_per_s']} chunks/s (target "
        f"{TARGETS['ingest_chunks_per_s']})\nretrieval adds {results['retrieval']['added_p50_ms']} ms at p50 "
        f"(target {TARGETS['retrieval_added_p50_ms']})\n"
        f"HNSW build over {sum(SIZES)} chunks: {results['index_build_s']} s"
    )
    out = REPO / "bench-results" / f"knowledge-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
