from __future__ import annotations

from django.apps import AppConfig


class PoliciesConfig(AppConfig):
    name = "apps.policies"
    label = "policies"
    verbose_name = "Policies"

    def ready(self) -> None:
        # The usage worker masks captured prompts and answers with the organisation's guardrails; usage cannot import
        # policies (policies reads usage), so policies hands it the mask.
        from apps.policies.selectors import organization_captures_mask
        from apps.usage.capture import capture_mask_register

        capture_mask_register(organization_captures_mask)
