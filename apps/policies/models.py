"""Policies: the limits, budgets, model allow-lists and guardrails that apply to an organisation, a team or a key.

All levels apply at once: a request is checked against its organisation's, its team's and its key's policy, so a
team's or key's own policy can only tighten what the levels above allow. `apps.policies.selectors` compiles them
into one `EffectivePolicy` per key for the gateway.
"""

from __future__ import annotations

from typing import Any

from django.contrib.postgres.fields import ArrayField
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone

from inferia_runtime.tenancy import PlatformRows, TenantManager, TenantPath


class GuardrailProfile(models.Model):
    """What the guardrails do with each category of finding, on input and on streamed output, plus an
    organisation's own blocklist and patterns. Owned by an organisation, or by the platform when `organization`
    is empty; the platform profile marked default applies where no policy names a profile."""

    tenant_path = TenantPath(org="organization_id", platform=PlatformRows.VIEWERS)

    organization = models.ForeignKey(
        "orgs.Organization", on_delete=models.CASCADE, null=True, blank=True, related_name="guardrail_profiles"
    )
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    input_actions = models.JSONField(
        default=dict, blank=True, help_text='Category -> "block", "redact", "flag" or "off", e.g. {"email": "redact"}.'
    )
    output_actions = models.JSONField(
        default=dict, blank=True, help_text='Category -> "redact", "stop" or "off". Empty: streams are not scanned.'
    )
    blocklist = ArrayField(
        models.CharField(max_length=200), default=list, blank=True, help_text="Words and phrases (category blocklist)."
    )
    patterns = models.JSONField(
        default=list,
        blank=True,
        help_text='Custom regexes: [{"name": "codename", "pattern": "...", "input": "block", "output": "stop"}].',
    )
    scanners = models.JSONField(
        default=list,
        blank=True,
        help_text='Extra scanner classes: [{"class": "package.module.Class", "options": {...}}].',
    )
    toxicity_threshold = models.FloatField(
        default=0.8,
        validators=[MinValueValidator(0.5), MaxValueValidator(0.99)],
        help_text="The classifier score (0.5 to 0.99) at which a sentence counts as toxicity.",
    )
    is_default = models.BooleanField(default=False, help_text="The platform profile used where no policy names one.")
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    objects = TenantManager()

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "name"],
                condition=Q(organization__isnull=False),
                name="policies_profile_name_per_org",
            ),
            models.UniqueConstraint(
                fields=["name"], condition=Q(organization__isnull=True), name="policies_profile_platform_name"
            ),
            models.UniqueConstraint(fields=["is_default"], condition=Q(is_default=True), name="policies_one_default"),
            models.CheckConstraint(
                condition=Q(is_default=False) | Q(organization__isnull=True), name="policies_default_is_platform"
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def config(self) -> dict[str, Any]:
        """The profile as the guardrail engine compiles it."""
        return {
            "input": dict(self.input_actions),
            "output": dict(self.output_actions),
            "blocklist": list(self.blocklist),
            "patterns": list(self.patterns),
            "scanners": list(self.scanners),
            "toxicity_threshold": self.toxicity_threshold,
        }


class FlaggedChunks(models.TextChoices):
    """What retrieval does with chunks that screening flagged at ingestion (they may try to steer the model)."""

    EXCLUDE = "exclude", "Kept out of prompts"
    ALLOW = "allow", "Allowed into prompts, marked"


class Policy(models.Model):
    """Limits for one organisation, one team or one key (exactly one: `team` and `api_key` are both empty for an
        organisation's policy). Empty limits mean "no limit at this level"; money is in micro-units of the currency;
        days and months are UTC calendar periods. The knowledge quotas measure what the whole organisation stores,
        whichever level sets them (see `apps.policies.effective.KnowledgeQuota`). The GPU quota of an organisation's
    or a team's policy bounds the GPUs of the deployments charged to it (`apps.compute.capacity` enforces it)."""

    tenant_path = TenantPath(org="organization_id", team="team_id")

    organization = models.ForeignKey("orgs.Organization", on_delete=models.CASCADE, related_name="policies")
    team = models.ForeignKey("orgs.Team", on_delete=models.CASCADE, null=True, blank=True, related_name="policies")
    api_key = models.ForeignKey("keys.ApiKey", on_delete=models.CASCADE, null=True, blank=True, related_name="policies")
    enabled = models.BooleanField(default=True, help_text="A disabled policy is ignored, as if it did not exist.")
    allowed_models = ArrayField(
        models.CharField(max_length=200),
        default=list,
        blank=True,
        help_text="Model names or glob patterns (llama-*). Empty: every model the key can see.",
    )
    requests_per_minute = models.PositiveIntegerField(null=True, blank=True)
    tokens_per_minute = models.PositiveIntegerField(null=True, blank=True)
    concurrent_requests = models.PositiveIntegerField(null=True, blank=True)
    max_tokens_per_request = models.PositiveIntegerField(
        null=True, blank=True, help_text="Also the max_tokens of a request that gives none."
    )
    tokens_per_day = models.PositiveBigIntegerField(null=True, blank=True)
    tokens_per_month = models.PositiveBigIntegerField(null=True, blank=True)
    budget_per_day_micros = models.PositiveBigIntegerField(null=True, blank=True)
    budget_per_month_micros = models.PositiveBigIntegerField(null=True, blank=True)
    knowledge_bytes_max = models.PositiveBigIntegerField(
        null=True, blank=True, help_text="Bytes of uploaded files the organisation may store (knowledge bases)."
    )
    knowledge_chunks_max = models.PositiveBigIntegerField(
        null=True, blank=True, help_text="Chunks the organisation's vector stores may hold (knowledge bases)."
    )
    gpus_max = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="GPUs the organisation's (or the team's) deployments may run at once; not for a key's policy.",
    )
    knowledge_flagged_chunks = models.CharField(
        max_length=16,
        choices=FlaggedChunks.choices,
        default=FlaggedChunks.EXCLUDE,
        help_text="Whether chunks that screening flagged at ingestion may enter prompts through retrieval; they "
        "may only where every enabled level allows them.",
    )
    responses_store = models.BooleanField(
        default=False,
        help_text="Whether `/v1/responses` answers are stored for `previous_response_id` and retrieval by id (an "
        "organisation's policy only).",
    )
    guardrail_profile = models.ForeignKey(
        GuardrailProfile, on_delete=models.PROTECT, null=True, blank=True, related_name="policies"
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    LIMIT_FIELDS = (
        "requests_per_minute",
        "tokens_per_minute",
        "concurrent_requests",
        "max_tokens_per_request",
        "tokens_per_day",
        "tokens_per_month",
        "budget_per_day_micros",
        "budget_per_month_micros",
        "knowledge_bytes_max",
        "knowledge_chunks_max",
        "gpus_max",
    )

    objects = TenantManager()

    class Meta:
        verbose_name_plural = "policies"
        ordering = ["organization_id", "team_id", "api_key_id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(team__isnull=True) | Q(api_key__isnull=True), name="policies_one_target"
            ),
            models.UniqueConstraint(
                fields=["organization"],
                condition=Q(team__isnull=True, api_key__isnull=True),
                name="policies_one_per_org",
            ),
            models.UniqueConstraint(fields=["team"], name="policies_one_per_team"),
            models.UniqueConstraint(fields=["api_key"], name="policies_one_per_key"),
        ]

    def __str__(self) -> str:
        return f"policy of {self.target_label}"

    @property
    def level(self) -> str:
        """ "org", "team" or "key": what the policy is attached to."""
        if self.api_key_id is not None:
            return "key"
        if self.team_id is not None:
            return "team"
        return "org"

    @property
    def target_label(self) -> str:
        """What the policy applies to, by name as people know it ("team Support", "key ci (sk-inf-ab12…)"); lists
        select the related rows."""
        if self.api_key is not None:
            return f"key {self.api_key.name} ({self.api_key.prefix}…)"
        if self.team is not None:
            return f"team {self.team.name}"
        return f"organisation {self.organization.name}"


