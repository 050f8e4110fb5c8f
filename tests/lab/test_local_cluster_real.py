"""LocalCluster with the real controller and broker mains: up -> healthy -> down, no process left."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab.local_cluster import LocalCluster
from lab.processes import pid_alive

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def test_up_status_down_with_real_nodes(tmp_path: Path) -> None:
    cluster = LocalCluster.plan(brokers=3, data_dir=tmp_path / "run", config={"log.flush.policy": "batch"})
    try:
        cluster.start(timeout_s=30)
        statuses = cluster.status()
        assert [(s.name, s.role, s.health) for s in statuses] == [
            ("controller", "controller", "SERVING"),
            ("broker-1", "broker", "SERVING"),
            ("broker-2", "broker", "SERVING"),
            ("broker-3", "broker", "SERVING"),
        ]
        assert all(s.alive and s.pid for s in statuses)
        # Logs go to files, one per node, in logfmt.
        for node in cluster.nodes:
            assert "level=" in Path(node.log).read_text()

        # One broker stopped cleanly and started again comes back healthy on the same address.
        assert cluster.stop_node("broker-2")
        assert not cluster.is_running(cluster.node("broker-2"))
        cluster.start_node("broker-2", timeout_s=30)
        assert all(s.healthy for s in cluster.status())
    finally:
        killed = cluster.stop(timeout_s=10)
    assert killed == []  # every node shut down cleanly on SIGTERM
    assert not any(pid_alive(node.pid) for node in cluster.nodes)
