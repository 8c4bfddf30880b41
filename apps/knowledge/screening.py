"""Screening chunks at ingestion: retrieved text is untrusted input that will sit inside a prompt.

The gateway's own guardrail detectors (apps.policies.guardrails) run on each chunk as plain functions, in process.
Only the categories that mean "this text tries to steer the model" mark a chunk: instruction overrides and
jailbreaks (`prompt_injection`) and invisible characters a reader cannot see but a model reads
(`hidden_characters`: tag characters, bidirectional controls, zero-width spaces; not the soft hyphens and
zero-width joiners ordinary text in many scripts and emoji is full of). Personal data in a document is what a
knowledge base is often for; the request's own guardrail profile deals with it when the text is used.
"""

from __future__ import annotations

from apps.policies.guardrails.detectors import (
    HIDDEN_CHARACTERS,
    PROMPT_INJECTION,
    Detector,
    Finding,
    builtin_detectors,
)

FLAG_CATEGORIES = (PROMPT_INJECTION, HIDDEN_CHARACTERS)
# Invisible characters that ordinary documents carry: soft hyphens (word processors), zero-width (non-)joiners
# (Persian, Indic scripts, emoji sequences), a byte-order mark.
_ORDINARY_INVISIBLE = frozenset("\u00ad\u200c\u200d\ufeff")


def _screening_detectors() -> tuple[Detector, ...]:
    return tuple(
        detector
        for detector in builtin_detectors()
        if any(category in FLAG_CATEGORIES for category in detector.categories)
    )


def chunk_flag_categories(text: str) -> list[str]:
    """The categories of FLAG_CATEGORIES the detectors find in `text`, in that order; empty for a clean chunk."""
    found: list[Finding] = []
    for detector in _screening_detectors():
        detector.scan(text, found)
    categories = {
        finding.category
        for finding in found
        if finding.category != HIDDEN_CHARACTERS or not set(text[finding.start : finding.end]) <= _ORDINARY_INVISIBLE
    }
    return [category for category in FLAG_CATEGORIES if category in categories]
