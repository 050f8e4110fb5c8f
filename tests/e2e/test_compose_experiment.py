"""End to end: a failover experiment on the docker-compose cluster (``--target compose``).

Opt-in like tests/e2e/test_compose.py: runs only with ``BROKERLAB_E2E=1`` and a reachable Docker
engine (plus a compose client); otherwise it is skipped with the reason.

    BROKERLAB_E2E=1 .venv/bin/python -m pytest -m e2e tests/e2e/test_compose_experiment.py -v

``brokerlab experiment run leader-kill --target compose`` builds the image (cached layers), brings
its own compose project up, SIGKILLs the leader's container through docker, restarts it, checks
the history and tears everything down (volumes included). The run folder must be the one a local
run leaves, with the node logs kept from the containers.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from lab.compose_cluster import ComposeCluster, engine_status
from lab.processes import brokerlab_command

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(600)]

E2E_ENV = "BROKERLAB_E2E"
EXPERIMENT_PROJECT = "brokerlab-experiment"  # lab.experiment.targets.ComposeTarget's project
RUN_FILES = ("history.jsonl", "results.json", "summary.txt", "report.html", "throughput.png", "leaders.png",
             "acked_vs_read.png")


def _skip_reason() -> str | None:
    if os.environ.get(E2E_ENV, "").strip() != "1":
        return f"opt-in: set {E2E_ENV}=1 to run the docker-compose experiment test (needs a Docker engine)"
    ok, why = engine_status()
    return None if ok else f"{why}; the docker-compose experiment test needs a Docker engine"


def test_leader_kill_experiment_on_compose(tmp_path: Path) -> None:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    env = {k: v for k, v in os.environ.items() if k != "BROKERLAB_BOOTSTRAP"}
    command = [*brokerlab_command(), "experiment", "run", "leader-kill", "--target", "compose", "--duration", "10s",
               "--seed", "7", "--out", str(tmp_path), "--no-progress", "--json"]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=480, env=env)
    finally:
        leftovers = ComposeCluster(project=EXPERIMENT_PROJECT).leftovers()
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    assert not any(leftovers.values()), f"the experiment left {leftovers}"

    results = json.loads(result.stdout)
    assert results["target"] == "compose"
    assert results["verdict"]["ok"] and results["expected"]["as_expected"], results["expected"]
    assert results["stats"]["acknowledged"] > 0
    assert results["lost"]["acknowledged_lost"] == 0 and results["lost"]["unseen"] == 0
    step = next(s for s in results["timeline"]["failovers"] if s["partition"] == 0)
    assert step["was_leader"] and step["fenced_after_ms"] is not None
    assert step["new_leader"] is not None and f"broker-{step['new_leader']}" != step["node"]
    assert step["new_epoch"] >= 1 and step["first_ack_after_ms"] is not None

    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    for name in RUN_FILES:
        assert (run_dir / name).is_file() and (run_dir / name).stat().st_size > 0, name
    assert json.loads((run_dir / "results.json").read_text())["run_id"] == run_dir.name
    history = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    faults = [e for e in history if e.get("type") == "event" and e.get("kind") in ("fault", "heal")]
    assert [(e["kind"], e["name"]) for e in faults] == [("fault", "kill"), ("heal", "restart")], faults
    assert faults[0]["node"] == faults[1]["node"] == step["node"]
    for node in ("controller", "broker-1", "broker-2", "broker-3"):  # the containers' logs, kept
        assert "event=" in (run_dir / "cluster" / "logs" / f"{node}.log").read_text(), node
