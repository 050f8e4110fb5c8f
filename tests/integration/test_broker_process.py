"""Real processes: `python -m controller` + 3 x `python -m node` on 127.0.0.1.

Create a topic, produce one batch to each partition's leader, fetch it back, kill -9 a broker,
restart it and see its logs recovered (log end offsets unchanged), then SIGTERM everything.
"""

from __future__ import annotations

import time

import pytest
from real_cluster import CALL_TIMEOUT_S, RunningCluster

from brokerlab.errors import ErrorCode
from brokerlab.record_batch import decode_records, encode_batch
from brokerlab.v1 import broker_pb2

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def produce(cluster: RunningCluster, broker_id: int, topic: str, partition: int, values: list[bytes],
            acks: int = -1) -> broker_pb2.PartitionProduceResponse:
    records = encode_batch([(1_700_000_000_000 + i, f"k{i}".encode(), value, ()) for i, value in enumerate(values)])
    response = cluster.broker_stub(broker_id).Produce(broker_pb2.ProduceRequest(acks=acks, timeout_ms=5000, partitions=[
        broker_pb2.PartitionProduceData(topic=topic, partition=partition, records=records)]), timeout=CALL_TIMEOUT_S)
    [out] = response.partitions
    return out


def fetch(cluster: RunningCluster, broker_id: int, topic: str, partition: int, offset: int = 0,
          max_wait_ms: int = 0) -> broker_pb2.FetchPartitionResponse:
    response = cluster.broker_stub(broker_id).Fetch(broker_pb2.FetchRequest(
        replica_id=-1, max_wait_ms=max_wait_ms, min_bytes=1, max_bytes=1 << 20, partitions=[
            broker_pb2.FetchPartition(topic=topic, partition=partition, fetch_offset=offset,
                                      partition_max_bytes=1 << 20, current_leader_epoch=-1)]),
        timeout=CALL_TIMEOUT_S)
    [out] = response.partitions
    return out


def test_produce_fetch_kill_restart_recover(cluster: RunningCluster) -> None:
    cluster.create_topic("orders", partitions=3, replication_factor=3)
    metadata = cluster.metadata(["orders"])
    assert sorted(b.broker_id for b in metadata.brokers) == [1, 2, 3]
    assert metadata.controller_endpoint.port == int(cluster.local.controller.address.rsplit(":", 1)[1])
    leaders = {p.partition: p.leader_id for p in metadata.topics[0].partitions}
    assert set(leaders) == {0, 1, 2}

    for partition, leader in leaders.items():
        values = [f"p{partition}-v{i}".encode() for i in range(5)]
        out = produce(cluster, leader, "orders", partition, values)
        assert (out.error_code, out.base_offset) == (0, 0), out.error_message
        got = fetch(cluster, leader, "orders", partition)
        assert got.error_code == 0 and got.high_watermark == 5
        assert [r.value for r in decode_records(got.records)] == values
        follower = next(b for b in (1, 2, 3) if b != leader)
        assert produce(cluster, follower, "orders", partition, [b"x"]).error_code == ErrorCode.NOT_LEADER_OR_FOLLOWER

    # A long-poll at the log end is answered by the next append, long before its deadline.
    leader0 = leaders[0]
    assert fetch(cluster, leader0, "orders", 0, offset=5, max_wait_ms=0).records == b""
    started = time.monotonic()
    parked = cluster.broker_stub(leader0).Fetch.future(broker_pb2.FetchRequest(
        replica_id=-1, max_wait_ms=20_000, min_bytes=1, max_bytes=1 << 20, partitions=[
            broker_pb2.FetchPartition(topic="orders", partition=0, fetch_offset=5, partition_max_bytes=1 << 20)]),
        timeout=CALL_TIMEOUT_S + 20)
    assert produce(cluster, leader0, "orders", 0, [b"more"]).base_offset == 5
    [released] = parked.result().partitions
    assert [r.value for r in decode_records(released.records)] == [b"more"]
    assert time.monotonic() - started < 10

    victim = leader0
    before = {tp: info.log_end_offset for tp, info in cluster.log_dirs(victim).items()}
    assert before[("orders", 0)] == 6
    cluster.kill(victim)
    cluster.restart(victim)
    after = {tp: info.log_end_offset for tp, info in cluster.log_dirs(victim).items()}
    assert after == before
    events = [e.get("event") for e in cluster.events(victim)]
    assert "LogRecovered" in events, "a killed broker recovers its unclean logs at start-up"
    # Still (or again) the leader: it serves what it had.
    if cluster.leader_of("orders", 0) == victim:
        got = fetch(cluster, victim, "orders", 0)
        assert [r.value for r in decode_records(got.records)][-1] == b"more"

    # SIGTERM everything: clean exits, the clean-shutdown markers written, nothing left.
    killed = cluster.local.stop()
    assert killed == []
    assert not cluster.local.any_running()
    assert {name: popen.returncode for name, popen in cluster.local._popens.items()} == {
        node.name: 0 for node in cluster.local.nodes}
    for broker in cluster.brokers:
        names = [e.get("event") for e in cluster.events(broker.id)]
        assert "BrokerStopped" in names, f"{broker.name} did not stop cleanly"
