"""Rolled segments are fsynced by a blocking job the simulator runs as an event of its own
(lab/sim/node.py, BLOCKING_JOB_MS later): a power loss before it loses the rolled bytes, and the
unclean start recovers from the recovery point, which moved only when the job completed."""

from __future__ import annotations

from brokerlab.ids import TopicPartition
from lab.sim.cores import ClusterSpec, build_cluster, wait_ready

TP = TopicPartition("events", 0)


def rolled_cluster(seed: int = 4):
    """RF1 topic, 2 KiB segments; three 4-record batches of ~850 bytes: the third rolls [0,7]."""
    cluster = build_cluster(seed, ClusterSpec(broker_config={"log.segment.bytes": "2048"}))
    wait_ready(cluster)
    client = cluster.client()
    client.create_topic("events", partitions=1, replication_factor=1)
    leader = client.wait_for_leader("events", 0)
    for batch in range(3):
        client.produce("events", 0, [b"%d" % batch * 200] * 4)
    log = cluster.nodes[leader].core.log_manager.get(TP)
    return cluster, client, leader, log


def test_power_loss_before_the_flush_job_completes_loses_the_rolled_segment() -> None:
    cluster, client, leader, log = rolled_cluster()
    assert (log.segment_count, log.log_end_offset, log.recovery_point) == (2, 12, 0)  # job still out
    cluster.crash(leader, lose_unflushed=True)
    cluster.start(leader)
    wait_ready(cluster)
    recovered = cluster.trace.named("LogRecovered", leader)[-1]
    assert (recovered.get("recovery_point"), recovered.get("log_end_offset")) == (0, 0)
    assert client.fetch_all("events", 0) == []
    assert client.produce("events", 0, [b"next"]).base_offset == 0


def test_the_rolled_segment_survives_power_loss_once_the_job_completed() -> None:
    cluster, client, leader, log = rolled_cluster()
    client.sleep(50)
    assert log.recovery_point == 8
    cluster.crash(leader, lose_unflushed=True)
    cluster.start(leader)
    wait_ready(cluster)
    assert cluster.trace.named("LogRecovered", leader)[-1].get("log_end_offset") == 8
    assert [r.offset for r in client.fetch_all("events", 0)] == list(range(8))


def test_the_same_seed_gives_the_same_trace_with_flush_jobs() -> None:
    traces = []
    for _ in range(2):
        cluster, client, _, log = rolled_cluster(7)
        for batch in range(6):
            client.produce("events", 0, [b"%d" % batch * 200] * 4)
        client.sleep(100)
        assert log.recovery_point >= 8
        traces.append(cluster.trace.serialize())
    assert traces[0] == traces[1]
