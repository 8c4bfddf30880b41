"""Random ids from a buffer of the operating system's bytes: all distinct, and never shared with a forked child."""

from __future__ import annotations

import os

from inferia_runtime.random_ids import BUFFER_BYTES, random_hex


def test_ids_are_hex_of_the_asked_size_and_distinct_across_refills():
    drawn = [random_hex(24) for _ in range(3 * BUFFER_BYTES // 24)]  # the buffer refills twice over
    assert all(len(value) == 48 and int(value, 16) >= 0 for value in drawn)
    assert len(set(drawn)) == len(drawn)
    assert len(random_hex(BUFFER_BYTES * 2)) == BUFFER_BYTES * 4  # larger than the buffer: drawn whole


def test_a_forked_child_draws_other_bytes_than_its_parent():
    random_hex(1)  # the buffer holds bytes the child would otherwise repeat
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child's side
        os.write(write, random_hex(16).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(child, 0)
    theirs = os.read(read, 64).decode()
    os.close(read)
    assert len(theirs) == 32
    assert theirs != random_hex(16)
