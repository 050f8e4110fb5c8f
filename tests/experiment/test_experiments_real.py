"""The main scenarios as real-process experiments (short loads), each with its verdict as expected:
leader kill, leader pause, controller kill, two of three replicas down, acks=1 loss."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab.experiment.runner import RunOptions, run_experiment
from lab.experiment.scenario import load

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(120)]
DURATION_S = 6.0


def _run(name: str, tmp_path: Path) -> dict:
    return _run_dir(name, tmp_path)[1]


def _run_dir(name: str, tmp_path: Path) -> tuple[Path, dict]:
    run_dir, results = run_experiment(load(name), RunOptions(duration_s=DURATION_S, seed=11, out=tmp_path,
                                                             progress=False))
    for artifact in ("history.jsonl", "results.json", "summary.txt", "report.html", "throughput.png"):
        assert (run_dir / artifact).is_file(), artifact
    assert results["expected"]["as_expected"], (run_dir / "summary.txt").read_text()
    assert results["stats"]["acknowledged"] > 0
    return run_dir, results


def test_leader_kill(tmp_path: Path) -> None:
    results = _run("leader-kill", tmp_path)
    step = next(s for s in results["timeline"]["failovers"] if s["partition"] == 0)
    assert step["new_leader"] is not None and step["new_epoch"] >= 1 and step["first_ack_after_ms"] is not None
    assert results["lost"]["acknowledged_lost"] == 0


def test_leader_pause(tmp_path: Path) -> None:
    results = _run("leader-pause", tmp_path)
    step = next(s for s in results["timeline"]["failovers"] if s["partition"] == 0)
    assert step["fenced_after_ms"] is not None and step["new_leader"] is not None


def test_controller_kill(tmp_path: Path) -> None:
    results = _run("controller-kill", tmp_path)
    assert results["anomalies"].get("lost-write") is None


def test_two_down_refuses_instead_of_acknowledging(tmp_path: Path) -> None:
    run_dir, results = _run_dir("two-down", tmp_path)
    from lab.history import OK, History

    refused = [s for s in History.load(run_dir / "history.jsonl").sends if s.error == "NOT_ENOUGH_REPLICAS"]
    assert refused and all(s.outcome != OK for s in refused)  # refused, never acknowledged
    assert "aborted-read" not in results["anomalies"]


def test_acks_1_loss_is_counted_exactly(tmp_path: Path) -> None:
    results = _run("acks1-loss", tmp_path)
    lost = results["lost"]
    assert lost["acknowledged_lost"] > 0
    assert lost["acknowledged_lost"] == lost["records_truncated"], lost
    assert not results["verdict"]["durable"] and results["verdict"]["ok"]
