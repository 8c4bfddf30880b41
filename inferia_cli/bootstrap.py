"""`inferia init`: bring a database to a working platform. Running it again changes nothing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

CLI_CONTEXT_AGENT = "inferia-cli"


@dataclass(frozen=True)
class InitResult:
    """What `platform_init` found or created: the default organisation and the superadmin, when configured."""

    organization: Any
    superadmin: Any | None
    changed: bool


def platform_init(*, verbosity: int = 1) -> InitResult:
    """Migrate, refresh the built-in roles, ensure the default organisation (INFERIA_DEFAULT_ORG) and the
    superadmin from INFERIA_SUPERADMIN_EMAIL / INFERIA_SUPERADMIN_PASSWORD, who owns the default organisation.

    Needs Django set up. An existing superadmin keeps its password (see `superadmin_ensure`).
    """
    from django.conf import settings
    from django.core.management import call_command

    from apps.audit.services import AuditContext
    from apps.orgs.bootstrap_services import membership_ensure, organization_ensure, superadmin_ensure
    from apps.rbac.services import roles_ensure_builtin

    call_command("migrate", interactive=False, verbosity=verbosity)
    context = AuditContext(user_agent=CLI_CONTEXT_AGENT)
    roles = roles_ensure_builtin()
    organization, changed = organization_ensure(slug=settings.INFERIA_DEFAULT_ORG, context=context)
    email, password = settings.INFERIA_SUPERADMIN_EMAIL, settings.INFERIA_SUPERADMIN_PASSWORD
    if bool(email) != bool(password):
        raise ValueError("set both INFERIA_SUPERADMIN_EMAIL and INFERIA_SUPERADMIN_PASSWORD, or neither")
    superadmin = None
    if email:
        superadmin, admin_changed = superadmin_ensure(email=email, password=password, context=context)
        _, member_changed = membership_ensure(
            user=superadmin, organization=organization, role=roles["owner"], context=context
        )
        changed = changed or admin_changed or member_changed
    return InitResult(organization=organization, superadmin=superadmin, changed=changed)
