from __future__ import annotations

from django.apps import AppConfig


class RbacConfig(AppConfig):
    name = "apps.rbac"
    label = "rbac"
    verbose_name = "Roles and access"

    def ready(self) -> None:
        from apps.rbac import signals  # noqa: F401  keeps the index of signed-in sessions in step with login/logout
        from apps.rbac.restrict import queryset_restrict
        from inferia_runtime.tenancy import restrict_engine_install

        restrict_engine_install(queryset_restrict)
