"""Knowledge files in an S3-compatible bucket (moto's server on loopback, a real HTTP S3 API): the settings an operator
gives in the environment, an upload through the file service under our own name, ingestion reading it back, the
content endpoint streaming it, a delete removing the object, and the secret key never in a response or a log line."""

from __future__ import annotations

import hashlib
import io
import logging
import sys
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from django.core.files.storage import storages
from django.test import RequestFactory

from apps.knowledge import ingestion, openai_api, services, storage
from apps.knowledge.models import KnowledgeFile, VectorStoreFile
from inferia_runtime.env import ConfigError
from inferia_runtime.errors import DomainRefusal
from inferia_runtime.knowledge_storage import knowledge_storage_config
from tests.factories import api_key_issue
from tests.kit.processes import server_start

ACCESS_KEY = "AKIDKNOWLEDGETEST"
SECRET_KEY = "kn0wledge-s3cret-never-shown"
BUCKET = "inferia-knowledge"
REGION = "eu-west-1"
S3_ENV = (
    "INFERIA_KNOWLEDGE_S3_BUCKET",
    "INFERIA_KNOWLEDGE_S3_ENDPOINT_URL",
    "INFERIA_KNOWLEDGE_S3_REGION",
    "INFERIA_KNOWLEDGE_S3_ACCESS_KEY_ID",
    "INFERIA_KNOWLEDGE_S3_SECRET_ACCESS_KEY",
    "INFERIA_KNOWLEDGE_S3_PREFIX",
    "INFERIA_KNOWLEDGE_S3_ADDRESSING_STYLE",
)


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server on a reserved loopback port, for this module's tests: a process of its own, so that what it
    allocates to serve an object never counts as ours when a test measures a reader's memory."""
    moto_server = str(Path(sys.executable).with_name("moto_server"))
    with server_start([moto_server, "-H", "127.0.0.1", "-p", "{port}"], ready_path="/moto-api/", name="moto") as s3:
        yield s3.url


@pytest.fixture
def s3_env(monkeypatch, s3_endpoint):
    for name in S3_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("INFERIA_KNOWLEDGE_S3_BUCKET", BUCKET)
    monkeypatch.setenv("INFERIA_KNOWLEDGE_S3_ENDPOINT_URL", s3_endpoint)
    monkeypatch.setenv("INFERIA_KNOWLEDGE_S3_REGION", REGION)
    monkeypatch.setenv("INFERIA_KNOWLEDGE_S3_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("INFERIA_KNOWLEDGE_S3_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("INFERIA_KNOWLEDGE_S3_PREFIX", "/tenant-a/")
    return monkeypatch


@pytest.fixture
def bucket(s3_endpoint):
    """A fresh, empty bucket on the server (boto3, as an operator's tooling would see it)."""
    client = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
    )
    client.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    yield client
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
        for item in page.get("Contents", []):
            client.delete_object(Bucket=BUCKET, Key=item["Key"])
    client.delete_bucket(Bucket=BUCKET)


@pytest.fixture
def s3_storage(s3_env, bucket, settings, tmp_path):
    """The `knowledge` storage built from the environment, as settings.py builds it (assigning STORAGES resets
    Django's cache of storage backends through the setting_changed signal)."""
    settings.STORAGES = {**settings.STORAGES, "knowledge": knowledge_storage_config(default_location=tmp_path)}
    assert type(storages["knowledge"]).__name__ == "S3Storage"
    return bucket


def _keys(client) -> list[str]:
    return [item["Key"] for item in client.list_objects_v2(Bucket=BUCKET).get("Contents", [])]


def _upload(org, actor, content: bytes, name: str = "notes.txt") -> KnowledgeFile:
    return services.knowledge_file_create(
        organization=org, handle=io.BytesIO(content), filename=name, purpose="assistants", actor=actor
    )


# --- Settings ------------------------------------------------------------------------------------------------------


