"""REST shapes of policies, guardrail profiles and prompt templates. Inputs only parse; the write services in
`apps.policies.services` and `apps.policies.prompts.services` validate and audit."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from apps.keys.models import ApiKey
from apps.orgs.models import Organization, Team
from apps.policies.models import FlaggedChunks, GuardrailProfile, Policy, PromptTemplate, PromptTemplateVersion
from apps.rbac.drf import TenantRelatedField

# --- policies -------------------------------------------------------------------------------------------------

# The API's unit for money stays integer micro-units (what it has always taken and returned); the console is where
# amounts are typed and shown in the currency.
BUDGET_HELP = (
    "Integer micro-units of the currency (INFERIA_CURRENCY, USD by default) per UTC {period}: 1 unit = 1,000,000 "
    "micro-units, so 5000000 is 5.00 (USD: $5.00). Null: no budget at this level."
)

# The knowledge quotas measure the whole organisation's store, whichever level sets them (the tightest applies).
KNOWLEDGE_BYTES_HELP = (
    "Bytes of uploaded files the organisation may store; an upload that would go over it is refused. Null: no "
    "limit at this level."
)
KNOWLEDGE_CHUNKS_HELP = (
    "Chunks the organisation's vector stores may hold; a file whose chunks would go over it fails ingestion. "
    "Null: no limit at this level."
)

GPUS_HELP = (
    "GPUs the organisation's deployments (a team's policy: those charged to the team) may run at once, a replica "
    "counting tensor_parallel_size x pipeline_parallel_size; a deployment or scale-up past it is refused. Not for a "
    "key's policy. Null: no limit at this level."
)

KNOWLEDGE_FLAGGED_HELP = (
    '"exclude" (the default) keeps chunks that screening flagged at ingestion (prompt injection, hidden characters) '
    'out of prompts built by retrieval; "allow" lets them in, marked as flagged. They enter only where every enabled '
    "level allows them."
)

RESPONSES_STORE_HELP = (
    "Whether `/v1/responses` answers are stored (in Redis, for INFERIA_RESPONSES_TTL_SECONDS) so that "
    "`previous_response_id` and `GET /v1/responses/{id}` can read them. Off by default; an organisation's policy only."
)


class PolicyOut(serializers.ModelSerializer[Policy]):
    level = serializers.CharField(read_only=True, help_text='"org", "team" or "key".')

    class Meta:
        model = Policy
        fields = [
            "id",
            "organization",
            "team",
            "api_key",
            "level",
            "enabled",
            "allowed_models",
            *Policy.LIMIT_FIELDS,
            "knowledge_flagged_chunks",
            "responses_store",
            "guardrail_profile",
            "created_at",
            "updated_at",
        ]
        extra_kwargs = {
            "budget_per_day_micros": {"help_text": BUDGET_HELP.format(period="day")},
            "budget_per_month_micros": {"help_text": BUDGET_HELP.format(period="month")},
            "knowledge_bytes_max": {"help_text": KNOWLEDGE_BYTES_HELP},
            "knowledge_chunks_max": {"help_text": KNOWLEDGE_CHUNKS_HELP},
            "gpus_max": {"help_text": GPUS_HELP},
            "knowledge_flagged_chunks": {"help_text": KNOWLEDGE_FLAGGED_HELP},
            "responses_store": {"help_text": RESPONSES_STORE_HELP},
        }


def _limit(**kwargs: Any) -> serializers.IntegerField:
    return serializers.IntegerField(min_value=0, required=False, allow_null=True, **kwargs)


class PolicyUpdateIn(serializers.Serializer[dict[str, Any]]):
    enabled = serializers.BooleanField(required=False)
    allowed_models = serializers.ListField(
        child=serializers.CharField(max_length=200), required=False, help_text="Names or glob patterns; empty: any."
    )
    requests_per_minute = _limit(max_value=2**31 - 1)
    tokens_per_minute = _limit(max_value=2**31 - 1)
    concurrent_requests = _limit(max_value=2**31 - 1)
    max_tokens_per_request = _limit(max_value=2**31 - 1)
    tokens_per_day = _limit(max_value=2**63 - 1)
    tokens_per_month = _limit(max_value=2**63 - 1)
    budget_per_day_micros = _limit(max_value=2**63 - 1, help_text=BUDGET_HELP.format(period="day"))
    budget_per_month_micros = _limit(max_value=2**63 - 1, help_text=BUDGET_HELP.format(period="month"))
    knowledge_bytes_max = _limit(max_value=2**63 - 1, help_text=KNOWLEDGE_BYTES_HELP)
    knowledge_chunks_max = _limit(max_value=2**63 - 1, help_text=KNOWLEDGE_CHUNKS_HELP)
    gpus_max = _limit(max_value=2**31 - 1, help_text=GPUS_HELP)
    knowledge_flagged_chunks = serializers.ChoiceField(
        choices=FlaggedChunks.choices, required=False, help_text=KNOWLEDGE_FLAGGED_HELP
    )
    responses_store = serializers.BooleanField(required=False, help_text=RESPONSES_STORE_HELP)
    guardrail_profile = TenantRelatedField(
        GuardrailProfile, required=False, allow_null=True, help_text="The organisation's own or a platform profile."
    )


class PolicyCreateIn(PolicyUpdateIn):
    organization = TenantRelatedField(Organization)
    team = TenantRelatedField(Team, required=False, allow_null=True, help_text="Attach to this team of the org.")
    api_key = TenantRelatedField(ApiKey, required=False, allow_null=True, help_text="Attach to this key of the org.")


class GuardrailProfileOut(serializers.ModelSerializer[GuardrailProfile]):
    class Meta:
        model = GuardrailProfile
        fields = [
            "id",
            "organization",
            "name",
            "description",
            "input_actions",
            "output_actions",
            "blocklist",
            "patterns",
            "scanners",
            "toxicity_threshold",
            "is_default",
            "created_at",
            "updated_at",
        ]


class GuardrailProfileUpdateIn(serializers.Serializer[dict[str, Any]]):
    name = serializers.CharField(max_length=200, required=False)
    description = serializers.CharField(required=False, allow_blank=True)
    input_actions = serializers.DictField(child=serializers.CharField(), required=False)
    output_actions = serializers.DictField(child=serializers.CharField(), required=False)
    blocklist = serializers.ListField(child=serializers.CharField(max_length=200), required=False)
    patterns = serializers.ListField(child=serializers.DictField(), required=False)
    scanners = serializers.ListField(child=serializers.DictField(), required=False)
    toxicity_threshold = serializers.FloatField(
        min_value=0.5, max_value=0.99, required=False, help_text="Score at which a sentence counts as toxicity."
    )
    is_default = serializers.BooleanField(required=False, help_text="Platform profiles only (superadmin).")


class GuardrailProfileCreateIn(GuardrailProfileUpdateIn):
    organization = TenantRelatedField(
        Organization, allow_null=True, help_text="The owning organisation; null: a platform profile (superadmin)."
    )
    name = serializers.CharField(max_length=200)


# --- prompt templates -----------------------------------------------------------------------------------------


class PromptTemplateVersionOut(serializers.ModelSerializer[PromptTemplateVersion]):
    ref = serializers.SerializerMethodField(help_text="How a /v1 request names exactly this version.")

    class Meta:
        model = PromptTemplateVersion
        fields = [
            "version",
            "ref",
            "messages",
            "variables",
            "model",
            "params",
            "note",
            "created_by",
            "created_by_key",
            "created_at",
        ]

    def get_ref(self, version: PromptTemplateVersion) -> str:
        return f"{version.template.name}@{version.version}"


class PromptTemplateOut(serializers.ModelSerializer[PromptTemplate]):
    class Meta:
        model = PromptTemplate
        fields = [
            "id",
            "organization",
            "name",
            "description",
            "latest_version",
            "created_by",
            "created_at",
            "updated_at",
        ]


class PromptTemplateDetailOut(PromptTemplateOut):
    latest = serializers.SerializerMethodField()

    class Meta(PromptTemplateOut.Meta):
        fields = [*PromptTemplateOut.Meta.fields, "latest"]

    def get_latest(self, template: PromptTemplate) -> dict[str, Any] | None:
        latest = template.versions.select_related("template").filter(version=template.latest_version).first()
        return PromptTemplateVersionOut(latest).data if latest is not None else None


class PromptTemplateVersionIn(serializers.Serializer[dict[str, Any]]):
    messages = serializers.JSONField(help_text='[{"role": "system", "content": "... {{variable}} ..."}]')
    variables = serializers.JSONField(
        required=False,
        default=list,  # type: ignore[arg-type]  # the stubs allow only a mapping as a JSONField's default
        help_text='[{"name": "x", "default": "y"}]',
    )
    model = serializers.CharField(max_length=200, required=False, default="", allow_blank=True)
    params = serializers.JSONField(required=False, default=dict, help_text='e.g. {"temperature": 0.2}')
    note = serializers.CharField(max_length=500, required=False, default="", allow_blank=True)


class PromptTemplateCreateIn(PromptTemplateVersionIn):
    organization = TenantRelatedField(Organization)
    name = serializers.CharField(max_length=100)
    description = serializers.CharField(required=False, default="", allow_blank=True)


class PromptTemplateUpdateIn(serializers.Serializer[dict[str, Any]]):
    description = serializers.CharField(allow_blank=True)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        unknown = set(self.initial_data) - set(self.fields)
        if unknown:
            raise serializers.ValidationError(
                f"Only the description changes here ({', '.join(sorted(unknown))} given); content changes are new "
                "versions: POST .../versions/. The name cannot change: requests refer to it."
            )
        return attrs


class PromptTemplateRenderIn(serializers.Serializer[dict[str, Any]]):
    version = serializers.RegexField(
        r"^(latest|[1-9][0-9]{0,8})$", required=False, default="latest", help_text='A version number or "latest".'
    )
    variables = serializers.DictField(required=False, default=dict)


class PromptTemplateRenderOut(serializers.Serializer[dict[str, Any]]):
    messages = serializers.ListField(child=serializers.DictField())
    model = serializers.CharField(allow_null=True)
    params = serializers.DictField()
    template = serializers.CharField(help_text="name@version that was rendered.")
    version = serializers.IntegerField()


class PromptTemplateDiffOut(serializers.Serializer[dict[str, Any]]):
    from_version = serializers.IntegerField()
    to_version = serializers.IntegerField()
    diff = serializers.CharField(help_text="A unified diff of the two versions' content as indented JSON.")
