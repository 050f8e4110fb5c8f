"""A controller rebuilt from its journal equals the original, including after a power loss."""

from __future__ import annotations

from controller_harness import Harness
from hypothesis import given, settings
from hypothesis import strategies as st

from brokerlab.disk import MemoryDisk
from brokerlab.v1 import controller_pb2 as pb
from controller.config import ControllerConfig
from controller.journal import DEFAULT_PATH, MetadataJournal
from controller.state import ControllerState


def busy_cluster() -> Harness:
    h = Harness(ControllerConfig(default_replication_factor=2), seed=3)
    epochs = h.start_brokers([1, 2, 3], racks={1: "a", 2: "b", 3: "a"})
    h.create_topic("orders", 6, 3)
    h.create_topic("events", 4, -1)
    h.create_topic("logs", 1, 1)
    h.call("DeleteTopics", pb.DeleteTopicsRequest(names=["logs"]))
    h.heartbeat(2, epochs[2], now_ms=900)
    h.heartbeat(3, epochs[3], now_ms=900)
    h.tick(1001)  # broker 1 times out: leaders move, ISRs shrink
    h.register(1, incarnation="again", now_ms=1100)
    h.register(4, now_ms=1100)
    return h


def test_rebuilt_controller_equals_the_original():
    h = busy_cluster()
    original = h.core.state
    assert any(p.leader_epoch > 0 for t in original.topics.values() for p in t.partitions.values())
    rebuilt = h.restart()
    assert rebuilt.state == original
    assert rebuilt.state.applied_records == rebuilt.journal.end_offset


def test_restart_after_power_loss_keeps_everything_acknowledged():
    h = busy_cluster()
    original = h.core.state
    h.restart(crash=True)  # every reply came after an fsync, so nothing is lost
    assert h.core.state == original
    # And the restarted controller carries on from there.
    assert h.create_topic("after", 2, 2).error_code == 0
    assert h.restart(crash=True).state.topic_by_name("after") is not None


def test_torn_tail_rebuilds_the_state_of_the_valid_prefix():
    h = busy_cluster()
    records = list(h.core.journal.records())
    handle = h.disk.open(DEFAULT_PATH)
    handle.truncate(handle.size() - 5)  # the last frame is torn
    rebuilt = h.restart()
    expected = ControllerState()
    for record in records[:-1]:
        expected.replay(record)
    assert rebuilt.state == expected
    assert rebuilt.recovery_events[0].fields["truncated_bytes"] > 0


def test_describe_cluster_after_restart():
    h = busy_cluster()
    before = h.call("DescribeCluster", pb.DescribeClusterRequest())
    h.restart()
    after = h.call("DescribeCluster", pb.DescribeClusterRequest())
    assert after == before


def replication_cluster() -> Harness:
    """Every record kind of issue 3: ISR shrink/expand, elections on demand, rebalance, controlled shutdown."""
    h = Harness(ControllerConfig(leader_imbalance_check_interval_seconds=1), seed=5)
    epochs = h.start_brokers([1, 2, 3])
    h.create_assigned("t", [[1, 2, 3], [2, 3, 1]])
    h.create_assigned("u", [[3, 1]])
    h.alter_isr(1, epochs[1], "t", 0, [1, 2])  # shrink
    h.alter_isr(1, epochs[1], "t", 0, [1, 2, 3])  # expand
    h.heartbeat(1, epochs[1], want_fence=True)  # t-0 moves to 2
    h.heartbeat(1, epochs[1])
    h.alter_isr(2, epochs[2], "t", 0, [2, 3, 1])
    h.elect(pb.ELECTION_TYPE_PREFERRED, {"t": [0]})  # back to 1
    h.heartbeat(1, epochs[1], want_fence=True, now_ms=10)
    h.heartbeat(1, epochs[1], now_ms=20)
    h.alter_isr(2, epochs[2], "t", 0, [2, 3, 1], now_ms=30)
    for b in (1, 2, 3):
        h.heartbeat(b, epochs[b], now_ms=1030)
    h.tick(1030)  # automatic rebalance moves t-0 back to 1
    assert h.partition("t", 0).leader_id == 1
    h.alter_isr(3, epochs[3], "u", 0, [3], now_ms=1040)
    h.heartbeat(3, epochs[3], want_shut_down=True, now_ms=1050)  # t-1 ISR loses 3; u-0 is kept
    h.heartbeat(1, epochs[1], now_ms=1060)
    h.heartbeat(2, epochs[2], now_ms=1060)
    assert h.heartbeat(3, epochs[3], want_shut_down=True, now_ms=1150).should_shut_down
    h.elect(pb.ELECTION_TYPE_UNCLEAN, {"u": [0]})  # u-0 was left leaderless: 1 takes it, uncleanly
    assert h.partition("u", 0).leader_id == 1
    return h


def test_rebuilt_controller_equals_the_original_after_replication_changes():
    h = replication_cluster()
    reasons = {r.partition_change.reason for r in h.core.journal.records() if r.WhichOneof("record") == "partition_change"}
    assert reasons >= {"isr_shrink", "isr_expand", "preferred_election", "auto_leader_rebalance", "controlled_shutdown", "unclean_election"}
    original = h.core.state
    assert h.restart(crash=True).state == original