def test_without_a_bucket_files_stay_in_the_folder_under_the_data_directory(monkeypatch, tmp_path):
    for name in S3_ENV:
        monkeypatch.delenv(name, raising=False)
    config = knowledge_storage_config(default_location=tmp_path)
    assert config["BACKEND"] == "django.core.files.storage.FileSystemStorage"
    assert config["OPTIONS"]["location"] == str(tmp_path)


def test_a_bucket_in_the_environment_selects_the_s3_backend_with_its_options(s3_env, s3_endpoint, tmp_path):
    config = knowledge_storage_config(default_location=tmp_path)
    assert config["BACKEND"] == "storages.backends.s3.S3Storage"
    options = config["OPTIONS"]
    assert options["bucket_name"] == BUCKET
    assert options["endpoint_url"] == s3_endpoint
    assert options["region_name"] == REGION
    assert options["access_key"] == ACCESS_KEY
    assert options["secret_key"] == SECRET_KEY
    assert options["location"] == "tenant-a"  # slashes trimmed: the backend joins it to our names itself
    # Our names are unique (file ids): no existence check before each upload, and never a renamed object.
    assert options["file_overwrite"] is True
    # A read spools to disk past this, rather than holding a whole large file in memory.
    assert 0 < options["max_memory_size"] <= 64 * 1024 * 1024


def test_a_secret_without_its_key_id_is_refused_without_echoing_it(s3_env):
    s3_env.delenv("INFERIA_KNOWLEDGE_S3_ACCESS_KEY_ID")
    with pytest.raises(ConfigError, match="INFERIA_KNOWLEDGE_S3_ACCESS_KEY_ID") as refused:
        knowledge_storage_config(default_location="/tmp/unused")
    assert SECRET_KEY not in str(refused.value)


def test_an_unknown_addressing_style_is_refused(s3_env):
    s3_env.setenv("INFERIA_KNOWLEDGE_S3_ADDRESSING_STYLE", "sideways")
    with pytest.raises(ConfigError, match="ADDRESSING_STYLE"):
        knowledge_storage_config(default_location="/tmp/unused")


def test_without_keys_the_backend_uses_the_default_credential_chain(s3_env, tmp_path):
    s3_env.delenv("INFERIA_KNOWLEDGE_S3_ACCESS_KEY_ID")
    s3_env.delenv("INFERIA_KNOWLEDGE_S3_SECRET_ACCESS_KEY")
    options = knowledge_storage_config(default_location=tmp_path)["OPTIONS"]
    assert "access_key" not in options
    assert "secret_key" not in options


# --- Files in the bucket -------------------------------------------------------------------------------------------


def test_an_upload_lands_in_the_bucket_under_our_name_with_its_bytes(org, owner, s3_storage):
    content = b"GPUs have memory bandwidth.\n" * 1000
    file = _upload(org, owner, content, name="../../etc/passwd")

    assert file.storage_name == storage.storage_name_for(organization_id=org.pk, public_id=file.public_id)
    assert KnowledgeFile.objects.get(pk=file.pk).storage_name == file.storage_name
    assert _keys(s3_storage) == [f"tenant-a/{file.storage_name}"]
    stored = s3_storage.get_object(Bucket=BUCKET, Key=f"tenant-a/{file.storage_name}")["Body"].read()
    assert stored == content
    assert file.bytes == len(content)


def test_a_second_upload_never_renames_or_replaces_the_first(org, owner, s3_storage):
    first = _upload(org, owner, b"first")
    second = _upload(org, owner, b"second")
    assert first.storage_name != second.storage_name
    assert sorted(_keys(s3_storage)) == sorted(f"tenant-a/{f.storage_name}" for f in (first, second))
    with storage.storage_open(first.storage_name) as handle:
        assert handle.read() == b"first"


def test_ingestion_reads_the_file_back_from_the_bucket(org, owner, s3_storage):
    file = _upload(org, owner, b"The tomato sauce simmers for twenty minutes.", name="recipe.txt")
    store = services.vector_store_create(
        organization=org, embedding_model="kb-embed", dimensions=8, actor=owner, file_ids=[file.public_id]
    )
    store_file = VectorStoreFile.objects.select_related("file").get(vector_store=store, file=file)
    text, markdown = ingestion.text_read(store_file)
    assert text.strip() == "The tomato sauce simmers for twenty minutes."
    assert markdown is False


