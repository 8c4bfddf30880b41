"""Knowledge quotas from the organisation's policies: bytes of uploaded files (`knowledge_bytes_max`) and chunks in
its vector stores (`knowledge_chunks_max`). An upload over the quota is refused and leaves no row and no bytes; a
file whose chunks do not fit fails ingestion before writing past the quota; concurrent writers are counted one at
a time; one organisation's files never count against another's."""

from __future__ import annotations

import io
import threading
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection

from apps.audit.models import AuditEvent
from apps.keys.services import api_key_create
from apps.knowledge import ingestion, services
from apps.knowledge.models import Chunk, KnowledgeFile, VectorStoreFile
from apps.orgs.models import Team
from apps.policies.selectors import knowledge_quota_for
from apps.policies.services import policy_create, policy_update
from inferia_runtime.errors import DomainRefusal
from tests.factories import OrganizationFactory
from tests.kit.waiting import eventually
from tests.knowledge.conftest import EMBED_MODEL

SENTENCES = "\n\n".join(f"Paragraph {n} says something about topic number {n} at some length." for n in range(30))


def _upload(organization, content: bytes, *, actor: Any = None, filename: str = "notes.txt") -> KnowledgeFile:
    return services.knowledge_file_create(
        organization=organization, handle=io.BytesIO(content), filename=filename, purpose="assistants", actor=actor
    )


def _stored_files(folder) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file())


def _store_with(organization, *files: KnowledgeFile):
    return services.vector_store_create(
        organization=organization,
        embedding_model=EMBED_MODEL,
        dimensions=384,
        actor=None,
        chunk_max_tokens=100,
        chunk_overlap_tokens=0,
        file_ids=[file.public_id for file in files],
    )


