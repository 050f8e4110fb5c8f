"""Leader elections: on fencing (clean, unclean per topic, none possible), on demand (ElectLeaders)
and the automatic preferred-leader rebalance driven by now_ms."""

from __future__ import annotations

from controller_harness import Harness

from brokerlab.errors import ErrorCode
from brokerlab.v1 import controller_pb2 as pb
from controller.config import ControllerConfig
from controller.state import NO_LEADER

TIMEOUT = ControllerConfig().session_timeout_ms
PREFERRED, UNCLEAN = pb.ELECTION_TYPE_PREFERRED, pb.ELECTION_TYPE_UNCLEAN
INTERVAL_MS = ControllerConfig().leader_imbalance_check_interval_seconds * 1000


def keep_alive(h: Harness, brokers, now_ms: int) -> None:
    for b in brokers:
        h.heartbeat(b, h.epochs[b], now_ms=now_ms)


def cluster(brokers=(1, 2, 3), config: ControllerConfig | None = None) -> Harness:
    h = Harness(config)
    h.epochs = h.start_brokers(list(brokers))
    return h


# ---- elections on fencing ----


def test_fencing_elects_the_next_isr_member_and_bumps_both_epochs():
    h = cluster()
    h.create_assigned("t", [[1, 2, 3]])
    keep_alive(h, [2, 3], TIMEOUT)
    h.tick(TIMEOUT + 1)
    p = h.partition("t")
    assert (p.leader_id, p.isr, p.leader_epoch, p.partition_epoch) == (2, [2, 3], 1, 1)
    changed = [e for e in h.events if e.name == "LeaderChanged"][-1]
    assert changed.fields["partition_epoch"] == 1 and "unclean" not in changed.fields


def test_election_skips_replicas_outside_the_isr():
    h = cluster()
    h.create_assigned("t", [[1, 2, 3]])
    h.alter_isr(1, h.epochs[1], "t", 0, [1, 3])
    keep_alive(h, [2, 3], TIMEOUT)
    h.tick(TIMEOUT + 1)
    assert (h.partition("t").leader_id, h.partition("t").isr) == (3, [3])


def test_no_live_isr_member_leaves_the_partition_leaderless():
    h = cluster()
    h.create_assigned("t", [[1, 2, 3]])
    h.alter_isr(1, h.epochs[1], "t", 0, [1])
    keep_alive(h, [2, 3], TIMEOUT)
    h.tick(TIMEOUT + 1)
    p = h.partition("t")
    assert (p.leader_id, p.isr, p.leader_epoch, p.partition_epoch) == (NO_LEADER, [1], 1, 2)
    assert "UncleanLeaderElected" not in h.event_names()


def test_unclean_election_per_topic_overrides_the_cluster_default():
    for cluster_default, override, expect_unclean in ((False, "true", True), (True, "false", False), (True, None, True)):
        h = cluster(config=ControllerConfig(unclean_leader_election_enable=cluster_default))
        h.create_assigned("t", [[1, 2, 3]], configs={"unclean.leader.election.enable": override} if override else None)
        h.alter_isr(1, h.epochs[1], "t", 0, [1])
        keep_alive(h, [2, 3], TIMEOUT)
        h.tick(TIMEOUT + 1)
        p = h.partition("t")
        if expect_unclean:
            assert (p.leader_id, p.isr) == (2, [2])
            unclean = [e for e in h.events if e.name == "UncleanLeaderElected"]
            assert unclean[-1].fields["leader"] == 2 and unclean[-1].fields["previous_isr"] == [1]
        else:
            assert (p.leader_id, p.isr) == (NO_LEADER, [1])


# ---- ElectLeaders: preferred ----


def moved_off_preferred() -> Harness:
    """t-0 prefers 1 but 2 leads (1 was fenced and came back; its leader put it back in the ISR)."""
    h = cluster()
    h.create_assigned("t", [[1, 2, 3], [2, 3, 1]])
    keep_alive(h, [2, 3], TIMEOUT)
    h.tick(TIMEOUT + 1)
    h.heartbeat(1, h.epochs[1], now_ms=TIMEOUT + 10)  # back, unfenced, not in the ISR
    assert h.partition("t", 0).leader_id == 2 and not h.core.state.brokers[1].fenced
    return h


