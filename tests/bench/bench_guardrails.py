"""Benchmark of the input guardrails: the latency a full default profile adds to a 2,000-token prompt.

Builds a deterministic chat body of about 2,000 tokens (8,000 characters of prose with numbers, dates, versions and
a few personal details, the way real prompts look), then times `guardrails_check_input` on a fresh copy of it many
times. Also times a clean prompt (nothing to find), a profile with every category on, and output scanning of the
same text streamed in 4-character deltas. Prints p50/p99 in microseconds (target: default profile p50 < 1 ms).

    .venv/bin/python tests/bench/bench_guardrails.py [--iterations 2000] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "inferia_site.settings")

import django  # noqa: E402

django.setup()

from apps.policies.guardrails import (  # noqa: E402
    BUILTIN_CATEGORIES,
    DEFAULT_PROFILE_CONFIG,
    guardrail_profile_compile,
    guardrails_check_input,
)

_WORD_TEXT = (
    "the a of to and in is for that on with as it by this be are from at or an was which model request data "
    "service deployment latency throughput token prompt answer customer order invoice report quarterly revenue "
    "growth team project review meeting schedule summary analysis result performance budget forecast market "
    "please could you write explain describe compare list improve draft translate check version release"
)
WORDS = _WORD_TEXT.split()
DETAILS = (
    "Contact me at jane.doe@example.com if needed.",
    "Order 48213 shipped on 2024-03-15 with 3 items.",
    "We upgraded to version 3.11.4 last week.",
    "Call the office on +44 20 7946 0958 tomorrow.",
    "Revenue grew 12.5% to 1,250,000 in Q3.",
    "The server at 10.20.30.40 answered in 35 ms.",
)


def build_prompt(target_chars: int = 8000, seed: int = 5) -> str:
    rng = random.Random(seed)
    parts: list[str] = []
    size = 0
    while size < target_chars:
        sentence = " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 20))).capitalize() + "."
        if rng.random() < 0.08:
            sentence += " " + rng.choice(DETAILS)
        parts.append(sentence)
        size += len(sentence) + 1
    return " ".join(parts)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def time_input(config: dict | None, text: str, iterations: int) -> dict[str, float]:
    profile = guardrail_profile_compile(config)
    loop = asyncio.new_event_loop()
    samples: list[float] = []
    hits = None
    for _ in range(iterations):
        body = {
            "model": "m",
            "messages": [{"role": "system", "content": "You are helpful."}, {"role": "user", "content": text}],
        }
        started = time.perf_counter()
        coroutine = guardrails_check_input(profile, body)
        try:
            coroutine.send(None)  # it never suspends without async scanners: no event loop round trip measured
        except StopIteration as done:
            hits = done.value
        samples.append((time.perf_counter() - started) * 1e6)
    loop.close()
    return {
        "p50_us": percentile(samples, 0.5),
        "p99_us": percentile(samples, 0.99),
        "mean_us": statistics.fmean(samples),
        "hits": len(hits.hits) if hits else 0,
    }


def time_stream(config: dict, text: str, iterations: int, delta: int = 4) -> dict[str, float]:
    profile = guardrail_profile_compile(config)
    samples: list[float] = []
    chunks = [text[i : i + delta] for i in range(0, len(text), delta)]
    for _ in range(max(1, iterations // 20)):
        scanner = profile.stream_scanner()
        assert scanner is not None
        started = time.perf_counter()
        for chunk in chunks:
            scanner.feed(chunk)
        scanner.finish()
        samples.append((time.perf_counter() - started) * 1e6 / len(chunks))
    return {"per_delta_p50_us": percentile(samples, 0.5), "per_delta_p99_us": percentile(samples, 0.99)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=2000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    prompt = build_prompt()
    clean = " ".join(
        sentence for sentence in prompt.split(". ") if not any(ch.isdigit() or ch == "@" for ch in sentence)
    )
    # Every regex category (the toxicity classifier has its own benchmark, bench_toxicity.py).
    regex_categories = [category for category in BUILTIN_CATEGORIES if category != "toxicity"]
    everything = {"input": dict.fromkeys(regex_categories, "redact"), "blocklist": ["project falcon"]}
    output = {"output": {"secret": "redact", "email": "redact", "card": "redact"}}
    results = {
        "prompt_chars": len(prompt),
        "default_profile": time_input(DEFAULT_PROFILE_CONFIG, prompt, args.iterations),
        "default_profile_clean_prompt": time_input(None, clean, args.iterations),
        "all_categories": time_input(everything, prompt, args.iterations),
        "no_guardrails": time_input({"input": {}}, prompt, args.iterations),
        "output_stream_4_char_deltas": time_stream(output, prompt, args.iterations),
    }
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"prompt: {len(prompt)} characters (~{len(prompt) // 4} tokens), {args.iterations} iterations")
    for name, figures in results.items():
        if isinstance(figures, dict):
            print(f"  {name:34s} " + "  ".join(f"{key}={value:.1f}" for key, value in figures.items()))
    target = results["default_profile"]["p50_us"]
    print(f"default profile p50 {target:.0f} us: {'meets' if target < 1000 else 'MISSES'} the < 1 ms target")
    return 0 if target < 1000 else 1


if __name__ == "__main__":
    sys.exit(main())
