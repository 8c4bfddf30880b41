"""Which of many strings occur in a text, in both forms: one search per needle and the compiled single pass (where it
was built) must give the same answers, and `Needles` must answer for str as `in` does; how often each occurs, as
`bytes.count` counts."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from inferia_runtime import text_search
from inferia_runtime.text_search import Needles, OwnedNeedles, found_among_searched

try:
    from inferia_runtime._text_search import found_among as compiled
except ImportError:  # no C compiler where this checkout was installed: the searches alone serve
    compiled = None

# Few distinct bytes, so that needles often occur, start alike, overlap and end just past the text.
BYTES = st.lists(st.sampled_from([b"a", b"b", b"ab", b"\x00", b"\xff", b"\xc3\xa9"]), max_size=24).map(b"".join)
NEEDLES = st.lists(st.lists(st.sampled_from([b"a", b"b", b"\x00", b"\xff", b"\xc3"]), max_size=4).map(b"".join))


@pytest.mark.skipif(compiled is None, reason="the compiled helper was not built here (no C compiler)")
@given(BYTES, NEEDLES)
@example(b"ab", [b"b", b"ab", b"abc", b""])  # a one-byte needle at the end; one longer than what is left
@example(b"aab", [b"ab", b"aab", b"ab"])  # the same needle twice; one found inside another's start
@example(b"", [b"a", b""])
def test_the_compiled_pass_answers_as_one_search_per_needle_does(text, needles):
    assert compiled(text, tuple(needles)) == found_among_searched(text, tuple(needles))


@pytest.mark.skipif(compiled is None, reason="the compiled helper was not built here (no C compiler)")
def test_the_compiled_pass_takes_bytes_and_a_tuple_of_bytes_only():
    for arguments in [("text", (b"a",)), (b"text", [b"a"]), (b"text", ("a",)), (b"text",)]:
        with pytest.raises(TypeError):
            compiled(*arguments)


@given(
    st.text(alphabet=st.sampled_from(["a", "b", "é", "\u2028", "\ud800", "日", "\U0001f600"]), max_size=16),
    st.lists(st.text(alphabet=st.sampled_from(["a", "b", "é", "\ud800", "日", "\U0001f600", "\xa9"]), max_size=3)),
)
def test_needles_answer_for_any_str_as_in_does(text, strings):
    """UTF-8 keeps the answer: no character's bytes start inside another's (a lone surrogate included), so e.g.
    "©" (c2 a9) is never found inside "é" (c3 a9)."""
    assert Needles(strings).found_in(text) == bytes(string in text for string in strings)


def test_the_module_serves_the_compiled_pass_where_it_was_built():
    assert text_search.found_among is (compiled or found_among_searched)


@given(st.text(alphabet=st.sampled_from(["1", "0", "a", " ", "\u0663", "\uff13", "\u00b2", "\u2155", "_", "\ud800"])))
def test_digit_runs_start_where_the_pattern_finds_them(text):
    """Decimal digits as `\\d` takes them in a str pattern: Arabic-Indic and fullwidth ones too, no superscript or
    vulgar fraction."""
    assert text_search.digit_runs(text) == text_search.digit_runs_matched(text)


@pytest.mark.skipif(compiled is None, reason="the compiled helper was not built here (no C compiler)")
def test_digit_runs_take_a_str_only():
    with pytest.raises(TypeError):
        text_search.digit_runs(b"123")  # type: ignore[arg-type]


@given(
    st.text(alphabet=st.sampled_from(["a", "b", "é", "-"]), max_size=12),
    st.lists(st.lists(st.text(alphabet=st.sampled_from(["a", "b", "é", "-"]), min_size=1, max_size=3), max_size=3)),
)
def test_owned_needles_name_the_owners_of_the_strings_in_a_text(text, owned):
    """Owners are named by their index; several may share a string; one without strings is never named."""
    expected = {owner for owner, strings in enumerate(owned) if any(string in text for string in strings)}
    assert set(OwnedNeedles(owned).owners_in(text)) == expected


@given(BYTES, NEEDLES)
@example(b"aaaa", [b"aa", b"a", b""])  # no overlaps, as `bytes.count`; the empty needle at every position
@example(b"", [b"a", b""])
def test_counts_are_those_of_bytes_count(text, needles):
    assert text_search.counted_among(text, tuple(needles)) == tuple(text.count(needle) for needle in needles)
    assert text_search.counted_among_searched(text, tuple(needles)) == tuple(text.count(n) for n in needles)


@pytest.mark.skipif(compiled is None, reason="the compiled helper was not built here (no C compiler)")
def test_the_compiled_count_takes_bytes_and_a_tuple_of_bytes_only():
    for arguments in [("text", (b"a",)), (b"text", [b"a"]), (b"text", ("a",)), (b"text",)]:
        with pytest.raises(TypeError):
            text_search.counted_among(*arguments)
