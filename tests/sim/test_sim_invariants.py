"""The replication invariants catch what they promise to catch: each test plants one bug in a
running simulated cluster and expects the named invariant to stop the run at the next event,
with the seed in its message. (Their silence on correct runs is what every seed sweep shows.)"""

from __future__ import annotations

import pytest

from brokerlab.errors import ErrorCode
from brokerlab.ids import TopicPartition
from lab.sim import InvariantViolation, SimCluster
from lab.sim.cores import ClusterSpec, build_cluster, wait_ready
from lab.sim.invariants import InvariantSuite, Look, default_invariants, replication_checks

TP = TopicPartition("events", 0)


def loaded_cluster(seed: int) -> tuple[SimCluster, str, list[str]]:
    """3 brokers, events-0 with RF 3 and 6 acks=all records; returns (cluster, leader, followers)."""
    cluster = build_cluster(seed, ClusterSpec())
    wait_ready(cluster)
    client = cluster.client()
    client.create_topic("events", 1, 3)
    leader = client.wait_for_leader("events", 0)
    for batch in range(3):
        answer = client.produce("events", 0, [f"v{batch}a".encode(), f"v{batch}b".encode()], acks=-1)
        assert answer.error_code == ErrorCode.NONE
    followers = [b for b in client.live_brokers() if b != leader]
    return cluster, leader, followers


def test_the_default_invariants_are_one_suite_of_every_replication_check() -> None:
    (suite,) = default_invariants()
    assert isinstance(suite, InvariantSuite)
    assert [c.__name__ for c in suite.checks] == [c.__name__ for c in replication_checks()] == [
        "single_leader_per_epoch", "log_end_offsets_monotonic", "high_watermark_within_log",
        "leader_epochs_monotonic", "high_watermark_monotonic_within_epoch", "acknowledged_on_every_isr_member",
    ]


def test_a_leader_epoch_going_back_in_the_controller_state_is_caught() -> None:
    cluster, _, _ = loaded_cluster(21)
    state = cluster.core("controller").state
    partition = state.topic_by_name("events").partitions[0]
    partition.leader_epoch = -1  # planted: below the epoch it had
    state.applied_records += 1  # as if a record had been applied
    with pytest.raises(InvariantViolation, match=r"leader_epochs_monotonic .*seed 21.*controller's state of events-0: 0 -> -1"):
        cluster.run_for(500)


def test_a_leader_epoch_going_back_in_a_broker_role_is_caught() -> None:
    cluster, leader, _ = loaded_cluster(22)
    cluster.core(leader).replicas[TP].leader_epoch = -1
    with pytest.raises(InvariantViolation, match=rf"leader_epochs_monotonic .*{leader}'s role for events-0: 0 -> -1"):
        cluster.run_for(500)


def test_a_high_watermark_going_back_on_the_leader_is_caught() -> None:
    cluster, leader, _ = loaded_cluster(23)
    log = cluster.core(leader).log_manager.get(TP)
    assert log.high_watermark == 6
    log.high_watermark = 2
    with pytest.raises(InvariantViolation, match=r"high_watermark_monotonic_within_epoch .*leader epoch 0: "
                                                 rf"high watermark went from 6 \(on {leader}\) to 2 on {leader}"):
        cluster.run_for(500)


def test_an_acknowledged_record_with_another_value_on_an_isr_member_is_caught() -> None:
    cluster, leader, _ = loaded_cluster(24)
    cluster.acknowledge(TP, 3, b"not-what-was-written", cluster.now_ms)  # planted: a ledger the logs contradict
    with pytest.raises(InvariantViolation, match=r"acknowledged_on_every_isr_member .*events-0@3 was acknowledged "
                                                 r"\(acks=all\) as b'not-what-was-written' but ISR member broker-\d "
                                                 r".*holds b'v1b'"):
        cluster.run_for(500)


def test_an_acknowledged_record_missing_from_an_isr_member_is_caught_but_not_outside_the_isr() -> None:
    cluster, leader, followers = loaded_cluster(25)
    # A follower killed and fenced leaves the ISR: while it is down and catching up, it is not held.
    cluster.crash(followers[0])
    cluster.run_for(2_000)
    isr = cluster.core("controller").state.topic_by_name("events").partitions[0].isr
    assert int(followers[0].split("-")[1]) not in isr
    cluster.acknowledge(TP, 6, b"beyond-every-log", cluster.now_ms)  # planted: acknowledged, never written
    with pytest.raises(InvariantViolation, match=r"events-0@6 was acknowledged .* but ISR member "
                                                 r"broker-\d \(ISR \[.*\], log end 6\) missing"):
        cluster.run_for(500)


def test_a_suite_does_nothing_while_nothing_changes() -> None:
    calls = []

    class Counting(replication_checks()[0].__class__):
        def check(self, cluster: SimCluster, look: Look) -> None:
            calls.append(look)

    suite = InvariantSuite([Counting()])
    cluster = build_cluster(26, ClusterSpec(brokers=1), invariants=[suite])
    wait_ready(cluster)
    before = len(calls)
    suite(cluster)  # nothing ran since the last event
    assert len(calls) == before
