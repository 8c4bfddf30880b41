"""The simulator's embeddings have a lexical geometry: texts sharing words are close, unrelated ones are not, so
that retrieval over them can be tested for finding the right text."""

from __future__ import annotations

import math

from inferia_sim.inference import embedding_vector

DOCUMENTS = {
    "gpu": "The GPU has 4.8 TB/s of HBM3e memory bandwidth and 141 GB of memory.",
    "cooking": "Simmer the tomato sauce for twenty minutes and season it with basil.",
    "taxes": "Income tax returns are due in April; deductions lower the taxable amount.",
}


def _cosine(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def test_a_question_is_closest_to_the_text_that_shares_its_words():
    query = embedding_vector("How much memory bandwidth does the GPU have?", 384)
    ranked = sorted(DOCUMENTS, key=lambda name: -_cosine(query, embedding_vector(DOCUMENTS[name], 384)))
    assert ranked[0] == "gpu"
    assert _cosine(query, embedding_vector(DOCUMENTS["gpu"], 384)) > 2 * _cosine(
        query, embedding_vector(DOCUMENTS["cooking"], 384)
    )


def test_vectors_are_unit_length_of_the_asked_size_and_deterministic():
    vector = embedding_vector("memory bandwidth", 256)
    assert len(vector) == 256
    assert math.isclose(math.sqrt(sum(x * x for x in vector)), 1.0)
    embedding_vector.cache_clear()
    assert embedding_vector("memory bandwidth", 256) == vector


def test_a_text_without_words_still_embeds_to_a_unit_vector():
    assert math.isclose(sum(x * x for x in embedding_vector("?!", 64)), 1.0)
