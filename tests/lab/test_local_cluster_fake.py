"""LocalCluster with stand-in node processes (tests/lab/fake_node.py): real processes, real
health probes and signals, but no dependence on the controller and broker mains."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from brokerlab.errors import ErrorCode
from lab.local_cluster import ClusterError, LocalCluster
from lab.processes import pid_alive

FAKE = [sys.executable, str(Path(__file__).with_name("fake_node.py"))]


def plan(tmp_path: Path, brokers: int = 2, **kwargs) -> LocalCluster:
    return LocalCluster.plan(brokers=brokers, data_dir=tmp_path / "run", controller_command=FAKE,
                             broker_command=FAKE, **kwargs)


def test_up_status_down_leaves_no_process(tmp_path: Path) -> None:
    cluster = plan(tmp_path, config={"log.flush.policy": "batch"})
    cluster.start(timeout_s=20)
    try:
        statuses = cluster.status()
        assert [s.name for s in statuses] == ["controller", "broker-1", "broker-2"]
        assert all(s.alive and s.health == "SERVING" and s.healthy for s in statuses)
        pids = [s.pid for s in statuses]
        # Another process (the next CLI command) sees the same cluster through the state file.
        again = LocalCluster.load(tmp_path / "run")
        assert [n.pid for n in again.nodes] == pids
        assert all(s.healthy for s in again.status())
        state = json.loads((tmp_path / "run" / "cluster.json").read_text())
        assert state["config"] == {"log.flush.policy": "batch"}
        assert state["nodes"][1]["command"][-2:] == ["--config", "log.flush.policy=batch"]
        assert Path(state["nodes"][0]["log"]).read_text().count("NodeStarted") == 1
    finally:
        killed = LocalCluster.load(tmp_path / "run").stop(timeout_s=10)
    assert killed == []
    assert not any(pid_alive(pid) for pid in pids)
    cluster.stop()  # idempotent


def test_bootstrap_and_node_lookup(tmp_path: Path) -> None:
    cluster = plan(tmp_path, brokers=3)
    assert len(cluster.bootstrap_servers()) == 3
    assert len(set(n.address for n in cluster.nodes)) == 4
    assert cluster.node("broker-2").id == 2
    assert cluster.node("2").name == "broker-2"
    with pytest.raises(ClusterError):
        cluster.node("broker-9")


def test_node_that_dies_at_startup_fails_fast_and_stops_the_rest(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("FAKE_NODE_EXIT", "2")
    cluster = plan(tmp_path)
    with pytest.raises(ClusterError) as info:
        cluster.start(timeout_s=20)
    assert "broker-2 exited during start-up (exit code 3)" in str(info.value)
    assert "StartupFailed" in str(info.value)
    assert info.value.code == ErrorCode.BROKER_NOT_AVAILABLE
    assert not any(pid_alive(n.pid) for n in cluster.nodes)


def test_stop_escalates_to_sigkill(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("FAKE_NODE_IGNORE_TERM", "1")
    cluster = plan(tmp_path, brokers=1)
    cluster.start(timeout_s=20)
    killed = cluster.stop(timeout_s=0.5)
    assert killed == ["broker-1", "controller"]
    assert not any(pid_alive(n.pid) for n in cluster.nodes)


def test_stop_and_start_one_node(tmp_path: Path) -> None:
    cluster = plan(tmp_path)
    cluster.start(timeout_s=20)
    try:
        old_pid = cluster.node("broker-1").pid
        assert cluster.stop_node("broker-1")
        status = {s.name: s for s in cluster.status(probe_timeout_s=0.2)}
        assert not status["broker-1"].alive and status["broker-1"].health == "UNREACHABLE"
        assert status["broker-2"].healthy
        cluster.start_node("broker-1", timeout_s=20)
        assert cluster.node("broker-1").pid != old_pid
        assert all(s.healthy for s in cluster.status())
        cluster.stop_node("broker-2", kill=True)
        assert not pid_alive(cluster.node("broker-2").pid)
    finally:
        cluster.stop()


def test_pointer_is_found_from_subdirectories_and_removed(tmp_path: Path) -> None:
    cluster = plan(tmp_path)
    cluster.write_pointer(tmp_path)
    sub = tmp_path / "a" / "b"
    sub.mkdir(parents=True)
    found = LocalCluster.current(sub)
    assert found is not None and found.data_dir == cluster.data_dir
    other = LocalCluster.plan(brokers=1, data_dir=tmp_path / "other", controller_command=FAKE, broker_command=FAKE)
    other.remove_pointer(sub)  # not ours: stays
    assert LocalCluster.current(sub) is not None
    cluster.remove_pointer(sub)
    assert LocalCluster.current(sub) is None


def test_default_data_dir_is_a_timestamped_run_under_dot_brokerlab(tmp_path: Path) -> None:
    first = LocalCluster.plan(brokers=1, base_dir=tmp_path, controller_command=FAKE, broker_command=FAKE)
    second = LocalCluster.plan(brokers=1, base_dir=tmp_path, controller_command=FAKE, broker_command=FAKE)
    assert first.data_dir.parent == (tmp_path / ".brokerlab" / "clusters").resolve()
    assert first.data_dir != second.data_dir
    with pytest.raises(ClusterError):
        LocalCluster.plan(brokers=1, data_dir=first.data_dir)
    assert os.path.exists(first.data_dir / "cluster.json")
