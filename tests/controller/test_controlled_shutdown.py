"""Controlled shutdown: the records, their order, and the time from request to should_shut_down."""

from __future__ import annotations

from controller_harness import Harness

from brokerlab.errors import ErrorCode
from brokerlab.v1 import controller_pb2 as pb
from controller.config import ControllerConfig
from controller.state import NO_LEADER

HEARTBEAT_MS = 100
TIMEOUT = ControllerConfig().session_timeout_ms


def cluster(brokers=(1, 2, 3)) -> Harness:
    h = Harness()
    h.epochs = h.start_brokers(list(brokers))
    return h


def beat(h: Harness, broker_id: int, now_ms: int, **flags):
    return h.heartbeat(broker_id, h.epochs[broker_id], now_ms=now_ms, **flags)


def test_sequence_and_timing_in_records():
    h = cluster()
    h.create_assigned("t", [[1, 2, 3], [2, 1, 3], [3, 2, 1]])
    start = h.core.journal.end_offset
    # t=0: broker 1 asks to shut down. Its leadership of t-0 moves to 2; it leaves every ISR.
    first = beat(h, 1, 0, want_shut_down=True)
    assert (first.should_shut_down, first.is_fenced) == (False, False)
    moves = h.records_since(start)
    assert [r.partition_change.reason for r in moves] == ["controlled_shutdown"] * 3
    assert [(r.partition_change.partition, r.partition_change.leader_changed) for r in moves] == [(0, True), (1, False), (2, False)]
    t0 = h.partition("t", 0)
    assert (t0.leader_id, t0.isr, t0.leader_epoch, t0.partition_epoch) == (2, [2, 3], 1, 1)
    assert all(1 not in p.isr for p in h.partitions("t"))
    # The other brokers replay those records (their next metadata fetch says so) ...
    end = h.core.journal.end_offset
    for b in (2, 3):
        h.send("FetchMetadataRecords", pb.FetchMetadataRecordsRequest(broker_id=b, fetch_offset=end, max_wait_ms=500), now_ms=3)
    # ... so broker 1's next heartbeat, one interval later, is told to stop, and is fenced.
    second = beat(h, 1, HEARTBEAT_MS, want_shut_down=True)
    assert (second.should_shut_down, second.is_fenced) == (True, True)
    (fence,) = h.records_since(end)
    assert fence.WhichOneof("record") == "fence_broker" and fence.fence_broker.broker_id == 1
    done = [e for e in h.events if e.name == "ControlledShutdownCompleted"][-1]
    assert done.fields["elapsed_ms"] == HEARTBEAT_MS <= 200
    assert (done.fields["leaders_moved"], done.fields["leaderships_dropped"]) == (1, 0)
    names = h.event_names()
    assert names.index("ControlledShutdownStarted") < names.index("LeaderChanged") < names.index("BrokerFenced")


def test_heartbeats_also_report_catching_up():
    h = cluster()
    h.create_assigned("t", [[1, 2, 3]])
    assert not beat(h, 1, 0, want_shut_down=True).should_shut_down
    beat(h, 2, 40)  # the new leader has replayed the move; broker 3 took nothing over, so it is not waited for
    assert beat(h, 1, 100, want_shut_down=True).should_shut_down


def test_waits_for_a_new_leader_that_has_not_replayed_the_change():
    h = cluster()
    h.create_assigned("t", [[1, 2, 3]])
    assert not beat(h, 1, 0, want_shut_down=True).should_shut_down
    behind = h.core.journal.end_offset - 2
    h.heartbeat(2, h.epochs[2], offset=behind, now_ms=50)
    assert not beat(h, 1, 100, want_shut_down=True).should_shut_down
    beat(h, 2, 150)
    assert beat(h, 1, 200, want_shut_down=True).should_shut_down


def test_broker_leading_nothing_stops_at_its_first_heartbeat():
    h = cluster()
    h.create_assigned("t", [[2, 3, 1]])
    response = beat(h, 1, 0, want_shut_down=True)  # leaves the ISR; the leader (2) must learn it first
    assert not response.should_shut_down
    beat(h, 2, 10)
    assert beat(h, 1, 100, want_shut_down=True).should_shut_down
    h2 = cluster()
    h2.create_assigned("t", [[2, 3]])
    assert beat(h2, 1, 0, want_shut_down=True).should_shut_down  # in no ISR, leads nothing


def test_sole_isr_member_keeps_its_leadership_until_it_is_fenced():
    h = cluster()
    h.create_assigned("solo", [[1]])
    h.create_assigned("t", [[1, 2, 3]])
    h.alter_isr(1, h.epochs[1], "t", 0, [1])  # its followers fell behind
    first = beat(h, 1, 0, want_shut_down=True)
    # Nothing can move (no other ISR member anywhere): it is told to stop and fenced at once; the
    # partitions it kept leading until now become leaderless.
    assert (first.should_shut_down, first.is_fenced) == (True, True)
    for name in ("solo", "t"):
        p = h.partition(name)
        assert (p.leader_id, p.isr) == (NO_LEADER, [1])
    done = [e for e in h.events if e.name == "ControlledShutdownCompleted"][-1]
    assert done.fields["leaderships_dropped"] == 2


