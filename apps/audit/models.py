"""The tamper-evident audit log: events chained by hash, the chain head, and checkpoints of it."""

from __future__ import annotations

from typing import Any, NoReturn, TypeVar

from django.conf import settings
from django.db import models
from django.utils import timezone

from inferia_runtime.tenancy import TenantPath, TenantQuerySet

# Audit rows outlive what they describe: their references are kept as plain ids
# (no database constraint, nothing cascades), so deleting a key or a user never rewrites history.
_HISTORY_FK: dict[str, Any] = {"on_delete": models.DO_NOTHING, "db_constraint": False, "null": True, "blank": True}


class AuditAppendOnlyError(Exception):
    """Raised when code tries to change or delete history through the ORM (the database refuses it too)."""


_Row = TypeVar("_Row", bound=models.Model)


class AppendOnlyQuerySet(TenantQuerySet[_Row]):
    """A queryset that can read and insert, never update or delete: the ORM half of append-only history. Audit
    events are tenant data too: `.restrict()` narrows them to what someone may read."""

    def update(self, **kwargs: Any) -> NoReturn:
        raise AuditAppendOnlyError(f"{self.model._meta.label} is append-only: update refused")

    def delete(self) -> NoReturn:
        raise AuditAppendOnlyError(f"{self.model._meta.label} is append-only: delete refused")

    def bulk_update(self, objs: Any, fields: Any, batch_size: int | None = None) -> NoReturn:
        raise AuditAppendOnlyError(f"{self.model._meta.label} is append-only: bulk update refused")

    _raw_delete = delete  # type: ignore[assignment]  # what Django's deletion collector calls for fast deletes


class AppendOnlyModel(models.Model):
    """Rows that are written once: saving an existing row or deleting one raises. A PostgreSQL trigger
    (migration audit 0004) refuses UPDATE, DELETE and TRUNCATE underneath, for code that bypasses the ORM."""

    objects = AppendOnlyQuerySet.as_manager()

    class Meta:
        abstract = True

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:
            raise AuditAppendOnlyError(f"{self._meta.label} #{self.pk} is append-only: save of an existing row refused")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise AuditAppendOnlyError(f"{self._meta.label} #{self.pk} is append-only: delete refused")


class AuditEvent(AppendOnlyModel):
    """One management change, login or key event. Append-only and chained: `seq` is gapless, and each
    event's `hash` covers its content and the previous event's hash."""

    tenant_path = TenantPath(org="organization_id")

    class Outcome(models.TextChoices):
        SUCCESS = "success", "Success"
        FAILURE = "failure", "Failure"
        DENIED = "denied", "Denied"

    seq = models.BigIntegerField(unique=True, editable=False)
    occurred_at = models.DateTimeField(default=timezone.now, editable=False)
    organization = models.ForeignKey("orgs.Organization", related_name="+", **_HISTORY_FK)
    actor_user = models.ForeignKey(settings.AUTH_USER_MODEL, related_name="+", **_HISTORY_FK)
    actor_key = models.ForeignKey("keys.ApiKey", related_name="+", **_HISTORY_FK)
    actor_label = models.CharField(max_length=300, help_text="Who, as they were named then (or 'system').")
    action = models.CharField(max_length=100)
    target_type = models.CharField(max_length=100, blank=True)
    target_id = models.CharField(max_length=64, blank=True)
    target_repr = models.CharField(max_length=300, blank=True)
    changes = models.JSONField(default=dict, blank=True, help_text="Before/after of changed fields; secrets masked.")
    ip_address = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=500, blank=True)
    request_id = models.CharField(max_length=64, blank=True)
    outcome = models.CharField(max_length=16, choices=Outcome.choices, default=Outcome.SUCCESS)
    prev_hash = models.CharField(max_length=64, editable=False)
    hash = models.CharField(max_length=64, editable=False)

    class Meta:
        ordering = ["-seq"]
        indexes = [
            models.Index(fields=["organization", "-occurred_at"]),
            models.Index(fields=["action", "-occurred_at"]),
            models.Index(fields=["target_type", "target_id"]),
        ]

    def __str__(self) -> str:
        return f"#{self.seq} {self.action} by {self.actor_label}"


class AuditChainHead(models.Model):
    """The single row that serialises appends to the audit chain: it holds the last sequence number and hash,
    and is locked for the length of each append so that sequence numbers have no gaps."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1, editable=False)
    seq = models.BigIntegerField(default=0)
    hash = models.CharField(max_length=64, default="0" * 64)

    class Meta:
        constraints = [models.CheckConstraint(condition=models.Q(id=1), name="audit_chain_head_singleton")]

    def __str__(self) -> str:
        return f"audit chain at #{self.seq}"


class AuditCheckpoint(AppendOnlyModel):
    """A copy of the chain head (sequence number and hash) taken periodically by beat and on demand, kept out of
    the event table and exportable, so that deleting the newest events (and rewinding the head) is detected."""

    created_at = models.DateTimeField(default=timezone.now, editable=False)
    seq = models.BigIntegerField(editable=False)
    hash = models.CharField(max_length=64, editable=False)
    taken_by = models.CharField(max_length=300, help_text="'beat', 'system' or the user who asked for it.")

    class Meta:
        ordering = ["-seq", "-id"]
        indexes = [models.Index(fields=["-seq"], name="audit_checkpoint_seq_idx")]

    def __str__(self) -> str:
        return f"checkpoint at #{self.seq}"
