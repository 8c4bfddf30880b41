"""What the console's management pages (keys, policies, templates, usage, audit, members) share: who is asking,
the tenancy door for one object (404 outside the principal's view, 403 when visible but not changeable), running a
write service as the request's transaction, and keyset pagination that never counts the whole table."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from django import forms
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError, connections, models, transaction
from django.db.models import Q, QuerySet
from django.http import Http404, HttpRequest
from django.utils.dateparse import parse_datetime
from rest_framework.exceptions import ParseError

from apps.audit.services import AuditContext
from apps.console.scope import organization_current as organization_current
from apps.console.scope import organization_filter as organization_filter
from apps.console.scope import organizations_visible as organizations_visible
from apps.orgs.models import Organization
from apps.rbac.drf_input import control_character_refuse
from apps.rbac.restrict import Principal, organizations_allowing
from inferia_runtime.errors import DomainRefusal

M = TypeVar("M", bound=models.Model)

PAGE_SIZE = 25


def page_principal(request: HttpRequest) -> Principal:
    """The signed-in person (the console never acts with an API key)."""
    return Principal.of(request.user)


def page_audit_context(request: HttpRequest) -> AuditContext:
    """Where a console change came from, for its audit event."""
    return AuditContext.from_request(request)


def tenant_object(queryset: QuerySet[M], *, request: HttpRequest, pk: Any, action: str = "view") -> M:
    """The row `pk` of `queryset` if the signed-in user may `action` it. Outside their view: 404 (nothing reveals
    that it exists); visible but not theirs to `action`: 403."""
    principal = page_principal(request)
    found = queryset.restrict(principal, action).filter(pk=pk).first()
    if found is not None:
        return found
    if action != "view" and queryset.restrict(principal).filter(pk=pk).exists():
        raise PermissionDenied(f"You may not {action} this {queryset.model._meta.verbose_name}.")
    raise Http404


def page_organizations_allowing(request: HttpRequest, action: str, model: type[models.Model]) -> QuerySet[Organization]:
    """The organisations in which the signed-in user may `action` every `model` row (what shows a button)."""
    return organizations_allowing(principal=page_principal(request), action=action, model=model)


def create_organizations(request: HttpRequest, model: type[models.Model]) -> list[Organization]:
    """Where a create form for `model` creates: the page's organisation when the user may add there (one
    organisation context: the form says so, and its lists of teams, roles or profiles are that organisation's);
    otherwise every organisation where they may (the form then asks which). A form shown again after an error
    keeps the organisation it was posted for, even if the session's choice changed meanwhile (another tab)."""
    allowed = list(page_organizations_allowing(request, "add", model).order_by("name"))
    current = organization_current(request)
    wanted = request.POST.get("organization", "") if request.method == "POST" else ""
    wanted = wanted or (str(current.pk) if current is not None else "")
    return [o for o in allowed if str(o.pk) == wanted] or allowed


def require_may_add(request: HttpRequest, model: type[models.Model], organization_id: Any) -> Organization:
    """The organisation `organization_id` if the user may add `model` rows there; else 403 (or 404 when the
    organisation is not even visible to them)."""
    allowed = page_organizations_allowing(request, "add", model).filter(pk=_int_or_none(organization_id)).first()
    if allowed is not None:
        return allowed
    visible = Organization.objects.filter(pk=_int_or_none(organization_id)).restrict(page_principal(request))
    if visible.exists():
        raise PermissionDenied(f"You may not add a {model._meta.verbose_name} here.")
    raise PermissionDenied(f"You may not add a {model._meta.verbose_name}.")


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def service_run(function: Callable[..., Any], /, **kwargs: Any) -> tuple[Any, str]:
    """Run a write service as the request's top-level transaction. Returns (result, "") or (None, why it was
    refused) for the refusals services raise (DomainRefusal, ValidationError, a uniqueness conflict); any other
    exception is a bug and stays a 500."""

    def run() -> Any:
        with transaction.atomic(durable=True):
            return function(**kwargs)

    return _refusals_told(run)


def service_run_apart(function: Callable[..., Any], /, **kwargs: Any) -> tuple[Any, str]:
    """Run a write service that commits its own steps and asks the gateway in between (creating a vector store asks
    the embedding model with a key it committed first), in a thread of its own: there no request transaction hides
    the committed key from the gateway's connections, and no event loop of the request's waits on the thread it
    would block. The same answer as `service_run`."""

    def run() -> Any:
        try:
            return function(**kwargs)
        finally:
            connections.close_all()  # this thread's connections end with it

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="console-apart") as pool:
        return pool.submit(_refusals_told, run).result()


def _refusals_told(call: Callable[[], Any]) -> tuple[Any, str]:
    try:
        return call(), ""
    except DjangoValidationError as error:
        if hasattr(error, "message_dict"):
            return None, " ".join(
                f"{'' if k == '__all__' else k + ': '}{' '.join(v)}" for k, v in error.message_dict.items()
            )
        return None, " ".join(error.messages)
    except DomainRefusal as error:
        # Only the first letter: the rest names pools, teams and models as they are spelt.
        message = str(error)
        return None, message[:1].upper() + message[1:] + ("" if message.endswith(".") else ".")
    except IntegrityError:
        return None, "This conflicts with an existing record (a name or slug already used?)."


