"""Leader changes driven by the real controller: controlled shutdown, a killed leader, a restarted
ex-leader catching up and rejoining the ISR."""

from __future__ import annotations

from replication_harness import ReplicationCluster, batch

from brokerlab.errors import ErrorCode
from node.lifecycle import BrokerState


def cluster() -> ReplicationCluster:
    c = ReplicationCluster()
    c.wait_ready()
    c.create_topic("orders", assignment=[[1, 2, 3]])
    c.create_topic("other", assignment=[[2, 1, 3]])
    c.advance(10)
    return c


def test_controlled_shutdown_moves_leadership_before_the_broker_stops() -> None:
    c = cluster()
    assert c.answer(c.produce("orders", 0, batch(b"before"))).error_code == 0
    heartbeats = c.hold(lambda e: e.rpc == "BrokerHeartbeat" and not e.is_response and e.src == "broker-1")
    c.begin_controlled_shutdown(1)
    core = c.core(1)
    assert core.state is BrokerState.PENDING_CONTROLLED_SHUTDOWN and not core.controlled_shutdown_complete
    c.advance(100)
    sent = c.take(heartbeats)
    assert sent and all(h.message.want_shut_down for h in sent)
    c._holds.remove(heartbeats)
    c.deliver(sent[-1:])
    started = c.now_ms
    while not core.controlled_shutdown_complete:
        assert c.now_ms - started <= 200, "controlled shutdown took longer than 200 ms"
        c.advance(5)
    assert core.state is BrokerState.SHUTTING_DOWN
    [done] = c.named("ControlledShutdownCompleted", "broker-1")
    assert done.fields["duration_ms"] <= 300
    # Nothing is led by broker 1 any more, in its own image too, and it left the ISRs.
    for topic in ("orders", "other"):
        assert c.leader(topic) != 1 and 1 not in c.partition(topic).isr
        assert c.partition(topic, broker_id=1).leader_id != 1
    # No heartbeat once the controller let it go (one without want_shut_down would unfence it).
    c.hold(heartbeats)
    c.advance(300)
    assert not c.take(heartbeats)
    c.stop(1)
    new_leader = c.leader("orders")
    out = c.answer(c.produce("orders", 0, batch(b"after")))
    assert (out.error_code, out.base_offset) == (ErrorCode.NONE, 1)
    assert c.values("orders", broker_id=new_leader) == [b"before", b"after"]


def test_a_killed_leader_is_replaced_and_catches_up_after_restart() -> None:
    c = cluster()
    for i in range(3):
        assert c.answer(c.produce("orders", 0, batch(f"v{i}".encode()))).error_code == 0
    c.kill(1)
    c.advance(1_200)  # broker.session.timeout.ms: fenced, broker 2 elected from the ISR
    assert c.leader("orders") == 2 and c.partition("orders").isr == [2, 3]
    assert c.named("BecameLeader", "broker-2")[-1].fields["leader_epoch"] == 1
    out = c.answer(c.produce("orders", 0, batch(b"v3")))
    assert (out.error_code, out.base_offset) == (ErrorCode.NONE, 3)  # acks=all with ISR [2, 3]
    c.start(1)
    c.settle(1_000)
    # Broker 1 comes back as a follower, truncates nothing (it had only committed data),
    # catches up and is added back to the ISR by the leader.
    assert not c.named("LogTruncated", "broker-1")
    assert c.log_values(1, "orders") == [b"v0", b"v1", b"v2", b"v3"]
    assert sorted(c.partition("orders").isr) == [1, 2, 3]
    assert [c.log(b, "orders").high_watermark for b in (1, 2, 3)] == [4, 4, 4]


def test_two_of_three_replicas_down_refuse_acks_all_until_one_returns() -> None:
    c = cluster()
    c.kill(2)
    c.kill(3)
    c.advance(1_200)
    assert c.partition("orders").isr == [1]
    out = c.answer(c.produce("orders", 0, batch(b"no")))
    assert out.error_code == ErrorCode.NOT_ENOUGH_REPLICAS
    assert c.log(1, "orders").log_end_offset == 0  # never written, never acknowledged
    c.start(2)
    c.settle(1_000)
    assert sorted(c.partition("orders").isr) == [1, 2]
    out = c.answer(c.produce("orders", 0, batch(b"yes")))
    assert (out.error_code, out.base_offset) == (ErrorCode.NONE, 0)