def test_the_content_endpoint_streams_the_object(org, owner, s3_storage):
    content = bytes(range(256)) * 40_000  # ~10 MB: several blocks
    file = _upload(org, owner, content, name="weights.bin")  # past boto3's 8 MB threshold: a multipart upload
    # Counted and hashed as the backend read the upload, once, in order.
    assert (file.bytes, file.sha256) == (len(content), hashlib.sha256(content).hexdigest())
    request = RequestFactory().get(f"/v1/files/{file.public_id}/content")
    request.auth = api_key_issue(organization=org, scopes=("read",)).key

    digest, sent, blocks = hashlib.sha256(), 0, 0

    tracemalloc.start()
    try:
        response = openai_api.file_content(request, file.public_id)
        for block in response.streaming_content:
            digest.update(block)
            sent, blocks = sent + len(block), blocks + 1
        response.close()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert response.streaming
    assert int(response["Content-Length"]) == len(content)
    assert 'filename="weights.bin"' in response["Content-Disposition"]
    assert (sent, digest.hexdigest()) == (len(content), hashlib.sha256(content).hexdigest())
    assert blocks > 1
    # Sent as it arrives from the bucket: never a whole copy (nor the backend's 8 MB spool) in memory.
    assert peak < 2 * 1024 * 1024, peak


def test_a_missing_object_is_a_file_not_found_for_the_reader(org, owner, s3_storage):
    file = _upload(org, owner, b"soon gone")
    s3_storage.delete_object(Bucket=BUCKET, Key=f"tenant-a/{file.storage_name}")
    with pytest.raises(FileNotFoundError):
        storage.storage_stream(file.storage_name)


def test_deleting_the_file_removes_its_object(org, owner, s3_storage, django_capture_on_commit_callbacks):
    file = _upload(org, owner, b"to be deleted")
    kept = _upload(org, owner, b"kept")
    with django_capture_on_commit_callbacks(execute=True):
        services.knowledge_file_delete(file=file, actor=owner)
    assert _keys(s3_storage) == [f"tenant-a/{kept.storage_name}"]


def test_a_refused_upload_leaves_no_object(org, owner, s3_storage, settings):
    settings.INFERIA_KNOWLEDGE_FILE_MAX_BYTES = 10
    with pytest.raises(DomainRefusal, match="larger than"):
        _upload(org, owner, b"x" * 11)
    assert _keys(s3_storage) == []
    assert not KnowledgeFile.objects.exists()


def test_the_secret_key_appears_in_no_response_or_log(org, owner, s3_storage, caplog):
    caplog.set_level(logging.DEBUG)
    key = api_key_issue(organization=org, scopes=("read",)).key
    file = _upload(org, owner, b"secret-free")
    request = RequestFactory().get(f"/v1/files/{file.public_id}/content")
    request.auth = key
    response = openai_api.file_content(request, file.public_id)
    body = b"".join(response.streaming_content)
    response.close()
    shape = openai_api.file_shape(file)
    # A storage failure (the bucket gone) surfaces as an error whose text must not carry the secret either.
    s3_storage.delete_object(Bucket=BUCKET, Key=f"tenant-a/{file.storage_name}")
    s3_storage.delete_bucket(Bucket=BUCKET)
    with pytest.raises(Exception) as failed:
        _upload(org, owner, b"no bucket")
    s3_storage.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})

    assert body == b"secret-free"
    assert SECRET_KEY not in repr(shape)
    assert SECRET_KEY not in str(failed.value)
    assert SECRET_KEY.encode() not in b"".join(str(value).encode() for value in response.items())
    assert SECRET_KEY not in caplog.text
    assert caplog.records  # botocore logged its requests at DEBUG: the check above read something