def service_announce(request: HttpRequest, function: Callable[..., Any], /, *, success: str, **kwargs: Any) -> bool:
    """`service_run`, its outcome told to the user as the page's message: the refusal, or `success`. True when the
    change was made."""
    _, error = service_run(function, **kwargs)
    if error:
        messages.error(request, error)
    else:
        messages.success(request, success)
    return not error


def form_errors_tell(request: HttpRequest, form: forms.Form) -> None:
    """A form's errors as the page's messages, each with its field's label."""
    for field, errors in form.errors.items():
        label = form.fields[field].label if field in form.fields else ""
        messages.error(request, f"{label}: {' '.join(errors)}" if label else " ".join(errors))


def organization_current_slug(request: HttpRequest) -> str:
    current = organization_current(request)
    return current.slug if current is not None else ""


@dataclass
class KeysetPage:
    """One page of rows in a fixed descending order, with opaque cursors to the older and newer neighbours (None at
    either end). No COUNT: one extra row tells whether there is more."""

    rows: list[Any]
    older: str | None
    newer: str | None


def _encode(values: Iterable[Any]) -> str:
    plain = [value.isoformat() if isinstance(value, datetime) else value for value in values]
    return base64.urlsafe_b64encode(json.dumps(plain).encode()).decode().rstrip("=")


def _decode(cursor: str, fields: tuple[str, ...], model: type[models.Model]) -> list[Any] | None:
    try:
        plain = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except ValueError:
        return None
    if not isinstance(plain, list) or len(plain) != len(fields):
        return None
    values: list[Any] = []
    for name, value in zip(fields, plain, strict=True):
        field = model._meta.pk if name == "pk" else model._meta.get_field(name)
        if isinstance(field, models.DateTimeField):
            moment = parse_datetime(value) if isinstance(value, str) else None
            if moment is None:
                return None
            values.append(moment)
        elif isinstance(value, int) and not isinstance(value, bool):
            values.append(value)
        else:
            return None
    return values


def _beyond(fields: tuple[str, ...], values: list[Any], op: str) -> Q:
    """Rows strictly after `values` in the order of `fields` (lexicographic), `op` being "lt" or "gt"."""
    condition = Q()
    for index, name in enumerate(fields):
        step = Q(**{f"{name}__{op}": values[index]})
        for earlier, value in zip(fields[:index], values[:index], strict=True):
            step &= Q(**{earlier: value})
        condition |= step
    return condition


def keyset_page(
    queryset: QuerySet[Any],
    *,
    request: HttpRequest,
    fields: tuple[str, ...] = ("created_at", "pk"),
    size: int = PAGE_SIZE,
) -> KeysetPage:
    """The page of `queryset` (newest first by `fields`) that `?older=` or `?newer=` points at; the first page
    without either. Uses the indexed ordering and a LIMIT, so it stays fast however many rows match."""
    model = queryset.model
    older = _decode(request.GET.get("older", ""), fields, model) if request.GET.get("older") else None
    newer = _decode(request.GET.get("newer", ""), fields, model) if request.GET.get("newer") else None
    descending = [f"-{name}" for name in fields]
    if newer is not None:
        ascending = list(fields)
        rows = list(queryset.filter(_beyond(fields, newer, "gt")).order_by(*ascending)[: size + 1])
        has_more_newer = len(rows) > size
        rows = list(reversed(rows[:size]))
        has_more_older = True
    else:
        if older is not None:
            queryset = queryset.filter(_beyond(fields, older, "lt"))
        rows = list(queryset.order_by(*descending)[: size + 1])
        has_more_older = len(rows) > size
        rows = rows[:size]
        has_more_newer = older is not None

    def cursor(row: Any) -> str:
        return _encode(getattr(row, "pk" if name == "pk" else name) for name in fields)

    return KeysetPage(
        rows=rows,
        older=cursor(rows[-1]) if rows and has_more_older else None,
        newer=cursor(rows[0]) if rows and has_more_newer else None,
    )


def query_without(request: HttpRequest, *names: str) -> str:
    """The current query string minus `names` (to build pager and export links that keep the filters)."""
    params = request.GET.copy()
    for name in names:
        params.pop(name, None)
    return params.urlencode()


def json_fields_clean(form: forms.Form, cleaned: dict[str, Any], fields: dict[str, type]) -> dict[str, Any]:
    """Parse a form's JSON text boxes into `cleaned` (each must hold the given kind, dict or list); a form error
    for bad JSON, the wrong kind, or a string holding a control character (a `\\u0000` escape would otherwise
    reach PostgreSQL, which refuses NUL in JSONB)."""
    for name, kind in fields.items():
        text = (cleaned.get(name) or "").strip()
        try:
            value = json.loads(text) if text else kind()
        except ValueError:
            form.add_error(name, "Not valid JSON.")
            continue
        if not isinstance(value, kind):
            form.add_error(name, f"Expected a JSON {'object' if kind is dict else 'array'}.")
            continue
        try:
            control_character_refuse(value)
        except ParseError as error:
            form.add_error(name, str(error.detail))
            continue
        cleaned[name] = value
    return cleaned
