"""Precision and recall of each built-in detector on the held-out set (`heldout/<category>.jsonl`), printed beside
the in-sample figures of `corpus/`, and gated per category.

The held-out set was written once and never used to tune a detector (the corpus under `corpus/` was); the minimums
below are its first measurement rounded down a little. Each file holds at least 200 positives and 200 hard
negatives (look-alikes) of its category; a category is scored on its own file with only that category switched on,
so one detector's span never hides another's."""

from __future__ import annotations

import json
from pathlib import Path

from apps.policies.guardrails import BUILTIN_CATEGORIES, guardrail_profile_compile
from tests.policies.test_corpus import load_corpus, measure

HELDOUT = Path(__file__).resolve().parent / "heldout"

# The minimum precision and recall per category on the held-out set.
# First measurement (precision, recall): 1.000/1.000 for card, email, iban, ip_address, national_id and phone;
# hidden_characters 0.909/1.000 (emoji and Persian text join with U+200D/U+200C); prompt_injection 0.952/0.833
# (paraphrased overrides are missed; "system override" in prose is found); secret 0.996/1.000 (an AKIA placeholder);
# toxicity 0.966/0.938 at the default threshold 0.8 (names like "Dick Van Dyke" score high, mild insults such as
# "clown" and other languages low).
MINIMUMS: dict[str, tuple[float, float]] = {
    "card": (0.98, 0.98),
    "email": (0.98, 0.98),
    "hidden_characters": (0.88, 0.98),
    "iban": (0.98, 0.98),
    "ip_address": (0.98, 0.98),
    "national_id": (0.98, 0.98),
    "phone": (0.98, 0.98),
    "prompt_injection": (0.93, 0.80),
    "secret": (0.97, 0.98),
    "toxicity": (0.95, 0.92),
}


def load(category: str) -> list[dict]:
    path = HELDOUT / f"{category}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def heldout_categories() -> list[str]:
    return sorted(path.stem for path in HELDOUT.glob("*.jsonl") if path.stem in BUILTIN_CATEGORIES)


def measure_heldout(category: str) -> dict[str, float]:
    profile = guardrail_profile_compile({"input": {category: "redact"}})
    tp = fp = fn = 0
    for example in load(category):
        found = any(finding.category == category for finding in profile.scan(example["text"]))
        expected = category in example["expect"]
        tp += found and expected
        fp += found and not expected
        fn += expected and not found
    return {
        "precision": tp / (tp + fp) if tp + fp else 1.0,
        "recall": tp / (tp + fn) if tp + fn else 1.0,
        "tp": tp,
        "fp": fp,
        "fn": fn,
    }


def test_each_file_has_200_positives_and_200_look_alikes_not_in_the_corpus():
    in_sample = {example["text"] for example in load_corpus()}
    files = sorted(HELDOUT.glob("*.jsonl"))
    assert len(files) >= 9
    for path in files:
        examples = load(path.stem)
        assert sum(1 for example in examples if example["expect"] == [path.stem]) >= 200, path.name
        assert sum(1 for example in examples if example["expect"] == []) >= 200, path.name
        assert not in_sample & {example["text"] for example in examples}, path.name


def test_heldout_precision_and_recall_per_category(capsys):
    categories = heldout_categories()
    assert sorted(MINIMUMS) == categories
    in_sample = measure()
    results = {category: measure_heldout(category) for category in categories}
    with capsys.disabled():
        print("\n                    held-out                        in-sample         minimum")
        print("category            precision  recall   tp  fp  fn   precision  recall   precision  recall")
        for category, figures in results.items():
            own = in_sample.get(category)
            own_text = f"{own['precision']:9.3f}  {own['recall']:6.3f}" if own else f"{'-':>9s}  {'-':>6s}"
            print(
                f"{category:18s}  {figures['precision']:9.3f}  {figures['recall']:6.3f} {figures['tp']:4d} "
                f"{figures['fp']:3d} {figures['fn']:3d}   {own_text}   {MINIMUMS[category][0]:9.2f}  "
                f"{MINIMUMS[category][1]:6.2f}"
            )
    for category, figures in results.items():
        precision, recall = MINIMUMS[category]
        assert figures["precision"] >= precision, category
        assert figures["recall"] >= recall, category
