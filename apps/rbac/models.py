"""Roles: named sets of permissions a membership grants inside one organisation."""

from __future__ import annotations

from django.contrib.auth.models import Permission
from django.db import models
from django.db.models import Q


class Role(models.Model):
    """A set of permissions. Built-in roles (owner, admin, member, viewer) have no organisation;
    custom roles belong to the organisation whose owner composed them."""

    organization = models.ForeignKey(
        "orgs.Organization", on_delete=models.CASCADE, null=True, blank=True, related_name="roles"
    )
    slug = models.SlugField(max_length=64)
    name = models.CharField(max_length=100)
    description = models.TextField(blank=True)
    is_builtin = models.BooleanField(default=False)
    permissions = models.ManyToManyField(Permission, blank=True, related_name="inferia_roles")

    class Meta:
        ordering = ["organization_id", "slug"]
        constraints = [
            models.UniqueConstraint(
                fields=["slug"], condition=Q(organization__isnull=True), name="rbac_role_builtin_slug_unique"
            ),
            models.UniqueConstraint(
                fields=["organization", "slug"],
                condition=Q(organization__isnull=False),
                name="rbac_role_slug_unique_per_org",
            ),
        ]

    def __str__(self) -> str:
        return self.name


class TeamGroup(models.Model):
    """The django-guardian group that stands for a team: object grants to a team (delegating one deployment,
    key, pool or provider to it) are guardian group permissions on this group. Created on first grant."""

    team = models.OneToOneField("orgs.Team", on_delete=models.CASCADE, related_name="guardian_group")
    group = models.OneToOneField("auth.Group", on_delete=models.CASCADE, related_name="inferia_team")

    def __str__(self) -> str:
        return f"group of {self.team_id}"
