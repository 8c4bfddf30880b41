"""Knowledge bases: an organisation's files, the vector stores they are attached to, and the chunks (text and
vector) that searches and retrieval-augmented answers read.

The shapes follow OpenAI's files and vector-store API: a `KnowledgeFile` is an uploaded file (`file-...`), a
`VectorStore` (`vs_...`) a searchable collection with one embedding model, a `VectorStoreFile` one file attached to
one store with its ingestion status, and a `VectorStoreFileBatch` (`vsfb_...`) files attached together. Ingestion
(apps.knowledge.ingestion) cuts each attached file into `Chunk` rows with their embeddings.

Vectors live in one table whatever their dimensions: an untyped pgvector column, with an HNSW index (cosine) per
supported dimension count on the expression `embedding::vector(N)`, partial on `dimensions = N` (migration 0001).
"""

from __future__ import annotations

import secrets

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.utils import timezone
from pgvector.django import VectorField

from inferia_runtime.tenancy import TenantManager, TenantPath

# Dimension counts that get an HNSW index (pgvector 0.6 indexes at most 2,000). A store of another size is still
# searched, exactly (a sequential scan of its own chunks).
INDEXED_DIMENSIONS = (256, 384, 512, 768, 1024, 1536)
MAX_DIMENSIONS = 2000

FILENAME_MAX = 255
NAME_MAX = 256
METADATA_KEYS_MAX = 16  # OpenAI's limits on `metadata` and `attributes`
METADATA_KEY_MAX = 64
METADATA_VALUE_MAX = 512


def public_id(prefix: str) -> str:
    """A new public identifier such as `vs_6f1c...` (24 hex digits: 96 random bits), never a client's value."""
    return f"{prefix}{secrets.token_hex(12)}"


def _file_id() -> str:
    return public_id("file-")


def _store_id() -> str:
    return public_id("vs_")


def _batch_id() -> str:
    return public_id("vsfb_")


class KnowledgeFile(models.Model):
    """A file an organisation uploaded (`/v1/files`): its bytes live in the knowledge storage (a folder under the
    data directory, or an S3-compatible bucket), under a name of our own."""

    tenant_path = TenantPath(org="organization_id", inference_views=True)

    class Purpose(models.TextChoices):
        ASSISTANTS = "assistants", "assistants"
        USER_DATA = "user_data", "user_data"
        BATCH = "batch", "batch"
        FINE_TUNE = "fine-tune", "fine-tune"
        VISION = "vision", "vision"
        EVALS = "evals", "evals"

    public_id = models.CharField(max_length=40, unique=True, default=_file_id, editable=False)
    organization = models.ForeignKey("orgs.Organization", on_delete=models.CASCADE, related_name="knowledge_files")
    filename = models.CharField(max_length=FILENAME_MAX)
    purpose = models.CharField(max_length=16, choices=Purpose.choices)
    bytes = models.BigIntegerField()
    content_type = models.CharField(max_length=100, blank=True)
    sha256 = models.CharField(max_length=64)
    storage_name = models.CharField(max_length=500, help_text="Where the bytes are, in the knowledge storage.")
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    expires_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_by_key = models.ForeignKey(
        "keys.ApiKey", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    objects = TenantManager()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["organization", "-created_at"], name="knowledge_file_org_created")]

    def __str__(self) -> str:
        return f"{self.filename} ({self.public_id})"


class VectorStore(models.Model):
    """A searchable collection of files with one embedding model: what `POST /v1/vector_stores/{id}/search` and
    retrieval in a chat completion read. `generation` numbers its vectors: a change of embedding model re-embeds
    into the next generation while searches keep reading the current one, and switches when the new one is done."""

    tenant_path = TenantPath(org="organization_id", inference_views=True)

    class Status(models.TextChoices):
        IN_PROGRESS = "in_progress", "in progress"
        COMPLETED = "completed", "completed"
        EXPIRED = "expired", "expired"

    public_id = models.CharField(max_length=40, unique=True, default=_store_id, editable=False)
    organization = models.ForeignKey("orgs.Organization", on_delete=models.CASCADE, related_name="vector_stores")
    name = models.CharField(max_length=NAME_MAX, blank=True)
    description = models.CharField(max_length=512, blank=True)
    embedding_model = models.CharField(
        max_length=200, help_text="The served model name of an embedding deployment the organisation may use."
    )
    dimensions = models.PositiveIntegerField(help_text="The embedding model's vector size, found at creation.")
    chunk_max_tokens = models.PositiveIntegerField(default=800)
    chunk_overlap_tokens = models.PositiveIntegerField(default=400)
    metadata = models.JSONField(default=dict, blank=True)
    generation = models.PositiveIntegerField(default=1, help_text="The generation of vectors searches read.")
    reembed_model = models.CharField(
        max_length=200, blank=True, help_text="While re-embedding: the new model, whose vectors are not complete yet."
    )
    reembed_dimensions = models.PositiveIntegerField(null=True, blank=True)
    reembed_claimed_until = models.DateTimeField(
        null=True, blank=True, help_text="The re-embedding worker's lease: past it, another worker may take over."
    )
    reembed_error = models.CharField(
        max_length=1000, blank=True, help_text="Why the last change of embedding model failed (the old one serves)."
    )
    expires_after_days = models.PositiveIntegerField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    last_active_at = models.DateTimeField(default=timezone.now)
    usage_bytes = models.BigIntegerField(default=0, help_text="Bytes of chunk text and vectors stored.")
    ingest_key = models.ForeignKey(
        "keys.ApiKey",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        help_text="The store's own inference key: ingestion's embedding requests are metered and limited on it.",
    )
    ingest_key_secret = models.TextField(blank=True, help_text="That key's secret, encrypted (MultiFernet).")
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    objects = TenantManager()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["organization", "-created_at"], name="knowledge_store_org_created")]

    def __str__(self) -> str:
        return self.name or self.public_id


