"""Precision and recall of the built-in detectors on a labelled corpus of true positives and look-alikes
(numbers that fail Luhn, invalid IBANs, version strings shaped like IPs, 'sk-' in prose, many countries' formats).

Each line of `corpus/*.jsonl` is `{"text": ..., "expect": [categories]}`; a category found but not expected is a
false positive, one expected but not found a false negative."""

from __future__ import annotations

import json
from pathlib import Path

from apps.policies.guardrails import BUILTIN_CATEGORIES, guardrail_profile_compile

CORPUS = Path(__file__).resolve().parent / "corpus"
GATED = {"email": 0.95, "card": 0.95, "secret": 0.95}


def load_corpus() -> list[dict]:
    examples = []
    for path in sorted(CORPUS.glob("*.jsonl")):
        examples += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return examples


def measure() -> dict[str, dict[str, float]]:
    # Toxicity has no in-sample corpus (its classifier was trained elsewhere): only the held-out set measures it.
    measured = [category for category in BUILTIN_CATEGORIES if category != "toxicity"]
    profile = guardrail_profile_compile({"input": dict.fromkeys(measured, "redact")})
    counts = {category: {"tp": 0, "fp": 0, "fn": 0} for category in BUILTIN_CATEGORIES}
    for example in load_corpus():
        found = {finding.category for finding in profile.scan(example["text"])}
        expected = set(example["expect"])
        for category in found | expected:
            bucket = counts.setdefault(category, {"tp": 0, "fp": 0, "fn": 0})
            if category in found and category in expected:
                bucket["tp"] += 1
            elif category in found:
                bucket["fp"] += 1
            else:
                bucket["fn"] += 1
    results = {}
    for category, bucket in counts.items():
        tp, fp, fn = bucket["tp"], bucket["fp"], bucket["fn"]
        if tp + fp + fn == 0:
            continue
        results[category] = {
            "precision": tp / (tp + fp) if tp + fp else 1.0,
            "recall": tp / (tp + fn) if tp + fn else 1.0,
            **bucket,
        }
    return results


def test_the_corpus_is_large_and_has_look_alikes():
    examples = load_corpus()
    assert len(examples) >= 200
    assert sum(1 for example in examples if not example["expect"]) >= 80


def test_precision_and_recall_per_category(capsys):
    results = measure()
    with capsys.disabled():
        print("\ncategory            precision  recall    tp  fp  fn")
        for category, figures in sorted(results.items()):
            print(
                f"{category:18s}  {figures['precision']:9.3f}  {figures['recall']:6.3f}  "
                f"{figures['tp']:4d} {figures['fp']:3d} {figures['fn']:3d}"
            )
    for category, floor in GATED.items():
        assert results[category]["recall"] >= floor, category
        assert results[category]["precision"] >= floor, category
