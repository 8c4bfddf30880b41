"""Changing prompt templates. A template's content is never edited: each edit is a new, numbered, immutable
version. Every write is audited in the caller's transaction and, once committed, published so that every gateway
drops its cached `latest` for that name (`apps.policies.prompts.cache`)."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction

from apps.audit.actors import Actor
from apps.audit.services import AuditContext, audit_diff, audit_record, audit_snapshot, update_begin
from apps.keys.models import ApiKey
from apps.orgs.models import Organization
from apps.policies.models import PromptTemplate, PromptTemplateVersion
from apps.policies.prompts.cache import template_cache_publish
from apps.policies.prompts.rendering import TEMPLATE_NAME_RE, template_content_validate

VERSION_FIELDS = ("messages", "variables", "model", "params", "note")
TEMPLATE_FIELDS = ("description",)


def _authors(actor: Actor) -> dict[str, int | None]:
    """Who made a template or version: the user, or the API key (and its owner, when it has one)."""
    if isinstance(actor, ApiKey):
        return {"created_by_id": actor.owner_id, "created_by_key_id": actor.pk}
    return {"created_by_id": getattr(actor, "pk", None), "created_by_key_id": None}


def _version_snapshot(version: PromptTemplateVersion) -> dict[str, Any]:
    return {"version": version.version, **audit_snapshot(version, VERSION_FIELDS)}


def _publish_after_commit(template: PromptTemplate) -> None:
    organization_id, name = template.organization_id, template.name
    transaction.on_commit(lambda: template_cache_publish(organization_id=organization_id, name=name))


def _version_build(
    *, template: PromptTemplate, number: int, actor: Actor, content: dict[str, Any]
) -> PromptTemplateVersion:
    unknown = set(content) - set(VERSION_FIELDS)
    if unknown:
        raise ValidationError(f"Unknown template version fields: {', '.join(sorted(unknown))}")
    values = {"variables": [], "model": "", "params": {}, "note": "", **content}
    if "messages" not in values:
        raise ValidationError({"messages": "A template version needs messages."})
    template_content_validate(
        messages=values["messages"], variables=values["variables"], model=values["model"], params=values["params"]
    )
    if not isinstance(values["note"], str) or len(values["note"]) > 500:
        raise ValidationError({"note": "At most 500 characters."})
    return PromptTemplateVersion(template=template, version=number, **values, **_authors(actor))


def prompt_template_create(
    *,
    actor: Actor,
    organization: Organization,
    name: str,
    description: str = "",
    context: AuditContext | None = None,
    **content: Any,
) -> PromptTemplateVersion:
    """A new template with its first version. `content` is `messages` (required), `variables`, `model`, `params`
    and `note`; raises ValidationError for a bad name, a name already used in the organisation, or bad content."""
    if not isinstance(name, str) or TEMPLATE_NAME_RE.fullmatch(name) is None:
        raise ValidationError({"name": "1 to 100 letters, digits, '_', '.' or '-', starting with a letter or digit."})
    with transaction.atomic():
        if PromptTemplate.objects.filter(organization=organization, name=name).exists():
            raise ValidationError({"name": f"The organisation already has a template named '{name}'; add a version."})
        template = PromptTemplate(
            organization=organization,
            name=name,
            description=description,
            latest_version=1,
            created_by_id=_authors(actor)["created_by_id"],
        )
        template.full_clean(validate_unique=False, validate_constraints=False)
        version = _version_build(template=template, number=1, actor=actor, content=content)
        template.save(force_insert=True)
        version.template = template
        version.save(force_insert=True)
        audit_record(
            action="prompt_template.create",
            actor=actor,
            target=template,
            changes=audit_diff(
                before=None, after={"name": name, "description": description, **_version_snapshot(version)}
            ),
            context=context,
        )
        _publish_after_commit(template)
    return version


def prompt_template_version_create(
    *, template: PromptTemplate, actor: Actor, context: AuditContext | None = None, **content: Any
) -> PromptTemplateVersion:
    """The next version of a template (numbers are gapless per template, even under concurrent edits). Gateways
    resolving `name` or `name@latest` see it within a second; `name@<n>` references are unaffected."""
    with transaction.atomic():
        template = PromptTemplate.objects.select_for_update().get(pk=template.pk)
        previous = template.versions.filter(version=template.latest_version).first()
        version = _version_build(template=template, number=template.latest_version + 1, actor=actor, content=content)
        version.save(force_insert=True)
        template.latest_version = version.version
        template.save(update_fields=["latest_version", "updated_at"])
        before = _version_snapshot(previous) if previous is not None else None
        audit_record(
            action="prompt_template.version_create",
            actor=actor,
            target=template,
            changes=audit_diff(before=before, after=_version_snapshot(version)),
            context=context,
        )
        _publish_after_commit(template)
    return version


def prompt_template_update(
    *, template: PromptTemplate, actor: Actor, changes: dict[str, Any], context: AuditContext | None = None
) -> PromptTemplate:
    """Change what describes a template (not its content: that is a new version; not its name: references use it)."""
    with transaction.atomic():
        template, before = update_begin(template, changes=changes, allowed=TEMPLATE_FIELDS)
        template.full_clean(validate_unique=False, validate_constraints=False)
        template.save()
        diff = audit_diff(before=before, after=audit_snapshot(template, TEMPLATE_FIELDS))
        if diff:
            audit_record(action="prompt_template.update", actor=actor, target=template, changes=diff, context=context)
    return template


def prompt_template_delete(*, template: PromptTemplate, actor: Actor, context: AuditContext | None = None) -> None:
    """Delete a template and all its versions; requests naming it get 404 on every gateway within a second."""
    with transaction.atomic():
        audit_record(
            action="prompt_template.delete",
            actor=actor,
            target=template,
            changes=audit_diff(before={"name": template.name, "latest_version": template.latest_version}, after=None),
            context=context,
        )
        _publish_after_commit(template)
        template.delete()
