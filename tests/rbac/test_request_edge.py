"""The REST request edge: a service's refusal is a 400, a bug stays a 500; and every audited whitelist update
refuses unknown fields and diffs against the stored row, whatever the caller's copy says."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import transaction
from rest_framework import exceptions

from apps.audit.services import update_begin
from apps.orgs.models import Organization
from apps.rbac.drf import service_call
from inferia_runtime.errors import DomainRefusal


def _refuse() -> None:
    raise DomainRefusal("the team belongs to another organisation")


def _break() -> None:
    raise ValueError("invalid literal for int() with base 10: 'x'")


def _invalid() -> None:
    raise DjangoValidationError({"name": "Too long."})


@pytest.mark.django_db(transaction=True)
def test_a_domain_refusal_is_a_400_naming_why():
    with pytest.raises(exceptions.ValidationError) as refused:
        service_call(_refuse)

    assert refused.value.detail == ["the team belongs to another organisation"]


@pytest.mark.django_db(transaction=True)
def test_a_validation_error_is_a_400_by_field():
    with pytest.raises(exceptions.ValidationError) as refused:
        service_call(_invalid)

    assert refused.value.detail == {"name": ["Too long."]}


@pytest.mark.django_db(transaction=True)
def test_a_plain_value_error_is_a_bug_not_a_400():
    with pytest.raises(ValueError) as broken:
        service_call(_break)

    assert not isinstance(broken.value, DomainRefusal)


def test_an_update_refuses_fields_outside_its_whitelist(org):
    with pytest.raises(DomainRefusal, match="cannot change slug"), transaction.atomic():
        update_begin(org, changes={"slug": "x"}, allowed=("name",))


def test_an_update_diffs_against_the_stored_row_not_the_callers_copy(org):
    stale = Organization.objects.get(pk=org.pk)
    stale.name = "edited by a form already"

    with transaction.atomic():
        row, before = update_begin(stale, changes={"name": "Acme Ltd"}, allowed=("name",))

    assert before == {"name": "Acme"}
    assert row.name == "Acme Ltd"
    assert row is not stale