def test_preferred_election_moves_leadership_back():
    h = moved_off_preferred()
    h.alter_isr(2, h.epochs[2], "t", 0, [2, 3, 1])
    response = h.elect(PREFERRED, {"t": [0, 1]})
    by_partition = {r.partition: r for r in response.results}
    assert by_partition[0].error_code == ErrorCode.NONE
    assert (by_partition[0].leader_id, by_partition[0].leader_epoch) == (1, 2)
    assert by_partition[1].error_code == ErrorCode.ELECTION_NOT_NEEDED and by_partition[1].leader_id == 2
    p = h.partition("t", 0)
    assert (p.leader_id, p.leader_epoch, p.isr) == (1, 2, [2, 3, 1])
    assert [e.fields["reason"] for e in h.events if e.name == "LeaderChanged"][-1] == "preferred_election"


def test_preferred_leader_outside_the_isr_or_fenced_is_not_available():
    h = moved_off_preferred()
    (result,) = h.elect(PREFERRED, {"t": [0]}).results
    assert result.error_code == ErrorCode.PREFERRED_LEADER_NOT_AVAILABLE  # 1 is not in the ISR yet
    h.alter_isr(2, h.epochs[2], "t", 0, [2, 3, 1])
    h.heartbeat(1, h.epochs[1], want_fence=True)
    (result,) = h.elect(PREFERRED, {"t": [0]}).results
    assert result.error_code == ErrorCode.PREFERRED_LEADER_NOT_AVAILABLE  # fenced


def test_preferred_election_of_all_partitions_leaves_out_those_already_preferred():
    h = moved_off_preferred()
    h.alter_isr(2, h.epochs[2], "t", 0, [2, 3, 1])
    h.create_assigned("other", [[3, 1, 2]])
    response = h.elect(PREFERRED)
    assert [(r.topic, r.partition, r.error_code) for r in response.results] == [("t", 0, ErrorCode.NONE)]
    assert h.elect(PREFERRED).results == []


def test_a_named_topic_without_partitions_means_all_of_them():
    h = moved_off_preferred()
    response = h.elect(PREFERRED, {"t": []})
    assert [(r.partition, r.error_code) for r in response.results] == [
        (0, ErrorCode.PREFERRED_LEADER_NOT_AVAILABLE),
        (1, ErrorCode.ELECTION_NOT_NEEDED),
    ]


def test_unknown_topic_or_partition_and_bad_type():
    h = cluster()
    h.create_assigned("t", [[1, 2, 3]])
    response = h.elect(PREFERRED, {"t": [5], "nope": []})
    assert [(r.topic, r.partition, r.error_code) for r in response.results] == [
        ("t", 5, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION),
        ("nope", -1, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION),
    ]
    assert h.elect(pb.ELECTION_TYPE_UNSPECIFIED).error_code == ErrorCode.INVALID_REQUEST


# ---- ElectLeaders: unclean ----


def leaderless() -> Harness:
    h = cluster()
    h.create_assigned("t", [[1, 2, 3]])
    h.alter_isr(1, h.epochs[1], "t", 0, [1])
    keep_alive(h, [2, 3], TIMEOUT)
    h.tick(TIMEOUT + 1)
    assert h.partition("t").leader_id == NO_LEADER
    return h


def test_unclean_election_on_demand_picks_a_live_replica_despite_the_topic_config():
    h = leaderless()
    start = h.core.journal.end_offset
    (result,) = h.elect(UNCLEAN, {"t": [0]}).results
    assert (result.error_code, result.leader_id, result.leader_epoch) == (ErrorCode.NONE, 2, 2)
    p = h.partition("t")
    assert (p.leader_id, p.isr, p.leader_epoch) == (2, [2], 2)
    (record,) = h.records_since(start)
    assert record.partition_change.reason == "unclean_election" and list(record.partition_change.isr) == [2]
    assert h.events[-2].name == "UncleanLeaderElected"


def test_unclean_election_with_a_leader_is_not_needed():
    h = cluster()
    h.create_assigned("t", [[1, 2, 3]])
    (result,) = h.elect(UNCLEAN, {"t": [0]}).results
    assert (result.error_code, result.leader_id) == (ErrorCode.ELECTION_NOT_NEEDED, 1)


