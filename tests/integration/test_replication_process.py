"""Replication across real processes: `python -m controller` + 3 x `python -m node` on 127.0.0.1.

An RF 3 topic written with acks=all is on all three brokers (same log end offset and high
watermark in every DescribeLogDirs); kill -9 the leader: the controller elects another ISR
member, acks=all writes go on there, nothing acknowledged is lost, and the killed broker, once
restarted, catches up and rejoins the ISR. SIGTERM of a leader hands its leadership over first.
"""

from __future__ import annotations

import time

import pytest
from real_cluster import CALL_TIMEOUT_S, RunningCluster, wait_until

from brokerlab.errors import ErrorCode
from brokerlab.record_batch import decode_records, encode_batch
from brokerlab.v1 import broker_pb2

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TOPIC = "replicated"


def produce(cluster: RunningCluster, broker_id: int, values: list[bytes]) -> broker_pb2.PartitionProduceResponse:
    records = encode_batch([(1_700_000_000_000 + i, None, value, ()) for i, value in enumerate(values)])
    response = cluster.broker_stub(broker_id).Produce(broker_pb2.ProduceRequest(acks=-1, timeout_ms=5_000, partitions=[
        broker_pb2.PartitionProduceData(topic=TOPIC, partition=0, records=records)]), timeout=CALL_TIMEOUT_S)
    return response.partitions[0]


def read_all(cluster: RunningCluster, broker_id: int) -> list[bytes]:
    out, offset = [], 0
    while True:
        response = cluster.broker_stub(broker_id).Fetch(broker_pb2.FetchRequest(
            replica_id=-1, max_wait_ms=0, min_bytes=1, max_bytes=1 << 20, partitions=[broker_pb2.FetchPartition(
                topic=TOPIC, partition=0, fetch_offset=offset, partition_max_bytes=1 << 20,
                current_leader_epoch=-1)]), timeout=CALL_TIMEOUT_S)
        part = response.partitions[0]
        assert part.error_code == 0, part.error_message
        records = [r for r in decode_records(part.records) if r.offset >= offset] if part.records else []
        if not records:
            return out
        out += [r.value for r in records]
        offset = records[-1].offset + 1


def replica_offsets(cluster: RunningCluster, broker_ids) -> dict[int, tuple[int, int]]:
    return {b: (lambda info: (info.log_end_offset, info.high_watermark))(cluster.log_dirs(b)[(TOPIC, 0)])
            for b in broker_ids}


def partition_state(cluster: RunningCluster, broker_id: int):
    [meta] = cluster.metadata([TOPIC], broker_id=broker_id).topics
    return meta.partitions[0]


def test_acks_all_rf3_is_on_every_broker_and_survives_a_leader_kill(cluster: RunningCluster) -> None:
    cluster.create_topic(TOPIC, partitions=1, replication_factor=3)
    leader = cluster.leader_of(TOPIC, 0)
    acked: list[bytes] = []
    for batch_index in range(5):
        values = [f"b{batch_index}-{i}".encode() for i in range(10)]
        out = produce(cluster, leader, values)
        assert (out.error_code, out.base_offset) == (ErrorCode.NONE, 10 * batch_index), out.error_message
        acked += values
    # acks=all answered: the leader's high watermark covers every batch; followers learn it by
    # their next fetch answer (within replica.fetch.wait.max.ms).
    wait_until(lambda: set(replica_offsets(cluster, (1, 2, 3)).values()) == {(50, 50)}, 10,
               message="every replica at log end offset 50 and high watermark 50")
    events = {b: [e.get("event") for e in cluster.events(b)] for b in (1, 2, 3)}
    assert "BecameLeader" in events[leader]
    assert all("BecameFollower" in events[b] for b in (1, 2, 3) if b != leader)

    cluster.kill(leader)
    survivors = [b for b in (1, 2, 3) if b != leader]
    killed_at = time.monotonic()
    new = wait_until(lambda: (lambda p: p.leader_id if p.leader_id in survivors else None)(
        partition_state(cluster, survivors[0])), 10, message="a new leader among the survivors")
    out = wait_until(lambda: (lambda o: o if o.error_code == 0 else None)(produce(cluster, new, [b"after"])), 10,
                     interval_s=0.02, message="an acks=all produce on the new leader")
    failover_s = time.monotonic() - killed_at
    assert out.base_offset == 50
    acked.append(b"after")
    assert read_all(cluster, new) == acked
    print(f"kill -9 of the leader -> first acks=all ack on broker {new}: {failover_s * 1000:.0f} ms")

    cluster.restart(leader)
    wait_until(lambda: replica_offsets(cluster, (leader,))[leader][0] == 51, 15,
               message=f"broker {leader} to catch up after its restart")
    wait_until(lambda: sorted(partition_state(cluster, new).isr) == [1, 2, 3], 15,
               message=f"broker {leader} back in the ISR")
    wait_until(lambda: set(replica_offsets(cluster, (1, 2, 3)).values()) == {(51, 51)}, 10,
               message="every replica at 51/51 again")


def test_sigterm_of_a_leader_hands_leadership_over_first(cluster: RunningCluster) -> None:
    cluster.create_topic(TOPIC, partitions=1, replication_factor=3)
    leader = cluster.leader_of(TOPIC, 0)
    assert produce(cluster, leader, [b"one"]).error_code == 0
    assert cluster.terminate(leader), "the broker did not exit cleanly"
    survivor = next(b for b in (1, 2, 3) if b != leader)
    state = partition_state(cluster, survivor)
    # The leadership moved before the process exited, not after a session timeout.
    assert state.leader_id not in (leader, -1) and leader not in state.isr
    events = cluster.events(leader)
    [done] = [e for e in events if e.get("event") == "ControlledShutdownCompleted"]
    assert int(done["duration_ms"]) <= 1_000
    assert "BrokerStopped" in [e.get("event") for e in events]
    assert produce(cluster, state.leader_id, [b"two"]).error_code == 0
    assert read_all(cluster, state.leader_id) == [b"one", b"two"]
