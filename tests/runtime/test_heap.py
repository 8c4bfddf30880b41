"""A server process's collector is settled once the application is loaded: what the import left is frozen out of
every later collection, and what comes after is still collected."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PROBE = (
    "import gc, json; before = gc.get_freeze_count(); defaults = gc.get_threshold(); import inferia_site.asgi; "
    "print(json.dumps({'before': before, 'frozen': gc.get_freeze_count(), 'defaults': defaults, "
    "'thresholds': gc.get_threshold()}))"
)


def test_loading_the_asgi_application_freezes_what_it_loaded():
    probe = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=REPO, env=os.environ, capture_output=True, text=True, timeout=120, check=True
    )
    state = json.loads(probe.stdout.strip().splitlines()[-1])
    assert state["before"] == 0
    assert state["frozen"] > 100_000  # Django, Channels and the gateway: hundreds of thousands of objects
    # Full collections spaced out; the young ones as Python has them.
    assert state["thresholds"] == [*state["defaults"][:2], 100]


def test_a_settled_heap_still_collects_cycles_made_afterwards_by_itself():
    import gc
    import weakref

    from inferia_runtime.heap import heap_settle

    thresholds = gc.get_threshold()
    try:
        heap_settle()

        class Node:
            def __init__(self) -> None:
                self.self = self  # a cycle: reference counting alone never frees it

        node = Node()
        alive = weakref.ref(node)
        del node
        kept = [[] for _ in range(gc.get_threshold()[0] * 2)]  # allocations enough for a young collection to come
        assert alive() is None
        del kept
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)