def _in_thread(work: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    """Run `work` on a database connection of its own; its value or exception lands in the returned dict."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = work()
        except BaseException as error:
            outcome["error"] = error
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


def _waiting_on_advisory_lock() -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock' AND wait_event = 'advisory'"
        )
        return bool(cursor.fetchone()[0])


# --- The policy authority -------------------------------------------------------------------------------------------


def test_the_tightest_level_wins_and_a_disabled_policy_counts_for_nothing(organization):
    team = Team.objects.create(organization=organization, name="Research", slug="research")
    team_key = api_key_create(organization=organization, team=team, name="team key", scopes=["inference"]).key
    org_key = api_key_create(organization=organization, name="org key", scopes=["inference"]).key
    policy_create(actor=None, organization=organization, knowledge_bytes_max=10_000, knowledge_chunks_max=500)
    policy_create(actor=None, organization=organization, team=team, knowledge_bytes_max=4_000)
    key_policy = policy_create(actor=None, organization=organization, api_key=team_key, knowledge_chunks_max=50)

    team_quota = knowledge_quota_for(organization_id=organization.pk, key_id=team_key.pk)
    assert (team_quota.bytes_max, team_quota.chunks_max) == (4_000, 50)
    org_quota = knowledge_quota_for(organization_id=organization.pk, key_id=org_key.pk)
    assert (org_quota.bytes_max, org_quota.chunks_max) == (10_000, 500)
    assert knowledge_quota_for(organization_id=organization.pk) == org_quota  # a person uploading: the org's

    policy_update(policy=key_policy, actor=None, changes={"enabled": False})
    assert knowledge_quota_for(organization_id=organization.pk, key_id=team_key.pk).chunks_max == 500


def test_a_key_of_another_organisation_brings_no_policy_of_its_own(organization):
    other = OrganizationFactory(name="Globex", slug="globex")
    foreign_key = api_key_create(organization=other, name="globex key", scopes=["inference"]).key
    policy_create(actor=None, organization=other, api_key=foreign_key, knowledge_bytes_max=1)
    policy_create(actor=None, organization=organization, knowledge_bytes_max=9_000)

    assert knowledge_quota_for(organization_id=organization.pk, key_id=foreign_key.pk).bytes_max == 9_000


def test_quotas_are_validated_and_audited_like_every_limit(organization):
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError):
        policy_create(actor=None, organization=organization, knowledge_bytes_max=-1)
    policy = policy_create(actor=None, organization=organization, knowledge_bytes_max=1_000)
    policy_update(policy=policy, actor=None, changes={"knowledge_bytes_max": 2_000, "knowledge_chunks_max": 30})

    create, update = AuditEvent.objects.filter(target_id=str(policy.pk)).order_by("seq")
    assert create.changes["knowledge_bytes_max"] == {"before": None, "after": 1_000}
    assert update.changes == {
        "knowledge_bytes_max": {"before": 1_000, "after": 2_000},
        "knowledge_chunks_max": {"before": None, "after": 30},
    }


# --- Uploads --------------------------------------------------------------------------------------------------------


def test_an_upload_over_the_quota_is_refused_and_leaves_no_row_and_no_bytes(organization, knowledge_files):
    policy_create(actor=None, organization=organization, knowledge_bytes_max=1_000)
    first = _upload(organization, b"a" * 600)
    exactly = _upload(organization, b"b" * 400)  # up to the quota, not past it
    before = _stored_files(knowledge_files)

    with pytest.raises(DomainRefusal) as refused:
        _upload(organization, b"c")

    assert "knowledge_bytes_max" in str(refused.value)
    assert "1000 bytes are stored" in str(refused.value)
    assert set(KnowledgeFile.objects.filter(organization=organization)) == {first, exactly}
    assert _stored_files(knowledge_files) == before
    assert not AuditEvent.objects.filter(action="knowledge.file.create", changes__bytes=1).exists()


def test_a_keys_team_policy_tightens_the_organisations_quota_for_its_uploads(organization):
    team = Team.objects.create(organization=organization, name="Research", slug="research")
    team_key = api_key_create(organization=organization, team=team, name="team key", scopes=["inference"]).key
    policy_create(actor=None, organization=organization, knowledge_bytes_max=1_000)
    policy_create(actor=None, organization=organization, team=team, knowledge_bytes_max=300)
    _upload(organization, b"x" * 200)

    with pytest.raises(DomainRefusal):
        _upload(organization, b"y" * 200, actor=team_key)
    uploaded = _upload(organization, b"y" * 200)  # a person: the organisation's quota only

    assert uploaded.bytes == 200


def test_one_organisations_files_do_not_count_against_anothers(organization):
    other = OrganizationFactory(name="Globex", slug="globex")
    policy_create(actor=None, organization=organization, knowledge_bytes_max=500)
    policy_create(actor=None, organization=other, knowledge_bytes_max=500)
    _upload(other, b"g" * 500)  # Globex is full

    mine = _upload(organization, b"a" * 500)  # Acme is not

    assert mine.bytes == 500
    with pytest.raises(DomainRefusal):
        _upload(other, b"g")


def test_concurrent_uploads_that_fit_one_at_a_time_cannot_both_pass(organization, knowledge_files):
    """The second upload waits for the first's transaction and then counts its bytes, however they interleave."""
    from django.db import transaction

    policy_create(actor=None, organization=organization, knowledge_bytes_max=1_000)
    first_written, release = threading.Event(), threading.Event()

    def first_upload() -> KnowledgeFile:
        with transaction.atomic():  # holds the organisation's lock until it commits
            file = _upload(organization, b"a" * 700, filename="first.txt")
            first_written.set()
            assert release.wait(30)
        return file

    first, first_outcome = _in_thread(first_upload)
    assert first_written.wait(30)
    second, second_outcome = _in_thread(lambda: _upload(organization, b"b" * 700, filename="second.txt"))
    eventually(_waiting_on_advisory_lock, timeout=30, what="the second upload waiting for the first's lock")
    release.set()
    first.join(30)
    second.join(30)

    assert "error" not in first_outcome, first_outcome
    assert isinstance(second_outcome.get("error"), DomainRefusal), second_outcome
    assert list(KnowledgeFile.objects.values_list("filename", flat=True)) == ["first.txt"]
    assert len(_stored_files(knowledge_files)) == 1


# --- Ingestion ------------------------------------------------------------------------------------------------------


def _chunks_of(organization) -> int:
    return Chunk.objects.filter(organization=organization).count()


def _pieces_of(organization, text: str) -> int:
    """How many chunks ingestion cuts `text` into (with the organisation's engine counting the tokens)."""
    cut = ingestion.text_cut(
        text, markdown=False, max_tokens=100, overlap_tokens=0, organization_id=organization.pk, model=EMBED_MODEL
    )
    return len(cut)


def test_a_file_whose_chunks_do_not_fit_fails_before_writing_any(organization):
    small, big = _upload(organization, b"One short sentence."), _upload(organization, SENTENCES.encode())
    store = _store_with(organization, small, big)
    small_sf, big_sf = (VectorStoreFile.objects.get(vector_store=store, file=file) for file in (small, big))
    assert ingestion.store_file_claim(small_sf.pk)
    ingestion.store_file_ingest_run(small_sf.pk)
    policy_create(actor=None, organization=organization, knowledge_chunks_max=3)

    assert ingestion.store_file_claim(big_sf.pk)
    ingestion.store_file_ingest_run(big_sf.pk)

    big_sf.refresh_from_db()
    assert big_sf.status == "failed"
    assert big_sf.last_error_code == "rate_limit_exceeded"
    assert "chunk quota is reached" in big_sf.last_error_message
    assert "knowledge_chunks_max, 3 chunks" in big_sf.last_error_message
    assert big_sf.chunks_total > 3
    assert Chunk.objects.filter(store_file=big_sf).count() == 0
    assert _chunks_of(organization) == 1


def test_concurrent_files_are_counted_one_at_a_time_and_never_pass_the_quota(organization):
    """File B is embedded and waits to write while file A's ingestion holds the lock and fills the quota; B then
    counts A's chunks and fails, writing none."""
    from django.db import transaction

    a_file, b_file = (
        _upload(organization, SENTENCES.encode(), filename="a.txt"),
        _upload(organization, SENTENCES.encode(), filename="b.txt"),
    )
    store = _store_with(organization, a_file, b_file)
    a_sf, b_sf = (VectorStoreFile.objects.get(vector_store=store, file=file) for file in (a_file, b_file))
    pieces = _pieces_of(organization, SENTENCES)
    assert 1 < pieces <= ingestion.EMBED_BATCH
    policy_create(actor=None, organization=organization, knowledge_chunks_max=2 * pieces - 1)  # one file fits
    a_locked, a_go = threading.Event(), threading.Event()

    def a_ingest() -> None:
        with transaction.atomic():
            services.knowledge_quota_lock(organization_id=organization.pk, chunks=True)
            a_locked.set()
            assert a_go.wait(60)
            assert ingestion.store_file_claim(a_sf.pk)
            ingestion.store_file_ingest_run(a_sf.pk)

    def b_ingest() -> None:
        assert ingestion.store_file_claim(b_sf.pk)
        ingestion.store_file_ingest_run(b_sf.pk)  # passes the first check (nothing stored), blocks on writing

    a, a_outcome = _in_thread(a_ingest)
    assert a_locked.wait(30)
    b, b_outcome = _in_thread(b_ingest)
    eventually(_waiting_on_advisory_lock, timeout=60, what="file B waiting to write its chunks")
    a_go.set()
    a.join(60)
    b.join(60)

    assert "error" not in a_outcome, a_outcome
    assert "error" not in b_outcome, b_outcome
    a_sf.refresh_from_db()
    b_sf.refresh_from_db()
    assert a_sf.status == "completed", a_sf.last_error_message
    assert b_sf.status == "failed"
    assert "chunk quota is reached" in b_sf.last_error_message
    assert Chunk.objects.filter(store_file=b_sf).count() == 0
    assert _chunks_of(organization) == pieces <= 2 * pieces - 1


def test_one_organisations_chunks_do_not_count_against_anothers(organization, engine):
    from tests.factories import deployment_serving

    other = OrganizationFactory(name="Globex", slug="globex")
    deployment_serving(other, EMBED_MODEL, [engine.url])
    pieces = _pieces_of(organization, SENTENCES)
    for org in (organization, other):
        policy_create(actor=None, organization=org, knowledge_chunks_max=pieces)  # room for one file each
    theirs = VectorStoreFile.objects.get(vector_store=_store_with(other, _upload(other, SENTENCES.encode())))
    mine = VectorStoreFile.objects.get(
        vector_store=_store_with(organization, _upload(organization, SENTENCES.encode()))
    )

    for store_file in (theirs, mine):
        assert ingestion.store_file_claim(store_file.pk)
        ingestion.store_file_ingest_run(store_file.pk)
        store_file.refresh_from_db()
        assert store_file.status == "completed", store_file.last_error_message

    assert _chunks_of(organization) == _chunks_of(other) == pieces