commands = st.lists(
    st.one_of(
        st.tuples(st.just("register"), st.integers(1, 4), st.sampled_from(["a", "b"])),
        st.tuples(st.just("heartbeat"), st.integers(1, 4), st.booleans()),
        st.tuples(st.just("create"), st.sampled_from(["t1", "t2", "t.3", "t_3"]), st.integers(-1, 4), st.integers(-1, 3)),
        st.tuples(st.just("delete"), st.sampled_from(["t1", "t2", "t.3"])),
        st.tuples(st.just("advance"), st.integers(1, 1500)),
        # Time passes in a healthy cluster: every broker heartbeats, every follower catches up.
        st.tuples(st.just("live"), st.integers(1, 1500)),
        # Issue 3: the leader of a partition asks for an ISR (leader + a subset of the replicas,
        # possibly fenced or shutting down ones), elections on demand, controlled shutdown.
        st.tuples(st.just("alter"), st.sampled_from(["t1", "t2", "t.3"]), st.integers(0, 3), st.integers(0, 15)),
        st.tuples(st.just("catch_up"), st.sampled_from(["t1", "t2", "t.3"]), st.integers(0, 3)),
        st.tuples(st.just("elect"), st.sampled_from([pb.ELECTION_TYPE_PREFERRED, pb.ELECTION_TYPE_UNCLEAN]), st.booleans()),
        st.tuples(st.just("shutdown"), st.integers(1, 4)),
    ),
    max_size=40,
)


def check_invariants(h: Harness, seen: dict) -> None:
    state = h.core.state
    for topic in state.topics.values():
        for index, p in topic.partitions.items():
            assert p.isr and set(p.isr) <= set(p.replicas), "ISR ⊆ replicas, never empty"
            assert p.leader_id == -1 or p.leader_id in p.isr, "leader ∈ ISR ∪ {-1}"
            assert p.leader_id == -1 or state.is_unfenced(p.leader_id), "leader is unfenced"
            key = (topic.topic_id, index)
            if key in seen:
                leader, leader_epoch, partition_epoch = seen[key]
                assert p.leader_epoch >= leader_epoch and p.partition_epoch >= partition_epoch, "epochs never decrease"
                assert p.leader_id == leader or p.leader_epoch > leader_epoch, "a new leader has a new epoch"
            seen[key] = (p.leader_id, p.leader_epoch, p.partition_epoch)


def catch_up(h: Harness, epochs: dict[int, int], name: str, index: int) -> None:
    """Every live replica has caught up: the leader adds them all to the ISR (maybe refused)."""
    topic = h.core.state.topic_by_name(name)
    p = topic.partitions.get(index) if topic is not None else None
    if p is not None and p.leader_id in epochs:
        live = [b for b in p.replicas if b not in p.isr and h.core.state.is_unfenced(b)]
        if live:
            h.alter_isr(p.leader_id, epochs[p.leader_id], name, index, p.isr + live)


def run_command(h: Harness, epochs: dict[int, int], command) -> None:
    kind = command[0]
    if kind == "register":
        epochs[command[1]] = h.register(command[1], incarnation=f"{command[1]}-{command[2]}").broker_epoch
    elif kind == "heartbeat" and command[1] in epochs:
        h.heartbeat(command[1], epochs[command[1]], want_fence=command[2])
    elif kind == "create":
        h.create_topic(command[1], command[2], command[3])
    elif kind == "delete":
        h.call("DeleteTopics", pb.DeleteTopicsRequest(names=[command[1]]))
    elif kind == "advance":
        h.tick(h.now_ms + command[1])
    elif kind == "live":
        for topic in list(h.core.state.topics.values()):
            for index in sorted(topic.partitions):
                catch_up(h, epochs, topic.name, index)
        end = h.now_ms + command[1]
        while h.now_ms < end:
            now_ms = min(end, h.now_ms + 250)
            for broker_id, epoch in epochs.items():
                h.heartbeat(broker_id, epoch, now_ms=now_ms)
            h.tick(now_ms)
    elif kind == "alter":
        topic = h.core.state.topic_by_name(command[1])
        p = topic.partitions.get(command[2]) if topic is not None else None
        if p is not None and p.leader_id in epochs:
            new_isr = [p.leader_id] + [b for i, b in enumerate(p.replicas) if command[3] >> i & 1 and b != p.leader_id]
            h.alter_isr(p.leader_id, epochs[p.leader_id], command[1], command[2], new_isr)
    elif kind == "catch_up":
        catch_up(h, epochs, command[1], command[2])
    elif kind == "elect":
        h.elect(command[1], {"t1": []} if command[2] else None)
    elif kind == "shutdown" and command[1] in epochs:
        h.heartbeat(command[1], epochs[command[1]], want_shut_down=True)


@settings(max_examples=200, deadline=None)
@given(commands=commands, seed=st.integers(0, 1000), unclean=st.booleans())
def test_any_command_sequence_keeps_the_invariants_and_replays_to_the_same_state(commands, seed, unclean):
    disk = MemoryDisk()
    config = ControllerConfig(leader_imbalance_check_interval_seconds=1, unclean_leader_election_enable=unclean)
    h = Harness(config, seed=seed, disk=disk)
    # Start from a running cluster with replicated topics, so that most commands have something to act on.
    epochs: dict[int, int] = h.start_brokers([1, 2, 3])
    h.create_topic("t1", 2, 3)
    h.create_topic("t2", 2, 2)
    seen: dict = {}
    for command in commands:
        run_command(h, epochs, command)
        check_invariants(h, seen)
    rebuilt = ControllerState()
    for record in MetadataJournal(disk).records():
        rebuilt.replay(record)
    assert rebuilt == h.core.state


def test_replay_is_deterministic_for_a_seed():
    def run(seed: int):
        h = Harness(seed=seed)
        h.start_brokers([1, 2, 3, 4])
        h.create_topic("a", 7, 3)
        return list(h.core.journal.records())

    assert run(11) == run(11)
    assert run(11) != run(12)
