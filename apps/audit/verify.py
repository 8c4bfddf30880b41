"""Checking the audit chain: `audit_verify()` walks every event in order and reports the first broken link.

What it detects:
- an edited event: its content no longer hashes to its stored hash;
- a deleted event: a gap in the sequence numbers;
- a rewritten link: an event whose `prev_hash` is not its predecessor's hash (rows removed and renumbered);
- a truncated tail: fewer events than the chain head or a checkpoint says there were, or a checkpoint whose
  hash differs from the event it names (checkpoints can also come from an export kept elsewhere).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field

from apps.audit.models import AuditChainHead, AuditCheckpoint, AuditEvent
from apps.audit.services import chained_fields, event_digest

GENESIS_HASH = "0" * 64


@dataclass(frozen=True)
class ChainBreak:
    """The first place where the stored chain disagrees with itself or with a checkpoint."""

    seq: int
    kind: str  # "edited", "missing", "relinked", "truncated", "checkpoint_mismatch", "head_mismatch"
    detail: str


@dataclass(frozen=True)
class CheckpointRef:
    """A chain position someone wrote down: from the checkpoint table or from an exported copy of it."""

    seq: int
    hash: str
    source: str = "table"


@dataclass
class VerifyReport:
    """What `audit_verify` found: how far it walked, and the first break if any."""

    events_checked: int = 0
    last_seq: int = 0
    last_hash: str = GENESIS_HASH
    head_seq: int = 0
    checkpoints_checked: int = 0
    first_break: ChainBreak | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.first_break is None

    def as_text(self) -> str:
        lines = [
            f"events checked: {self.events_checked} (last good #{self.last_seq}, head #{self.head_seq})",
            f"checkpoints checked: {self.checkpoints_checked}",
        ]
        if self.first_break is None:
            lines.append("chain OK")
        else:
            brk = self.first_break
            lines.append(f"BROKEN at #{brk.seq} ({brk.kind}): {brk.detail}")
        return "\n".join(lines + self.notes)


def checkpoints_from_jsonl(lines: Iterable[str], *, source: str = "export") -> list[CheckpointRef]:
    """Read checkpoints from an export (`audit_export --what checkpoints`), one JSON object per line."""
    refs = []
    for line in lines:
        if line.strip():
            row = json.loads(line)
            refs.append(CheckpointRef(seq=int(row["seq"]), hash=str(row["hash"]), source=source))
    return refs


def audit_verify(*, extra_checkpoints: Iterable[CheckpointRef] = (), chunk_size: int = 2000) -> VerifyReport:
    """Walk the whole chain from the first event and report the first broken link (see the module docstring).

    The head is read first and the walk stops at it, so events appended while we walk are left for next time.
    """
    report = VerifyReport()
    # Checkpoints before the head: every checkpoint then names a position the head had already reached.
    table = [CheckpointRef(seq=seq, hash=h) for seq, h in AuditCheckpoint.objects.values_list("seq", "hash")]
    checkpoints: dict[int, list[CheckpointRef]] = {}
    for ref in [*table, *extra_checkpoints]:
        checkpoints.setdefault(ref.seq, []).append(ref)
    head = AuditChainHead.objects.filter(id=1).first()
    report.head_seq = head.seq if head else 0
    head_hash = head.hash if head else GENESIS_HASH

    expected_seq, prev_hash = 1, GENESIS_HASH
    events = AuditEvent.objects.filter(seq__lte=report.head_seq).order_by("seq").iterator(chunk_size=chunk_size)
    for event in events:
        brk = _first_break_at(event, expected_seq=expected_seq, prev_hash=prev_hash)
        if brk is None:
            for ref in checkpoints.get(event.seq, ()):
                report.checkpoints_checked += 1
                if ref.hash != event.hash:
                    brk = ChainBreak(
                        seq=event.seq,
                        kind="checkpoint_mismatch",
                        detail=f"a checkpoint ({ref.source}) holds another hash for #{event.seq} (history rewritten)",
                    )
        if brk is not None:
            # The report names the last event that still verified, so the operator knows how far to trust.
            report.last_seq, report.last_hash = expected_seq - 1, prev_hash
            report.first_break = brk
            return report
        prev_hash = event.hash
        expected_seq += 1
        report.events_checked += 1
    report.last_seq, report.last_hash = expected_seq - 1, prev_hash

    furthest = max(checkpoints, default=0)
    if report.last_seq < report.head_seq or report.last_seq < furthest:
        seen = max(report.head_seq, furthest)
        report.first_break = ChainBreak(
            seq=report.last_seq + 1,
            kind="truncated",
            detail=f"the chain head or a checkpoint saw #{seen}, the events end at #{report.last_seq} (tail deleted)",
        )
    elif report.last_hash != head_hash:
        report.first_break = ChainBreak(
            seq=report.last_seq,
            kind="head_mismatch",
            detail="the chain head's hash differs from the last event's (the head was rewritten)",
        )
    return report


def _first_break_at(event: AuditEvent, *, expected_seq: int, prev_hash: str) -> ChainBreak | None:
    if event.seq != expected_seq:
        return ChainBreak(
            seq=expected_seq,
            kind="missing",
            detail=f"events #{expected_seq}..#{event.seq - 1} are missing (deleted rows)",
        )
    if event_digest(prev_hash=event.prev_hash, fields=chained_fields(event)) != event.hash:
        return ChainBreak(
            seq=event.seq, kind="edited", detail="the event's content does not match its hash (edited row)"
        )
    if event.prev_hash != prev_hash:
        return ChainBreak(
            seq=event.seq,
            kind="relinked",
            detail="the event does not chain to its predecessor's hash (rows removed or replaced)",
        )
    return None
