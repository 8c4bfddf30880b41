"""The toxicity category: a classifier scored per sentence, off unless a profile names it, with a bounded
threshold per profile, on input (block, redact, flag) and on streamed output (redact, stop)."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from apps.policies import services as policy_services
from apps.policies.effective import merge_profile_configs
from apps.policies.guardrails import (
    BUILTIN_CATEGORIES,
    DEFAULT_PROFILE_CONFIG,
    GuardrailConfigError,
    guardrail_categories,
    guardrail_profile_compile,
    guardrails_check_input,
)
from apps.policies.guardrails.toxicity import WINDOW_CHARS, toxicity_scores
from apps.policies.models import GuardrailProfile
from tests.policies.test_guardrails import chat, stream_through

INSULT = "You are a worthless idiot."
# Scores about 0.98: toxic at the default threshold (0.8), not at 0.99.
BORDERLINE = "Shut up."


def test_toxicity_is_a_listed_builtin_category_off_in_the_default_profile():
    assert "toxicity" in BUILTIN_CATEGORIES
    assert "toxicity" in dict(guardrail_categories())
    assert "toxicity" not in DEFAULT_PROFILE_CONFIG["input"]
    default = guardrail_profile_compile(None)
    assert default.input_actions["toxicity"] == "off"
    assert not any("toxicity" in detector.categories for detector in default.input_detectors)
    assert default.scan(INSULT) == []


async def test_block_redact_and_flag_on_input():
    blocked = await guardrails_check_input(guardrail_profile_compile({"input": {"toxicity": "block"}}), chat(INSULT))
    assert blocked.blocked == "toxicity"

    body = chat(f"Here is the log. {INSULT} Thanks for the fix, it works.")
    redacted = await guardrails_check_input(guardrail_profile_compile({"input": {"toxicity": "redact"}}), body)
    assert redacted.redacted
    assert body["messages"][0]["content"] == "Here is the log. [TOXICITY] Thanks for the fix, it works."

    body = chat(INSULT)
    flagged = await guardrails_check_input(guardrail_profile_compile({"input": {"toxicity": "flag"}}), body)
    assert flagged.blocked is None
    assert body["messages"][0]["content"] == INSULT
    assert flagged.usage_entries() == [{"category": "toxicity", "action": "flag", "count": 1}]


async def test_civil_criticism_and_look_alikes_pass():
    profile = guardrail_profile_compile({"input": {"toxicity": "block"}})
    for text in (
        "This design is confusing and needs a rewrite; I'm frustrated.",
        "We drove through Scunthorpe and Essex. The pilot checked the cockpit.",
        "Take a rectal temperature if the infant is under three months.",
    ):
        verdict = await guardrails_check_input(profile, chat(text))
        assert verdict.blocked is None, text


def test_the_threshold_is_per_profile_and_bounded():
    assert 0.8 < toxicity_scores([BORDERLINE])[0] < 0.99
    assert guardrail_profile_compile({"input": {"toxicity": "flag"}}).scan(BORDERLINE)
    assert not guardrail_profile_compile({"input": {"toxicity": "flag"}, "toxicity_threshold": 0.99}).scan(BORDERLINE)
    for bad in (0.3, 1.0, "high", True, None):
        with pytest.raises(GuardrailConfigError, match="toxicity_threshold"):
            guardrail_profile_compile({"input": {"toxicity": "flag"}, "toxicity_threshold": bad})


def test_levels_merge_to_the_lowest_threshold():
    merged = merge_profile_configs([{"toxicity_threshold": 0.9}, {}, {"toxicity_threshold": 0.7}])
    assert merged["toxicity_threshold"] == 0.7
    assert "toxicity_threshold" not in merge_profile_configs([{}, {"input": {"toxicity": "flag"}}])


def test_a_toxic_sentence_split_over_chunks_is_redacted_on_output():
    scanner = guardrail_profile_compile({"output": {"toxicity": "redact"}}).stream_scanner()

    first = scanner.feed("Sure, here it is. You are a worth")
    assert first.text == "Sure, here it is. "  # the unfinished sentence is held back, the finished one released
    text, stop = stream_through(scanner, ["less idiot", ". Version 3.14 is out"])

    assert stop is None
    assert first.text + text == "Sure, here it is. [TOXICITY] Version 3.14 is out"
    assert scanner.hits == {"toxicity": 1}


def test_a_toxic_sentence_can_stop_the_stream_and_holds_at_most_one_window():
    scanner = guardrail_profile_compile({"output": {"toxicity": "stop"}}).stream_scanner()
    for _ in range(100):
        scanner.feed("and then it went on ")
        assert scanner.held <= WINDOW_CHARS

    text, stop = stream_through(scanner, [". Calm words here. ", INSULT, " More."])

    assert stop == "toxicity"
    assert "idiot" not in text
    assert "Calm words here." in text


@pytest.mark.django_db
def test_the_service_stores_an_audited_threshold_and_refuses_one_out_of_bounds(org, owner):
    from apps.audit.models import AuditEvent

    profile = policy_services.guardrail_profile_create(
        actor=owner, organization=org, name="tone", input_actions={"toxicity": "block"}, toxicity_threshold=0.9
    )
    assert profile.config()["toxicity_threshold"] == 0.9
    assert AuditEvent.objects.filter(action="guardrail_profile.create", target_id=str(profile.pk)).exists()
    with pytest.raises(ValidationError):
        policy_services.guardrail_profile_update(profile=profile, actor=owner, changes={"toxicity_threshold": 1.5})
    profile.refresh_from_db()
    assert profile.toxicity_threshold == 0.9
    assert GuardrailProfile.objects.get(pk=profile.pk).config()["input"] == {"toxicity": "block"}


def test_scores_match_the_shipped_classifier():
    from profanity_check import predict_prob

    texts = [INSULT, BORDERLINE, "Thanks for the quick fix, it works.", "Charles Dickens wrote Bleak House.", ""]
    expected = [float(value) for value in predict_prob(texts)]
    assert toxicity_scores(texts) == pytest.approx(expected, abs=1e-9)
