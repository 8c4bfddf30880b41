"""The check that a copied piece of JSON is one JSON string, in both its forms: the pattern and the compiled helper
(where it was built) must take exactly the same pieces."""

from __future__ import annotations

import json

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from inferia_runtime import json_copy

try:
    from inferia_runtime._json_copy import string_between as compiled
except ImportError:  # no C compiler where this checkout was installed: the pattern alone serves
    compiled = None

FORMS = [json_copy.string_between_matched]
if compiled is not None:
    FORMS.append(compiled)
HEAD = b'data: {"choices":[{"delta":{"content":'
TAIL = b"}}]}\n\n"


@pytest.mark.parametrize("string_between", FORMS)
@given(
    st.text(max_size=12, alphabet=st.sampled_from('ab"\\\n\t\x00\x1f\u00e9\u2028/')),
    st.booleans(),
    st.sampled_from([b'"', b"\n", b"\x01", b"\x1f"]),
)
def test_the_copy_check_takes_every_json_string_and_nothing_that_breaks_out_of_one(
    string_between, text, ascii_only, intruder
):
    """What is copied unparsed must be one JSON string: every encoder's string is taken; with an unescaped quote or
    a raw control character put inside it (either would break out of the event it is copied into) it is not."""
    encoded = json.dumps(text, ensure_ascii=ascii_only).encode()
    assert string_between(HEAD + encoded + TAIL, HEAD, TAIL) == encoded
    # Just inside either quote, where no escape can take the intruder in.
    assert string_between(HEAD + encoded[:1] + intruder + encoded[1:] + TAIL, HEAD, TAIL) is None
    assert string_between(HEAD + encoded[:-1] + intruder + encoded[-1:] + TAIL, HEAD, TAIL) is None


PIECE = st.binary(max_size=10) | st.lists(st.sampled_from([b'"', b"\\", b"\n", b"\x1f", b" ", b"a", b"\xe9"])).map(
    b"".join
)


@pytest.mark.skipif(compiled is None, reason="the compiled helper was not built here (no C compiler)")
@given(PIECE, PIECE, PIECE, PIECE)
@example(b"h", b'"\\"', b"", b"t")  # the last quote escaped: the string never closes
@example(b"h", b'"\\\n"', b"", b"t")  # a newline escaped: JSON has no such escape
@example(b"ht", b"", b"", b"ht")  # head and tail overlap in a piece too short for both
def test_the_compiled_check_answers_as_the_pattern_does(head, middle, suffix, tail):
    for data in (head + middle + suffix + tail, head + middle + tail, middle):
        assert compiled(data, head, tail) == json_copy.string_between_matched(data, head, tail)


@pytest.mark.skipif(compiled is None, reason="the compiled helper was not built here (no C compiler)")
def test_the_compiled_check_takes_bytes_only():
    with pytest.raises(TypeError):
        compiled("text", b"", b"")
    with pytest.raises(TypeError):
        compiled(b"", b"")


def test_json_strings_takes_a_run_only_when_every_piece_is_one():
    assert json_copy.json_strings([b'"a"', b'"b\\"c"'])
    assert not json_copy.json_strings([b'"a"', b'"b"c"'])
    assert not json_copy.json_strings([b'"a\n"'])
