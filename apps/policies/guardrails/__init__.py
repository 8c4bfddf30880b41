"""Guardrails: cheap, precompiled scanners for prompts (PII, secrets, prompt injection, blocklists) and streamed
output. The gateway uses `guardrails_check_input` on a request body and `CompiledProfile.stream_scanner()` on a
stream; profiles come compiled on the key's `EffectivePolicy`."""

from __future__ import annotations

from apps.policies.guardrails.detectors import BUILTIN_CATEGORIES, CATEGORY_DESCRIPTIONS, Finding
from apps.policies.guardrails.engine import (
    DEFAULT_PROFILE_CONFIG,
    CompiledProfile,
    GuardrailConfigError,
    GuardrailHit,
    InputVerdict,
    Scanner,
    TrialFinding,
    TrialResult,
    guardrail_categories,
    guardrail_config_check,
    guardrail_profile_compile,
    guardrail_profile_trial,
    guardrails_check_input,
)
from apps.policies.guardrails.stream import StreamChunk, StreamScanner

__all__ = [
    "BUILTIN_CATEGORIES",
    "CATEGORY_DESCRIPTIONS",
    "DEFAULT_PROFILE_CONFIG",
    "CompiledProfile",
    "Finding",
    "GuardrailConfigError",
    "GuardrailHit",
    "InputVerdict",
    "Scanner",
    "StreamChunk",
    "StreamScanner",
    "TrialFinding",
    "TrialResult",
    "guardrail_categories",
    "guardrail_config_check",
    "guardrail_profile_compile",
    "guardrail_profile_trial",
    "guardrails_check_input",
]
