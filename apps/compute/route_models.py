"""Model routes: a served model name that is not one deployment but a weighted split over several (a canary at 10%,
an A/B test), with fallbacks tried in order when the chosen deployment cannot take the request before its first byte.

A route's name lives in the same namespace as its organisation's deployments' served names (see
`apps/compute/route_services.py`, which refuses a clash in both directions). Its targets are deployments the
organisation may use: its own, or platform deployments shared with it.
"""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from inferia_runtime.tenancy import TenantManager, TenantPath


class ModelRoute(models.Model):
    """A served model name of an organisation that sends each request to one of its split targets, drawn by weight,
    and on to its fallbacks, in order, when that one has no replica able to answer."""

    tenant_path = TenantPath(org="organization_id", grant_via="pk")

    organization = models.ForeignKey("orgs.Organization", on_delete=models.CASCADE, related_name="model_routes")
    name = models.CharField(max_length=200, help_text="The `model` clients ask for.")
    description = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    objects = TenantManager()

    class Meta:
        app_label = "compute"
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "name"],
                name="compute_model_route_name",
                violation_error_message="This organisation already routes a model under this name.",
            ),
        ]

    def __str__(self) -> str:
        return self.name


class ModelRouteTarget(models.Model):
    """One deployment of a route: a split target with its integer weight, or a fallback at its position."""

    tenant_path = TenantPath(org="route__organization_id", grant_via="route_id")

    class Role(models.TextChoices):
        SPLIT = "split", "Split"
        FALLBACK = "fallback", "Fallback"

    route = models.ForeignKey(ModelRoute, on_delete=models.CASCADE, related_name="targets")
    # A deleted deployment leaves its routes: the split goes on over the remaining targets.
    deployment = models.ForeignKey("compute.ModelDeployment", on_delete=models.CASCADE, related_name="+")
    role = models.CharField(max_length=8, choices=Role.choices, default=Role.SPLIT)
    weight = models.PositiveIntegerField(default=0, help_text="Share of the split, relative to the other targets.")
    position = models.PositiveSmallIntegerField(default=0, help_text="Order among the route's targets of its role.")

    objects = TenantManager()

    class Meta:
        app_label = "compute"
        ordering = ["route", "role", "position"]
        constraints = [
            models.UniqueConstraint(
                fields=["route", "role", "deployment"],
                name="compute_model_route_target_once",
                violation_error_message="A deployment appears once among a route's splits, once among its fallbacks.",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.route_id}:{self.role}:{self.deployment_id}"
