"""Masking captured prompts and answers: what an organisation's guardrail profile redacts (or blocks, or stops) is
replaced by its tag, and personal data and secrets always are, whatever the profile does with them on the wire.

A capture is kept for people to read later, so it is masked more strictly than a live request: a profile that only
flags e-mail addresses still lets them reach the model, but never into a stored capture. Used by the usage worker
(registered in `PoliciesConfig.ready`), never on the hot path.
"""

from __future__ import annotations

import logging
from typing import Any

from apps.policies.guardrails import detectors as d
from apps.policies.guardrails.engine import (
    BLOCK,
    CUSTOM_PREFIX,
    DEFAULT_PROFILE_CONFIG,
    REDACT,
    STOP,
    CompiledProfile,
    GuardrailConfigError,
    guardrail_profile_compile,
    redact,
)

logger = logging.getLogger(__name__)

# Masked in every capture, even where the organisation's profile lets them through.
PERSONAL_DATA = (d.EMAIL, d.PHONE, d.CARD, d.IBAN, d.NATIONAL_ID, d.IP_ADDRESS, d.SECRET)
_MASKED_INPUT = (BLOCK, REDACT)
_MASKED_OUTPUT = (REDACT, STOP)


def capture_mask_config(config: dict[str, Any] | None) -> dict[str, Any]:
    """The profile configuration that masks a capture for a guardrail profile `config` (None: the built-in one):
    every category the profile blocks, redacts or stops is redacted, and so is all personal data."""
    base = config if config is not None else DEFAULT_PROFILE_CONFIG
    masked: dict[str, str] = {}
    for side, strong in (("input", _MASKED_INPUT), ("output", _MASKED_OUTPUT)):
        for category, action in (base.get(side) or {}).items():
            if action in strong:
                masked[category] = REDACT
    patterns = []
    for entry in base.get("patterns") or []:
        name = entry.get("name", "")
        if entry.get("input") in _MASKED_INPUT or entry.get("output") in _MASKED_OUTPUT:
            masked[CUSTOM_PREFIX + name] = REDACT
        if masked.get(CUSTOM_PREFIX + name) == REDACT:
            patterns.append({key: value for key, value in entry.items() if key not in ("input", "output")})
    for category in PERSONAL_DATA:
        masked[category] = REDACT
    return {
        "input": masked,
        "output": {},
        "blocklist": list(base.get("blocklist") or []) if masked.get(d.BLOCKLIST) == REDACT else [],
        "patterns": patterns,
        "scanners": list(base.get("scanners") or []),
        **({"toxicity_threshold": base["toxicity_threshold"]} if "toxicity_threshold" in base else {}),
    }


def capture_mask_profile(config: dict[str, Any] | None) -> CompiledProfile:
    """The compiled mask for a profile configuration; the personal-data mask alone when the profile's own parts
    cannot be compiled (a scanner class that is gone), so that a capture is never kept unmasked."""
    try:
        return guardrail_profile_compile(capture_mask_config(config))
    except GuardrailConfigError:
        logger.warning("a guardrail profile cannot be compiled for masking captures: personal data only")
        return guardrail_profile_compile({"input": dict.fromkeys(PERSONAL_DATA, REDACT)})


def capture_text_mask(profile: CompiledProfile, text: str) -> str:
    """`text` with everything `profile` finds replaced by its category's tag."""
    if not text:
        return text
    return redact(text, profile.scan(text), profile.input_actions)


__all__ = ["PERSONAL_DATA", "capture_mask_config", "capture_mask_profile", "capture_text_mask"]
