"""/v1's list of vector stores counts every store's files by status in the list's own query: the number of queries
does not grow with the number of stores."""

from __future__ import annotations

import io

from django.db import connection
from django.test import RequestFactory
from django.test.utils import CaptureQueriesContext

from apps.knowledge import openai_api, services
from apps.knowledge.models import VectorStoreFile
from tests.factories import api_key_issue
from tests.knowledge.conftest import EMBED_MODEL


def _store_with_files(organization, n: int, statuses: tuple[str, ...]):
    files = [
        services.knowledge_file_create(
            organization=organization,
            handle=io.BytesIO(b"x"),
            filename=f"{n}-{i}.txt",
            purpose="assistants",
            actor=None,
        )
        for i in range(len(statuses))
    ]
    store = services.vector_store_create(
        organization=organization, embedding_model=EMBED_MODEL, dimensions=8, actor=None, name=f"store {n}",
        file_ids=[file.public_id for file in files],
    )  # fmt: skip
    for store_file, status in zip(
        VectorStoreFile.objects.filter(vector_store=store).order_by("id"), statuses, strict=True
    ):
        VectorStoreFile.objects.filter(pk=store_file.pk).update(status=status)
    return store


def _listed(key) -> tuple[dict, int]:
    request = RequestFactory().get("/v1/vector_stores")
    request.auth = key
    with CaptureQueriesContext(connection) as captured:
        page = openai_api.vector_store_list(request, openai_api.ListParams(limit=100))
    return page, len(captured)


def test_the_store_list_takes_as_many_queries_for_many_stores_as_for_one(organization):
    key = api_key_issue(organization=organization, scopes=("read",)).key
    _store_with_files(organization, 0, ("completed", "in_progress"))
    one, queries_for_one = _listed(key)
    for n in range(1, 6):
        _store_with_files(organization, n, ("completed", "failed", "completed"))
    six, queries_for_six = _listed(key)

    assert len(one["data"]) == 1
    assert len(six["data"]) == 6
    assert queries_for_six == queries_for_one
    counts = {row["name"]: (row["file_counts"], row["status"]) for row in six["data"]}
    assert counts["store 0"] == (
        {"in_progress": 1, "completed": 1, "failed": 0, "cancelled": 0, "total": 2},
        "in_progress",
    )
    assert counts["store 3"] == (
        {"in_progress": 0, "completed": 2, "failed": 1, "cancelled": 0, "total": 3},
        "completed",
    )