def test_kept_leadership_while_others_move():
    h = cluster()
    h.create_assigned("solo", [[1]])
    h.create_assigned("t", [[1, 2, 3]])
    assert not beat(h, 1, 0, want_shut_down=True).should_shut_down
    assert h.partition("solo").leader_id == 1  # still served while t's new leader catches up
    beat(h, 2, 50)
    beat(h, 3, 50)
    assert beat(h, 1, 100, want_shut_down=True).should_shut_down
    assert h.partition("solo").leader_id == NO_LEADER


def test_shutting_down_broker_is_never_elected():
    h = cluster()
    h.create_assigned("t", [[2, 1]], configs={"unclean.leader.election.enable": "true"})
    h.create_assigned("moving", [[1, 3]])
    h.alter_isr(2, h.epochs[2], "t", 0, [2])
    assert not beat(h, 1, 0, want_shut_down=True).should_shut_down  # moving-0 goes to 3
    stale = h.core.journal.end_offset - 2
    h.heartbeat(3, h.epochs[3], offset=stale, now_ms=TIMEOUT)  # 3 has not replayed it: 1 keeps waiting
    assert not beat(h, 1, TIMEOUT, want_shut_down=True).should_shut_down
    h.tick(TIMEOUT + 1)  # broker 2 (t's leader) was silent: fenced
    # Unclean election is on for t, and 1 is a live replica, but it is shutting down: no leader.
    assert h.partition("t").leader_id == NO_LEADER
    assert "UncleanLeaderElected" not in h.event_names()


def test_preferred_election_and_rebalance_skip_a_shutting_down_broker():
    h = cluster()
    h.create_assigned("t", [[1, 2, 3]])
    h.create_assigned("u", [[2, 1, 3]])
    assert not beat(h, 1, 0, want_shut_down=True).should_shut_down
    (result,) = h.elect(pb.ELECTION_TYPE_PREFERRED, {"t": [0]}).results
    assert result.error_code == ErrorCode.PREFERRED_LEADER_NOT_AVAILABLE


def test_session_expiry_during_shutdown_fences_it_the_usual_way():
    h = cluster()
    h.create_assigned("t", [[1, 2, 3]])
    h.create_assigned("solo", [[1]])
    assert not beat(h, 1, 0, want_shut_down=True).should_shut_down
    beat(h, 2, TIMEOUT)
    beat(h, 3, TIMEOUT)
    h.tick(TIMEOUT + 1)  # broker 1 exited without waiting for should_shut_down
    assert h.core.state.brokers[1].fenced and 1 not in h.core.heartbeats.shutting_down
    assert h.partition("solo").leader_id == NO_LEADER
    reasons = [e.fields["reason"] for e in h.events if e.name == "BrokerFenced"]
    assert reasons == ["session_timeout"]


def test_fenced_broker_may_stop_at_once():
    h = cluster()
    h.create_assigned("t", [[1, 2, 3]])
    h.heartbeat(1, h.epochs[1], want_fence=True)
    response = beat(h, 1, 10, want_shut_down=True)
    assert (response.should_shut_down, response.is_fenced) == (True, True)


def test_controller_restart_during_shutdown_resumes_on_the_next_heartbeat():
    h = cluster()
    h.create_assigned("t", [[1, 2, 3]])
    h.create_assigned("solo", [[1]])
    assert not beat(h, 1, 0, want_shut_down=True).should_shut_down
    h.restart()  # the shutdown state is soft and gone; the leader moves are durable
    assert h.partition("t").leader_id == 2 and 1 not in h.partition("t").isr
    assert h.partition("solo").leader_id == 1
    # The next heartbeat starts the shutdown again: nothing left to move, and the catch-up wait
    # (soft too) was lost with the restart, so it is told to stop and fenced at once.
    response = beat(h, 1, 50, want_shut_down=True)
    assert (response.should_shut_down, response.is_fenced) == (True, True)
    assert h.partition("solo").leader_id == NO_LEADER


def test_restarted_incarnation_is_not_shutting_down():
    h = cluster()
    h.create_assigned("t", [[1, 2, 3]])
    assert not beat(h, 1, 0, want_shut_down=True).should_shut_down
    epoch = h.register(1, incarnation="again", now_ms=10).broker_epoch
    assert 1 not in h.core.heartbeats.shutting_down
    response = h.heartbeat(1, epoch, now_ms=20)
    assert not response.is_fenced and not response.should_shut_down
