"""Registration, heartbeats, unfencing, session-timeout fencing and the leader moves it causes."""

from __future__ import annotations

from controller_harness import Harness

from brokerlab.errors import ErrorCode
from brokerlab.v1 import controller_pb2 as pb
from brokerlab.v1.common_pb2 import Endpoint
from brokerlab.v1.metadata_pb2 import TopicConfig
from controller.config import ControllerConfig
from controller.state import NO_LEADER

TIMEOUT = ControllerConfig().session_timeout_ms


def test_registration_epoch_is_the_record_offset_and_starts_fenced():
    h = Harness()
    first = h.register(1)
    second = h.register(2)
    assert (first.error_code, first.broker_epoch, second.broker_epoch) == (0, 0, 1)
    record = h.core.journal.read(1, 1)[0].register_broker
    assert (record.broker_id, record.broker_epoch, record.fenced, record.endpoint.port) == (2, 1, True, 9002)
    assert h.core.state.brokers[1].fenced
    assert h.event_names() == ["BrokerRegistered", "BrokerRegistered"]


def test_same_incarnation_registering_again_is_idempotent():
    h = Harness()
    epoch = h.register(1).broker_epoch
    end = h.core.journal.end_offset
    assert h.register(1).broker_epoch == epoch
    assert h.core.journal.end_offset == end


def test_new_incarnation_gets_a_new_epoch_and_the_old_one_is_stale():
    h = Harness()
    old = h.start_brokers([1])[1]
    new = h.register(1, incarnation="second").broker_epoch
    assert new > old
    assert h.core.state.brokers[1].fenced
    stale = h.heartbeat(1, old)
    assert stale.error_code == ErrorCode.STALE_BROKER_EPOCH
    # The replaced incarnation may not take the id back.
    assert h.register(1, incarnation="incarnation-1").error_code == ErrorCode.STALE_BROKER_EPOCH
    assert h.core.state.brokers[1].broker_epoch == new


def test_unknown_broker_heartbeat_is_stale():
    h = Harness()
    response = h.heartbeat(5, 0, offset=0)
    assert response.error_code == ErrorCode.STALE_BROKER_EPOCH and response.is_fenced


def test_bad_registrations_are_rejected():
    h = Harness()
    bad = [
        pb.RegisterBrokerRequest(broker_id=-1, endpoint=Endpoint(host="h", port=1), incarnation_id="x"),
        pb.RegisterBrokerRequest(broker_id=1, endpoint=Endpoint(host="", port=1), incarnation_id="x"),
        pb.RegisterBrokerRequest(broker_id=1, endpoint=Endpoint(host="h", port=0), incarnation_id="x"),
        pb.RegisterBrokerRequest(broker_id=1, endpoint=Endpoint(host="h", port=1), incarnation_id=""),
    ]
    for request in bad:
        assert h.call("RegisterBroker", request).error_code == ErrorCode.INVALID_REQUEST
    assert h.core.journal.end_offset == 0


def test_unfenced_only_once_caught_up_to_its_registration():
    h = Harness()
    h.register(1)
    epoch = h.register(2).broker_epoch  # offset 1
    behind = h.heartbeat(2, epoch, offset=0)
    assert (behind.is_caught_up, behind.is_fenced) == (False, True)
    assert h.core.state.brokers[2].fenced
    caught_up = h.heartbeat(2, epoch, offset=epoch)
    assert (caught_up.is_caught_up, caught_up.is_fenced) == (True, False)
    assert h.core.journal.read(epoch + 1, 1)[0].unfence_broker.broker_id == 2
    assert h.event_names()[-1] == "BrokerUnfenced"
    end = h.core.journal.end_offset
    again = h.heartbeat(2, epoch)
    assert not again.is_fenced and h.core.journal.end_offset == end  # no record per heartbeat


def test_want_fence_keeps_or_makes_a_broker_fenced():
    h = Harness()
    epoch = h.register(1).broker_epoch
    assert h.heartbeat(1, epoch, want_fence=True).is_fenced
    assert not h.heartbeat(1, epoch).is_fenced
    assert h.heartbeat(1, epoch, want_fence=True).is_fenced
    assert h.core.state.brokers[1].fenced


def test_session_timeout_fences_exactly_after_the_timeout():
    h = Harness()
    epochs = h.start_brokers([1, 2])
    h.heartbeat(1, epochs[1], now_ms=100)
    h.heartbeat(2, epochs[2], now_ms=100)
    assert h.core.next_deadline_ms() == 100 + TIMEOUT + 1
    h.heartbeat(2, epochs[2], now_ms=600)
    h.tick(100 + TIMEOUT)
    assert not h.core.state.brokers[1].fenced  # exactly at the timeout: still valid
    h.tick(100 + TIMEOUT + 1)
    assert h.core.state.brokers[1].fenced and not h.core.state.brokers[2].fenced
    fenced = [e for e in h.events if e.name == "BrokerFenced"]
    assert fenced[-1].fields["broker_id"] == 1 and fenced[-1].fields["reason"] == "session_timeout"
    assert h.core.next_deadline_ms() == 600 + TIMEOUT + 1
    # It comes back with the same epoch: unfenced again once caught up.
    response = h.heartbeat(1, epochs[1], now_ms=2000)
    assert not response.is_fenced


