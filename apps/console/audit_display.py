"""How the audit log page shows a page of events: what each one touched, by its current name and with a link to its
console page when it has one ("Prompt template 'support-reply'"), who did it, and its changes as readable rows of
field: before -> after.

Names are resolved for a whole page at once, one query per model type on the page (users and keys shared between
targets and actors), through `.restrict()`: what the person cannot see now, or what was deleted, falls back to the
type's name, the id and the name recorded with the event. The audit app itself names no app above it (it is the
sink), so this mapping lives here, in the console, the only layer that knows both the models and the pages."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from django.apps import apps
from django.db import models
from django.urls import reverse

from apps.audit.models import AuditEvent
from apps.audit.services import mask_secrets
from apps.orgs.models import Organization, User
from apps.rbac.restrict import Principal

MAX_VALUE_CHARS = 2000
KEY_TYPE = "keys.apikey"
USER_TYPE = "orgs.user"
ORGANIZATION_TYPE = "orgs.organization"


@dataclass(frozen=True)
class TargetKind:
    """How one model type shows in the log: its label, the console page of one row (a URL name taking `pk`, or
    None), and the field that names a row now (None: the name recorded with the event is the one to show)."""

    label: str
    url_name: str | None = None
    name_field: str | None = "name"


TARGET_KINDS: dict[str, TargetKind] = {
    "policies.prompttemplate": TargetKind("Prompt template", "console:template-detail"),
    "policies.guardrailprofile": TargetKind("Guardrail profile", "console:policy-profile-edit"),
    "policies.policy": TargetKind("Policy", "console:policy-edit", name_field=None),
    KEY_TYPE: TargetKind("API key", "console:key-detail"),
    "compute.modeldeployment": TargetKind("Deployment", "console:deployment-detail"),
    "compute.computepool": TargetKind("Compute pool"),
    "compute.provider": TargetKind("Provider"),
    "orgs.team": TargetKind("Team", "console:member-team"),
    "rbac.role": TargetKind("Role", "console:member-role-edit"),
    ORGANIZATION_TYPE: TargetKind("Organisation"),
    USER_TYPE: TargetKind("User", name_field="email"),
    "orgs.membership": TargetKind("Membership", name_field=None),
    "orgs.invitation": TargetKind("Invitation", name_field="email"),
}


@dataclass
class Shown:
    """A target or an actor as a cell shows it: the kind, the name (may be empty), a link ("" for none) and
    whether the row is gone (deleted, or out of the person's view now)."""

    label: str
    name: str = ""
    url: str = ""
    ident: str = ""
    gone: bool = False
    recorded: str = ""
    detail: str = ""


@dataclass
class ChangeRow:
    """One field of an event's changes: `before` / `after` as display text (None: no value), or only `value` for
    data that is not a before/after pair (a reason, a count)."""

    field: str
    label: str
    before: str | None = None
    after: str | None = None
    value: str | None = None
    paired: bool = True


@dataclass
class EventView:
    event: AuditEvent
    target: Shown | None
    actor: Shown
    changes: list[ChangeRow] = field(default_factory=list)


def _model(target_type: str) -> type[models.Model] | None:
    try:
        return apps.get_model(target_type)
    except (LookupError, ValueError):
        return None


def _kind(target_type: str) -> TargetKind:
    known = TARGET_KINDS.get(target_type)
    if known is not None:
        return known
    model = _model(target_type)
    label = str(model._meta.verbose_name).capitalize() if model is not None else target_type
    return TargetKind(label, name_field=None)


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _names(principal: Principal, wanted: dict[str, set[int]]) -> dict[str, dict[int, str]]:
    """{type: {pk: current name}} for the rows the principal may see now: one query per type."""
    found: dict[str, dict[int, str]] = {}
    for target_type, ids in wanted.items():
        kind, model = TARGET_KINDS.get(target_type), _model(target_type)
        if kind is None or model is None or not ids:
            continue
        if target_type == USER_TYPE:
            # People have no tenant door of their own; these ids come from events the principal may read, whose
            # labels already name them.
            rows = User.objects.filter(pk__in=ids).values_list("pk", "email", "full_name")
            found[target_type] = {pk: f"{full_name} <{email}>" if full_name else email for pk, email, full_name in rows}
            continue
        name_field = kind.name_field or "pk"
        queryset = model._default_manager.restrict(principal).filter(pk__in=ids)  # type: ignore[attr-defined]
        found[target_type] = {pk: str(name) for pk, name in queryset.values_list("pk", name_field)}
    return found


def _target(event: AuditEvent, names: dict[str, dict[int, str]], organizations: dict[int, str]) -> Shown | None:
    if not event.target_type:
        return None
    kind = _kind(event.target_type)
    pk = _int(event.target_id)
    shown = Shown(label=kind.label, ident=event.target_id, recorded=event.target_repr)
    current = organizations if event.target_type == ORGANIZATION_TYPE else names.get(event.target_type)
    if current is None or pk is None:
        shown.name = event.target_repr  # a type with no names to look up: what was recorded
        return shown
    if pk not in current:
        shown.gone = True
        return shown
    shown.name = event.target_repr if kind.name_field is None else current[pk]
    if kind.url_name:
        shown.url = reverse(kind.url_name, kwargs={"pk": pk})
    return shown


def _actor(event: AuditEvent, names: dict[str, dict[int, str]], filter_url: str) -> Shown:
    by_actor = f"{filter_url}actor={quote(event.actor_label)}"
    if event.actor_key_id is not None:
        key_name = names.get(KEY_TYPE, {}).get(event.actor_key_id)
        if key_name is None:
            return Shown(label="API key", name=event.actor_label, url=by_actor, gone=True)
        url = reverse(TARGET_KINDS[KEY_TYPE].url_name or "", kwargs={"pk": event.actor_key_id})
        return Shown(label="API key", name=key_name, url=url, detail=event.actor_label)
    if event.actor_user_id is not None:
        current = names.get(USER_TYPE, {}).get(event.actor_user_id)
        return Shown(label="Person", name=current or event.actor_label, url=by_actor, gone=current is None)
    return Shown(label="System", name=event.actor_label)


def _is_variable(value: Any) -> bool:
    return isinstance(value, dict) and "name" in value and set(value) <= {"name", "default", "description"}


def _text(value: Any) -> str | None:
    """A stored value as readable text: chat messages as "role: content" lines, other structures as indented JSON,
    long values cut (the export has them whole)."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        text = "yes" if value else "no"
    elif isinstance(value, str):
        text = value
    elif isinstance(value, int | float):
        text = str(value)
    elif (
        isinstance(value, list) and value and all(isinstance(m, dict) and set(m) == {"role", "content"} for m in value)
    ):
        text = "\n".join(f"{m['role']}: {m['content']}" for m in value)
    elif isinstance(value, list) and value and all(_is_variable(v) for v in value):
        text = "\n".join(
            f"{v['name']} = {v['default']}" if "default" in v else f"{v['name']} (required)" for v in value
        )
    elif value in ([], {}):
        text = "(none)"
    else:
        text = json.dumps(value, indent=1, ensure_ascii=False, sort_keys=True)
    return text if len(text) <= MAX_VALUE_CHARS else text[:MAX_VALUE_CHARS] + "… (cut; the export has it all)"


def _label(model: type[models.Model] | None, name: str) -> str:
    """The field's verbose name; the key made readable when the model (or the field) is gone."""
    fields = {field.name: field for field in model._meta.get_fields()} if model is not None else {}
    verbose = getattr(fields.get(name), "verbose_name", None)
    return str(verbose).capitalize() if verbose else name.replace("_", " ").capitalize()


def audit_change_rows(changes: Any, target_type: str = "") -> list[ChangeRow]:
    """An event's `changes` as rows. Secrets were masked when the event was written; they are masked again here in
    case an older event kept one, so the page never shows more than the export."""
    if not isinstance(changes, dict):
        return [ChangeRow(field="", label="Data", value=_text(changes), paired=False)] if changes else []
    model = _model(target_type) if target_type else None
    rows = []
    for name, change in mask_secrets(changes).items():
        label = _label(model, str(name))
        if isinstance(change, dict) and change and set(change) <= {"before", "after"}:
            before, after = _text(change.get("before")), _text(change.get("after"))
            if before != after:  # "" and None differ in the record, not to a reader
                rows.append(ChangeRow(str(name), label, before=before, after=after))
        else:
            rows.append(ChangeRow(str(name), label, value=_text(change), paired=False))
    return rows


def audit_events_shown(
    events: Iterable[AuditEvent],
    *,
    principal: Principal,
    organizations: Iterable[Organization],
    filter_url: str,
) -> list[EventView]:
    """A page of events ready to render. `organizations` are those the person sees (already loaded for the page's
    switcher, so naming an organisation costs no query); `filter_url` is the log's address with the current filters
    but the actor, ending in `?` or `&`, for the links that show one actor's events."""
    events = list(events)
    wanted: dict[str, set[int]] = defaultdict(set)
    for event in events:
        pk = _int(event.target_id)
        if event.target_type and event.target_type != ORGANIZATION_TYPE and pk is not None:
            wanted[event.target_type].add(pk)
        if event.actor_key_id is not None:
            wanted[KEY_TYPE].add(event.actor_key_id)
        if event.actor_user_id is not None:
            wanted[USER_TYPE].add(event.actor_user_id)
    names = _names(principal, wanted)
    organization_names = {organization.pk: organization.name for organization in organizations}
    return [
        EventView(
            event=event,
            target=_target(event, names, organization_names),
            actor=_actor(event, names, filter_url),
            changes=audit_change_rows(event.changes, event.target_type),
        )
        for event in events
    ]
