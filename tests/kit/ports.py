"""Ports for the servers that tests start, which no other test run on this machine can be handed at the same time.

Binding port 0 and closing the socket before the server binds leaves a window in which another process takes the
port. Instead a port comes from a range below the kernel's ephemeral range (so no socket is given it by chance) and
is reserved by an exclusive lock on a file named after it, held for the rest of this test process: concurrent test
runs (other worktrees, xdist workers) skip each other's ports, and the lock goes with the process however it ends.
"""

from __future__ import annotations

import errno
import fcntl
import os
import random
import socket
import tempfile
from pathlib import Path

# Linux hands out 32768-60999 as ephemeral ports; this range stays clear of it and of well-known services.
PORT_RANGE = range(20000, 32000)
LOCK_DIR = Path(tempfile.gettempdir()) / "inferia-test-ports"

# Lock files this process holds open: closing one would give its port back.
_held: dict[int, int] = {}


def _bindable(port: int) -> bool:
    """Nothing listens on it now (SO_REUSEADDR, as servers use, so a port in TIME_WAIT still counts as free)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                return False
            raise
    return True


def port_reserve() -> int:
    """A loopback port reserved for this test process until it exits."""
    LOCK_DIR.mkdir(exist_ok=True)
    start = random.randrange(len(PORT_RANGE))
    for offset in range(len(PORT_RANGE)):
        port = PORT_RANGE[(start + offset) % len(PORT_RANGE)]
        if port in _held:
            continue
        fd = os.open(LOCK_DIR / f"{port}.lock", os.O_CREAT | os.O_RDWR, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        if not _bindable(port):
            os.close(fd)
            continue
        _held[port] = fd
        return port
    raise RuntimeError(f"no free port left in {PORT_RANGE}")
