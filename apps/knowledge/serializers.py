"""REST shapes of the knowledge base: files, vector stores, their files, and a store's search. Rows are addressed by
numeric id in URLs, like every management resource; each shape carries the public id (`file-...`, `vs_...`) that
/v1 and the console use too."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db.models import QuerySet
from rest_framework import serializers

from apps.keys.models import ApiKey
from apps.knowledge.models import KnowledgeFile, VectorStore, VectorStoreFile
from apps.knowledge.selectors import rows_in_allowed_stores
from apps.orgs.models import Organization
from apps.rbac.drf import TenantRelatedField

SEARCH_RESULTS_MAX = 50
FILE_IDS_MAX = 500


class KnowledgeFileOut(serializers.ModelSerializer):
    class Meta:
        model = KnowledgeFile
        fields = [
            "id",
            "public_id",
            "organization",
            "filename",
            "purpose",
            "bytes",
            "content_type",
            "sha256",
            "created_at",
            "expires_at",
        ]


class KnowledgeFileUploadIn(serializers.Serializer):
    organization = TenantRelatedField(Organization)
    file = serializers.FileField(help_text="The file's bytes (multipart/form-data); its name is kept.")
    purpose = serializers.ChoiceField(choices=KnowledgeFile.Purpose.choices, default=KnowledgeFile.Purpose.ASSISTANTS)


class VectorStoreOut(serializers.ModelSerializer):
    class Meta:
        model = VectorStore
        fields = [
            "id",
            "public_id",
            "organization",
            "name",
            "description",
            "embedding_model",
            "dimensions",
            "chunk_max_tokens",
            "chunk_overlap_tokens",
            "metadata",
            "expires_after_days",
            "expires_at",
            "last_active_at",
            "usage_bytes",
            "generation",
            "reembed_model",
            "reembed_dimensions",
            "reembed_error",
            "created_at",
        ]
        read_only_fields = fields


class VectorStoreCreateIn(serializers.Serializer):
    organization = TenantRelatedField(Organization)
    name = serializers.CharField(max_length=256, required=False, default="", allow_blank=True)
    description = serializers.CharField(max_length=512, required=False, default="", allow_blank=True)
    embedding_model = serializers.CharField(
        max_length=200, required=False, help_text="The model that embeds its chunks (default: the platform's)."
    )
    metadata = serializers.DictField(required=False, allow_null=True, default=None)
    expires_after_days = serializers.IntegerField(required=False, allow_null=True, default=None, min_value=1)
    chunk_max_tokens = serializers.IntegerField(required=False, allow_null=True, default=None)
    chunk_overlap_tokens = serializers.IntegerField(required=False, allow_null=True, default=None)
    file_ids = serializers.ListField(
        child=serializers.CharField(max_length=40),
        required=False,
        default=list,
        max_length=FILE_IDS_MAX,
        help_text="file-... ids of the organisation's files to attach at once.",
    )

    def validate_embedding_model(self, value: str) -> str:
        return value or settings.INFERIA_KNOWLEDGE_EMBEDDING_MODEL


class VectorStoreUpdateIn(serializers.Serializer):
    name = serializers.CharField(max_length=256, required=False, allow_blank=True)
    metadata = serializers.DictField(required=False)
    expires_after_days = serializers.IntegerField(
        required=False, allow_null=True, min_value=1, help_text="null: the store no longer expires."
    )
    embedding_model = serializers.CharField(
        max_length=200,
        required=False,
        help_text="Another embedding model: the store is re-embedded in the background and searches use the old "
        "vectors until the new ones are complete (`reembed_model` meanwhile).",
    )


class VectorStoreFileOut(serializers.ModelSerializer):
    vector_store_id = serializers.CharField(source="vector_store.public_id", read_only=True)
    file_id = serializers.CharField(source="file.public_id", read_only=True)
    filename = serializers.CharField(source="file.filename", read_only=True)

    class Meta:
        model = VectorStoreFile
        fields = [
            "id",
            "organization",
            "vector_store",
            "vector_store_id",
            "file",
            "file_id",
            "filename",
            "status",
            "last_error_code",
            "last_error_message",
            "attributes",
            "chunk_max_tokens",
            "chunk_overlap_tokens",
            "chunks_total",
            "chunks_done",
            "usage_bytes",
            "created_at",
            "updated_at",
        ]


class AllowedStoreField(TenantRelatedField):
    """A store by id among those the caller may see and, for a key limited to some stores, one of those: any other
    reads as "does not exist", like another organisation's."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(VectorStore, **kwargs)

    def get_queryset(self) -> QuerySet[Any]:
        request = self.context.get("request")
        auth = getattr(request, "auth", None)
        allowed = auth.allowed_vector_stores if isinstance(auth, ApiKey) else ()
        return rows_in_allowed_stores(super().get_queryset(), allowed=allowed)


class VectorStoreFileAttachIn(serializers.Serializer):
    vector_store = AllowedStoreField()
    file_id = serializers.CharField(max_length=40, help_text="The file-... id of one of the organisation's files.")
    attributes = serializers.DictField(required=False, allow_null=True, default=None)


class VectorStoreSearchIn(serializers.Serializer):
    query = serializers.CharField(max_length=20_000, help_text="What to look for.")
    max_num_results = serializers.IntegerField(min_value=1, max_value=SEARCH_RESULTS_MAX, default=10)
    filters = serializers.JSONField(
        required=False, allow_null=True, default=None, help_text="OpenAI's attribute filter."
    )
    score_threshold = serializers.FloatField(min_value=0.0, max_value=1.0, default=0.0)


class VectorStoreSearchHitOut(serializers.Serializer):
    file_id = serializers.CharField()
    filename = serializers.CharField()
    index = serializers.IntegerField(help_text="The chunk's place in its file, from 0.")
    score = serializers.FloatField()
    attributes = serializers.DictField()
    text = serializers.CharField()


class VectorStoreSearchOut(serializers.Serializer):
    search_query = serializers.CharField()
    data = VectorStoreSearchHitOut(many=True)
