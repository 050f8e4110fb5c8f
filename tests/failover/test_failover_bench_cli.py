"""``brokerlab bench failover`` end to end on its own real cluster (a couple of trials per mode)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lab.local_cluster import node_environment

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(120)]
ROOT = Path(__file__).resolve().parents[2]


def bench(tmp_path: Path, *args: str) -> dict:
    command = [sys.executable, "-m", "cli.main", "bench", "failover", "--json", "--data-dir", str(tmp_path / "run"),
               *args]
    done = subprocess.run(command, cwd=tmp_path, env=node_environment(), capture_output=True, text=True, timeout=110)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def test_hard_mode_measures_every_trial(tmp_path: Path) -> None:
    data = bench(tmp_path, "--trials", "2")
    assert data["mode"] == "hard" and data["count"] == 2 and len(data["samples_ms"]) == 2
    assert 0 < data["p50"] <= data["p99"] == data["max"] < 10_000
    assert data["failed"] == 0 and data["acknowledged"] == data["sent"] > 0
    assert all(t["new_leader"] not in (-1, t["victim"]) for t in data["trials"])
    assert data["settings"]["cluster_config"]["broker.session.timeout.ms"]
    assert (Path(data["data_dir"]) / "logs" / "controller.log").exists()


def test_controlled_mode_reports_leadership_moves_exits_and_failed_sends(tmp_path: Path) -> None:
    data = bench(tmp_path, "--mode", "controlled", "--trials", "2")
    assert data["mode"] == "controlled" and data["count"] == 2
    assert data["failed_sends_during_steps"] == 0
    assert all(t["exit_ms"] is not None and t["exit_ms"] > 0 for t in data["trials"])