def test_unclean_election_without_a_live_replica():
    h = cluster(brokers=(1, 2))
    h.create_assigned("t", [[1, 2]])
    h.alter_isr(1, h.epochs[1], "t", 0, [1])
    h.tick(TIMEOUT + 1)  # both silent: both fenced
    (result,) = h.elect(UNCLEAN, {"t": [0]}).results
    assert result.error_code == ErrorCode.ELIGIBLE_LEADERS_NOT_AVAILABLE


# ---- automatic preferred-leader rebalance ----


def test_auto_rebalance_runs_one_interval_after_an_imbalance_appears():
    h = moved_off_preferred()
    armed_at = TIMEOUT + 1  # the tick that fenced broker 1 moved t-0 away from its preferred leader
    assert h.core.rebalance_due_ms == armed_at + INTERVAL_MS
    h.alter_isr(2, h.epochs[2], "t", 0, [2, 3, 1], now_ms=armed_at + 100)
    keep_alive(h, [1, 2, 3], armed_at + INTERVAL_MS - 1)
    h.tick(armed_at + INTERVAL_MS - 1)
    assert h.partition("t", 0).leader_id == 2  # not yet
    assert h.core.next_deadline_ms() == armed_at + INTERVAL_MS
    h.tick(armed_at + INTERVAL_MS)
    p = h.partition("t", 0)
    assert (p.leader_id, p.leader_epoch) == (1, 2)
    assert [e.fields["reason"] for e in h.events if e.name == "LeaderChanged"][-1] == "auto_leader_rebalance"
    assert h.events[-1].name == "LeadersRebalanced" and h.events[-1].fields["partitions"] == 1
    assert h.core.rebalance_due_ms is None  # balanced: disarmed


def test_auto_rebalance_waits_for_the_preferred_replica_to_rejoin_the_isr():
    h = moved_off_preferred()
    due = h.core.rebalance_due_ms
    keep_alive(h, [1, 2, 3], due)
    h.tick(due)
    assert h.partition("t", 0).leader_id == 2  # 1 is not in the ISR: nothing to do, re-armed
    assert h.core.rebalance_due_ms == due + INTERVAL_MS
    h.alter_isr(2, h.epochs[2], "t", 0, [2, 3, 1])
    keep_alive(h, [1, 2, 3], due + INTERVAL_MS)
    h.tick(due + INTERVAL_MS)
    assert h.partition("t", 0).leader_id == 1


def test_auto_rebalance_respects_the_per_broker_percentage():
    def not_leading(count: int) -> Harness:
        """Broker 1 prefers four partitions, is in every ISR, and leads all but ``count`` of them."""
        h = cluster(config=ControllerConfig(leader_imbalance_per_broker_percentage=50))
        h.create_assigned("t", [[1, 2, 3]] * 4)
        h.heartbeat(1, h.epochs[1], want_fence=True)  # all four move to broker 2
        h.heartbeat(1, h.epochs[1])  # unfenced again, in no ISR
        for index in range(4):
            h.alter_isr(2, h.epochs[2], "t", index, [2, 3, 1])
        h.elect(PREFERRED, {"t": list(range(count, 4))})
        assert [p.leader_id for p in h.partitions("t")] == [2] * count + [1] * (4 - count)
        return h

    # 25 % and 50 % are not above 50 %; 75 % is.
    for count, expect_moved in ((1, False), (2, False), (3, True)):
        h = not_leading(count)
        due = h.core.rebalance_due_ms
        keep_alive(h, [1, 2, 3], due)
        h.tick(due)
        leaders = [p.leader_id for p in h.partitions("t")]
        assert (leaders == [1, 1, 1, 1]) == expect_moved, (count, leaders)


def test_auto_rebalance_disabled_never_arms():
    h = cluster(config=ControllerConfig(auto_leader_rebalance_enable=False))
    h.create_assigned("t", [[1, 2, 3]])
    keep_alive(h, [2, 3], TIMEOUT)
    h.tick(TIMEOUT + 1)
    assert h.partition("t").leader_id == 2 and h.core.rebalance_due_ms is None
