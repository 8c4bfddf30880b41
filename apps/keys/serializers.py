"""REST shapes of API keys. The secret appears in exactly two responses: create and rotate."""

from __future__ import annotations

from rest_framework import serializers

from apps.keys.models import PURPOSE_APPLICATION_NAME, ApiKey, Scope, purpose_refusal
from apps.orgs.models import Organization, Team
from apps.rbac.drf import TenantRelatedField

# Purposes by name: an application's key is stored with an empty purpose, but an API client reads and writes its name.
PURPOSE_NAMES = [(value or PURPOSE_APPLICATION_NAME, label) for value, label in ApiKey.Purpose.choices]


class ApiKeyOut(serializers.ModelSerializer):
    owner_email = serializers.EmailField(source="owner.email", read_only=True, allow_null=True, default=None)
    requests_to_date = serializers.IntegerField(read_only=True, default=0)
    tokens_to_date = serializers.IntegerField(read_only=True, default=0)
    cost_micros_to_date = serializers.IntegerField(read_only=True, default=0)
    is_usable = serializers.BooleanField(read_only=True)
    purpose = serializers.ChoiceField(
        choices=PURPOSE_NAMES,
        source="purpose_name",
        read_only=True,
        help_text="What the key is for: an application's, the console playground's, or a vector store's own.",
    )

    class Meta:
        model = ApiKey
        fields = [
            "id",
            "organization",
            "team",
            "owner",
            "owner_email",
            "name",
            "purpose",
            "prefix",
            "scopes",
            "allowed_models",
            "allowed_vector_stores",
            "created_at",
            "expires_at",
            "revoked_at",
            "last_used_at",
            "rotated_from",
            "is_usable",
            "requests_to_date",
            "tokens_to_date",
            "cost_micros_to_date",
        ]


class ApiKeyIssuedOut(ApiKeyOut):
    secret = serializers.CharField(read_only=True, help_text="The whole key. Shown this once; store it now.")

    class Meta(ApiKeyOut.Meta):
        fields = [*ApiKeyOut.Meta.fields, "secret"]


class ApiKeyCreateIn(serializers.Serializer):
    organization = TenantRelatedField(Organization)
    name = serializers.CharField(max_length=200)
    scopes = serializers.ListField(child=serializers.ChoiceField(choices=Scope.choices), min_length=1)
    team = TenantRelatedField(Team, required=False, allow_null=True)
    expires_at = serializers.DateTimeField(required=False, allow_null=True)
    allowed_models = serializers.ListField(child=serializers.CharField(max_length=200), required=False, default=list)
    allowed_vector_stores = serializers.ListField(
        child=serializers.CharField(max_length=40), required=False, default=list, help_text="vs_... ids; empty: all."
    )
    service = serializers.BooleanField(
        default=False,
        help_text="A service key has no owner and only its scopes; creating one needs the right to change keys.",
    )
    purpose = serializers.ChoiceField(
        choices=PURPOSE_NAMES,
        default=PURPOSE_APPLICATION_NAME,
        help_text="Only `application`: playground and knowledge keys are issued by Inferia itself.",
    )

    def validate_purpose(self, value: str) -> str:
        if value != PURPOSE_APPLICATION_NAME:
            raise serializers.ValidationError(purpose_refusal(value))
        return value


class ApiKeyUpdateIn(serializers.Serializer):
    name = serializers.CharField(max_length=200, required=False)
    expires_at = serializers.DateTimeField(required=False, allow_null=True)
    allowed_models = serializers.ListField(child=serializers.CharField(max_length=200), required=False)
    allowed_vector_stores = serializers.ListField(child=serializers.CharField(max_length=40), required=False)


class ApiKeyRotateIn(serializers.Serializer):
    grace_seconds = serializers.IntegerField(
        min_value=0, max_value=30 * 24 * 3600, default=24 * 3600, help_text="How long the old secret keeps working."
    )


class ApiKeyRevokeIn(serializers.Serializer):
    reason = serializers.CharField(max_length=500, required=False, default="", allow_blank=True)


class SocketTokenIn(serializers.Serializer):
    key = serializers.IntegerField(
        required=False,
        help_text="The key the token acts as. With an API key, omit it (or name that key): a key mints for itself.",
    )
    ttl_seconds = serializers.IntegerField(
        required=False, min_value=1, help_text="How long the token may wait to be used (default 60 s, capped)."
    )


class SocketTokenOut(serializers.Serializer):
    token = serializers.CharField(help_text="Shown once: send it as the socket's first message.")
    key = serializers.IntegerField(source="key.pk")
    organization = serializers.IntegerField(source="key.organization_id")
    expires_at = serializers.DateTimeField()
    expires_in = serializers.IntegerField()
