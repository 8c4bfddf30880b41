"""Draining a web process before it stops: a marker file under the data directory that `/readyz` reports.

An orchestrator stops sending a pod traffic only after its readiness fails and its endpoints are updated, which
takes seconds; the web server itself stops accepting connections at SIGTERM. So the pod's preStop hook runs
`inferia drain` first: the marker makes `/readyz` answer 503 while the server still serves, and the hook waits
long enough for the load balancer to notice before SIGTERM starts the server's own drain (INFERIA_DRAIN_SECONDS).
`inferia start web` removes a marker a previous run left (a restarted container keeps its volumes).
"""

from __future__ import annotations

from pathlib import Path

MARKER_NAME = "draining"


def drain_marker(data_dir: Path) -> Path:
    return data_dir / MARKER_NAME


def drain_begin(data_dir: Path) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    drain_marker(data_dir).touch()


def drain_clear(data_dir: Path) -> None:
    drain_marker(data_dir).unlink(missing_ok=True)


def draining(data_dir: Path) -> bool:
    return drain_marker(data_dir).exists()