def test_fencing_moves_leadership_within_the_isr():
    h = Harness()
    epochs = h.start_brokers([1, 2, 3])
    h.create_topic("t", 3, 3)
    led_by_1 = [i for i, p in enumerate(h.partitions("t")) if p.leader_id == 1]
    h.heartbeat(2, epochs[2], now_ms=TIMEOUT)
    h.heartbeat(3, epochs[3], now_ms=TIMEOUT)
    h.tick(TIMEOUT + 1)  # broker 1 last heard at 0
    partitions = h.partitions("t")
    for i, p in enumerate(partitions):
        assert 1 not in p.isr
        if i in led_by_1:
            expected = next(b for b in p.replicas if b != 1)
            assert (p.leader_id, p.leader_epoch, p.partition_epoch) == (expected, 1, 1)
        else:
            assert p.leader_epoch == 0 and p.partition_epoch == 1
    changes = [e for e in h.events if e.name == "LeaderChanged"]
    assert [e.fields["partition"] for e in changes] == led_by_1
    assert all(e.fields["previous_leader"] == 1 and e.fields["reason"] == "session_timeout" for e in changes)


def test_last_isr_member_stays_and_leads_again_when_back():
    h = Harness(ControllerConfig(default_replication_factor=1))
    epochs = h.start_brokers([1])
    h.create_topic("solo", 2, 1)
    h.tick(TIMEOUT + 1)
    for p in h.partitions("solo"):
        assert (p.leader_id, p.isr, p.leader_epoch) == (NO_LEADER, [1], 1)
    back = h.heartbeat(1, epochs[1], now_ms=TIMEOUT + 50)
    assert not back.is_fenced
    for p in h.partitions("solo"):
        assert (p.leader_id, p.isr, p.leader_epoch, p.partition_epoch) == (1, [1], 2, 2)
    assert [e.fields["reason"] for e in h.events if e.name == "LeaderChanged"][-2:] == ["broker_unfenced"] * 2


def test_no_live_isr_member_means_no_leader_unless_unclean():
    for unclean, topic_override in ((False, None), (True, None), (False, "true")):
        h = Harness(ControllerConfig(unclean_leader_election_enable=unclean))
        epochs = h.start_brokers([1, 2])
        configs = [TopicConfig(name="unclean.leader.election.enable", value=topic_override)] if topic_override else []
        h.create_topic("t", assignments=[pb.ReplicaAssignment(partition=0, broker_ids=[1, 2])], configs=configs)
        # Broker 2 dies first (leaves the ISR), then broker 1 (the last ISR member).
        h.heartbeat(1, epochs[1], now_ms=TIMEOUT)
        h.tick(TIMEOUT + 1)
        h.tick(2 * TIMEOUT + 1)
        (p,) = h.partitions("t")
        assert (p.leader_id, p.isr) == (NO_LEADER, [1])
        # Broker 2 comes back: it is not in the ISR.
        h.heartbeat(2, epochs[2], now_ms=2 * TIMEOUT + 10)
        (p,) = h.partitions("t")
        if unclean or topic_override:
            assert (p.leader_id, p.isr) == (2, [2])
            changed, unclean_event = h.events[-2:]
            assert changed.name == "LeaderChanged" and changed.fields.get("unclean") is True
            assert unclean_event.name == "UncleanLeaderElected"
            assert unclean_event.fields == {
                "topic": "t", "partition": 0, "leader": 2, "leader_epoch": 2, "previous_isr": [1], "reason": "broker_unfenced"
            }
        else:
            assert (p.leader_id, p.isr) == (NO_LEADER, [1])


def test_controlled_shutdown_request_moves_leaders_then_fences():
    h = Harness()
    epochs = h.start_brokers([1, 2, 3])
    h.create_topic("t", 3, 3)
    first = h.heartbeat(1, epochs[1], want_shut_down=True)
    assert not first.should_shut_down and not first.is_fenced  # leaderships moved, others must learn it
    assert all(p.leader_id != 1 and 1 not in p.isr for p in h.partitions("t"))
    h.heartbeat(2, epochs[2])
    h.heartbeat(3, epochs[3])
    second = h.heartbeat(1, epochs[1], want_shut_down=True)
    assert second.should_shut_down and second.is_fenced
    assert [e.fields["reason"] for e in h.events if e.name == "BrokerFenced"] == ["controlled_shutdown"]


def test_restart_with_a_new_incarnation_moves_its_leaderships_first():
    h = Harness()
    h.start_brokers([1, 2, 3])
    h.create_topic("t", 3, 3)
    start = h.core.journal.end_offset
    new_epoch = h.register(1, incarnation="restarted").broker_epoch
    kinds = [r.WhichOneof("record") for r in h.core.journal.read(start, 100)]
    assert kinds[-1] == "register_broker" and set(kinds[:-1]) == {"partition_change"}
    assert new_epoch == h.core.journal.end_offset - 1
    assert all(p.leader_id != 1 for p in h.partitions("t"))
    assert [e.name for e in h.events].count("BrokerFenced") == 1


def test_controller_restart_gives_live_brokers_a_fresh_session():
    h = Harness()
    h.start_brokers([1, 2])
    h.restart()
    assert h.core.next_deadline_ms() == 0  # first tick starts the sessions
    h.tick(50_000)
    assert not any(b.fenced for b in h.core.state.brokers.values())
    assert h.core.next_deadline_ms() == 50_000 + TIMEOUT + 1
    h.tick(50_000 + TIMEOUT + 1)
    assert all(b.fenced for b in h.core.state.brokers.values())
