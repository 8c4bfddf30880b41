"""Random identifiers for the request path: request ids, response and item ids.

They are as random as `secrets.token_hex` (the operating system's generator), but drawn from a buffer that one
`os.urandom` call fills BUFFER_BYTES at a time: under load, a system call per id cost the gateway more than the
rest of building a Response did. A forked child starts with an empty buffer, never its parent's bytes.
"""

from __future__ import annotations

import os
import threading

BUFFER_BYTES = 4096

_lock = threading.Lock()
_buffer = b""
_taken = 0


def random_hex(nbytes: int) -> str:
    """`nbytes` random bytes as 2 * `nbytes` hexadecimal digits."""
    global _buffer, _taken
    with _lock:
        if _taken + nbytes > len(_buffer):
            _buffer, _taken = os.urandom(max(BUFFER_BYTES, nbytes)), 0
        drawn = _buffer[_taken : _taken + nbytes]
        _taken += nbytes
    return drawn.hex()


def _forget() -> None:
    global _buffer, _taken
    _buffer, _taken = b"", 0


os.register_at_fork(after_in_child=_forget)