class PromptTemplate(models.Model):
    """A named prompt an application can reference from `/v1` (`"template": "name@version"`) instead of sending
    the prompt itself. The content lives in immutable `PromptTemplateVersion`s: an edit adds a version, so a
    deployed application pinned to `name@3` keeps getting exactly what it was tested with. Owned by one
    organisation; a team can be granted it (django-guardian) like a deployment or a key."""

    tenant_path = TenantPath(org="organization_id", grant_via="pk")

    organization = models.ForeignKey("orgs.Organization", on_delete=models.CASCADE, related_name="prompt_templates")
    name = models.CharField(max_length=100, help_text="Letters, digits, '_', '.' and '-'; unique in the organisation.")
    description = models.TextField(blank=True)
    latest_version = models.PositiveIntegerField(default=0, editable=False, help_text="The newest version's number.")
    created_by = models.ForeignKey(
        "orgs.User", on_delete=models.SET_NULL, null=True, blank=True, related_name="+", editable=False
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    objects = TenantManager()

    class Meta:
        ordering = ["organization_id", "name"]
        constraints = [
            models.UniqueConstraint(fields=["organization", "name"], name="policies_template_name_per_org"),
        ]

    def __str__(self) -> str:
        return self.name


class PromptTemplateVersion(models.Model):
    """One immutable version of a prompt template: chat messages with `{{variable}}` placeholders, the variables
    they declare (with optional defaults), and the model and sampling parameters a request gets unless it gives
    its own. Numbered 1, 2, 3... per template; a database trigger refuses any change to the content."""

    tenant_path = TenantPath(org="template__organization_id", grant_via="template_id")

    template = models.ForeignKey(PromptTemplate, on_delete=models.CASCADE, related_name="versions")
    version = models.PositiveIntegerField()
    messages = models.JSONField(help_text='[{"role": "system", "content": "You answer questions about {{product}}."}]')
    variables = models.JSONField(
        default=list,
        blank=True,
        help_text='[{"name": "product", "default": "Inferia", "description": "..."}]; no "default": required.',
    )
    model = models.CharField(max_length=200, blank=True, help_text="The model a request gets when it names none.")
    params = models.JSONField(
        default=dict, blank=True, help_text='Default sampling parameters, e.g. {"temperature": 0.2, "max_tokens": 512}.'
    )
    note = models.CharField(max_length=500, blank=True, help_text="What changed in this version.")
    created_by = models.ForeignKey(
        "orgs.User", on_delete=models.SET_NULL, null=True, blank=True, related_name="+", editable=False
    )
    created_by_key = models.ForeignKey(
        "keys.ApiKey", on_delete=models.SET_NULL, null=True, blank=True, related_name="+", editable=False
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    objects = TenantManager()

    class Meta:
        ordering = ["template_id", "-version"]
        constraints = [
            models.UniqueConstraint(fields=["template", "version"], name="policies_template_version_unique"),
            models.CheckConstraint(condition=Q(version__gte=1), name="policies_template_version_positive"),
        ]

    def __str__(self) -> str:
        return f"{self.template.name}@{self.version}" if self.template_id else f"@{self.version}"