class VectorStoreFileBatch(models.Model):
    """Files attached to a store in one request (`/v1/vector_stores/{id}/file_batches`); its status and counts
    are its files'."""

    tenant_path = TenantPath(org="organization_id", inference_views=True)

    public_id = models.CharField(max_length=40, unique=True, default=_batch_id, editable=False)
    organization = models.ForeignKey("orgs.Organization", on_delete=models.CASCADE, related_name="+")
    vector_store = models.ForeignKey(VectorStore, on_delete=models.CASCADE, related_name="batches")
    cancelled_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    objects = TenantManager()

    def __str__(self) -> str:
        return self.public_id


class VectorStoreFile(models.Model):
    """One file attached to one store: its ingestion status, progress and error, its attributes (which searches
    filter on), and the chunking it was cut with. Its public id is the file's, as in OpenAI's API."""

    tenant_path = TenantPath(org="organization_id", inference_views=True)

    class Status(models.TextChoices):
        IN_PROGRESS = "in_progress", "in progress"
        COMPLETED = "completed", "completed"
        FAILED = "failed", "failed"
        CANCELLED = "cancelled", "cancelled"

    organization = models.ForeignKey("orgs.Organization", on_delete=models.CASCADE, related_name="+")
    vector_store = models.ForeignKey(VectorStore, on_delete=models.CASCADE, related_name="store_files")
    file = models.ForeignKey(KnowledgeFile, on_delete=models.CASCADE, related_name="store_files")
    batch = models.ForeignKey(
        VectorStoreFileBatch, on_delete=models.SET_NULL, null=True, blank=True, related_name="store_files"
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.IN_PROGRESS)
    last_error_code = models.CharField(max_length=32, blank=True)
    last_error_message = models.CharField(max_length=1000, blank=True)
    attributes = models.JSONField(default=dict, blank=True)
    chunk_max_tokens = models.PositiveIntegerField()
    chunk_overlap_tokens = models.PositiveIntegerField()
    usage_bytes = models.BigIntegerField(default=0)
    chunks_total = models.PositiveIntegerField(null=True, blank=True, help_text="Known once the file is cut.")
    chunks_done = models.PositiveIntegerField(default=0, help_text="Chunks embedded and written so far.")
    generation = models.PositiveIntegerField(default=1, help_text="The store generation its chunks were made for.")
    claimed_until = models.DateTimeField(
        null=True, blank=True, help_text="A worker's lease: past it, another worker may take the file over."
    )
    attempts = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    objects = TenantManager()

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["vector_store", "file"], name="knowledge_store_file_once"),
        ]
        indexes = [
            models.Index(fields=["vector_store", "status"], name="knowledge_storefile_status"),
            models.Index(
                fields=["claimed_until"],
                name="knowledge_storefile_leases",
                condition=models.Q(status="in_progress"),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.file_id} in {self.vector_store_id}"


class Chunk(models.Model):
    """A piece of a file's text with its embedding: what a search ranks and what retrieval puts into a prompt.

    Organisation, store, generation and attributes are copied onto the row so that a search is one indexed scan
    of one table. `flagged` marks text the guardrail detectors found suspicious at ingestion (prompt injection above
    all); the organisation's policy decides whether such chunks may enter prompts."""

    tenant_path = TenantPath(org="organization_id", inference_views=True)

    organization = models.ForeignKey("orgs.Organization", on_delete=models.CASCADE, related_name="+")
    vector_store = models.ForeignKey(VectorStore, on_delete=models.CASCADE, related_name="chunks")
    store_file = models.ForeignKey(VectorStoreFile, on_delete=models.CASCADE, related_name="chunks")
    generation = models.PositiveIntegerField()
    index = models.PositiveIntegerField(help_text="Its place in the file, from 0.")
    text = models.TextField()
    tokens = models.PositiveIntegerField()
    char_start = models.PositiveIntegerField()
    char_end = models.PositiveIntegerField()
    dimensions = models.PositiveSmallIntegerField()
    embedding = VectorField()
    attributes = models.JSONField(default=dict, blank=True)
    flagged = models.BooleanField(default=False)
    flag_categories = ArrayField(models.CharField(max_length=32), default=list, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    objects = TenantManager()

    class Meta:
        ordering = ["store_file_id", "index"]
        constraints = [
            # A chunk is written once per file and generation, however often a worker retries it (ingestion is
            # resumable: a restarted file skips the chunks it finds).
            models.UniqueConstraint(fields=["store_file", "generation", "index"], name="knowledge_chunk_once"),
        ]
        indexes = [models.Index(fields=["vector_store", "generation"], name="knowledge_chunk_store_gen")]

    def __str__(self) -> str:
        return f"chunk {self.index} of {self.store_file_id}"
