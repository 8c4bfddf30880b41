"""The `python -m inferia_sim` process: flags, environment, the start-up line and a clean exit on SIGTERM."""

from __future__ import annotations

import json
import os
import sys
import urllib.request
from pathlib import Path

import pytest

from inferia_sim.cli import config_from_args
from inferia_sim.config import FailureType
from tests.kit.ports import port_reserve
from tests.kit.processes import TestProcess

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_flags_build_the_config():
    argv = ["--model", "a", "--model", "b", "--itl-ms", "5", "--failure-rate", "0.5"]
    config, _level = config_from_args([*argv, "--failure-types", "timeout,http_503"])

    assert config.models == ("a", "b")
    assert config.itl_ms == 5
    assert config.failure_rate == 0.5
    assert config.failure_types == (FailureType.TIMEOUT, FailureType.HTTP_503)


def test_environment_variables_set_the_defaults(monkeypatch):
    monkeypatch.setenv("INFERIA_SIM_MODEL", "x,y")
    monkeypatch.setenv("INFERIA_SIM_TTFT_MS", "250")
    monkeypatch.setenv("INFERIA_SIM_MAX_NUM_SEQS", "8")

    config, _level = config_from_args([])

    assert config.models == ("x", "y")
    assert config.ttft_ms == 250
    assert config.max_num_seqs == 8


def test_an_unknown_failure_type_is_rejected():
    with pytest.raises(SystemExit):
        config_from_args(["--failure-types", "explode"])


def test_the_process_logs_its_url_serves_and_exits_cleanly_on_sigterm():
    port = port_reserve()
    args = [sys.executable, "-m", "inferia_sim", "--port", str(port), "--model", "m1"]
    process = TestProcess(args, env={**os.environ, "PYTHONUNBUFFERED": "1"}, port=port, name="inferia-sim")
    try:
        startup_line = process.wait_line(f"http://127.0.0.1:{port}", timeout=30)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=5) as response:
            models = json.load(response)
        exit_code = process.stop()
    finally:
        process.kill_everything()

    assert process.lines[0] == startup_line  # the first thing it says
    assert "m1" in startup_line
    assert [card["id"] for card in models["data"]] == ["m1"]
    assert exit_code == 0
