"""The simulator's own machinery (scheduler, network, nodes, trace, invariants) on a toy core."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from sim_toy import CounterConfig, counter_factory, toy_cluster

from brokerlab.sansio import Envelope
from brokerlab.v1 import broker_pb2
from lab.sim import (
    InvariantViolation,
    Livelock,
    NetworkConfig,
    Scheduler,
    SimCluster,
    TransportFailed,
    derive_seed,
)
from lab.sim.network import DEADLINE_EXCEEDED, UNAVAILABLE

ROOT = Path(__file__).resolve().parents[2]


# -- scheduler ------------------------------------------------------------------------------
def test_scheduler_runs_in_time_then_scheduling_order_and_skips_cancelled() -> None:
    sched = Scheduler(seed=1, start_ms=1000)
    seen = []
    sched.at(1010, seen.append, "b")
    sched.at(1005, seen.append, "a")
    sched.at(1010, seen.append, "c")
    sched.at(1007, seen.append, "x").cancel()
    sched.after(0, seen.append, "now")
    sched.run_for(100)
    assert seen == ["now", "a", "b", "c"]
    assert sched.now_ms == 1100 and sched.events_run == 4


def test_scheduler_run_until_stops_at_predicate_or_deadline() -> None:
    sched = Scheduler(seed=1)
    box = []
    for t in (10, 20, 30):
        sched.at(t, box.append, t)
    assert sched.run_until(lambda: len(box) == 2, 1000) and sched.now_ms == 20
    assert not sched.run_until(lambda: False, 25) and sched.now_ms == 25
    assert sched.run_until(lambda: False, 30) is False and box == [10, 20, 30]


def test_scheduler_detects_a_livelock() -> None:
    sched = Scheduler(seed=1, max_events_per_instant=1000)

    def again() -> None:
        sched.after(0, again, label="again")

    sched.after(0, again)
    with pytest.raises(Livelock, match="again"):
        sched.run_for(1)


def test_child_randoms_are_derived_from_the_seed_by_name() -> None:
    a, b = Scheduler(seed=7), Scheduler(seed=7)
    assert a.child_random("node", "x", 1).random() == b.child_random("node", "x", 1).random()
    assert a.child_random("node", "x", 1).random() != a.child_random("node", "x", 2).random()
    assert derive_seed(7, "x") != derive_seed(8, "x")


# -- network --------------------------------------------------------------------------------
def test_latency_stays_within_bounds_and_a_link_is_fifo() -> None:
    cluster = toy_cluster(3, nodes=1, network=NetworkConfig(min_latency_ms=3, max_latency_ms=9))
    client = cluster.client()
    sent_at = cluster.now_ms
    ids = [client.send("toy-1", "Produce", _produce(bytes([i]))) for i in range(20)]
    answers = [client.wait(i) for i in ids]
    assert all(a.transport_error is None for a in answers)
    positions = [a.message.partitions[0].base_offset for a in answers]
    assert positions == list(range(20))  # FIFO both ways: appended in send order
    delivered = [e for e in cluster.trace.named("MessageDelivered") if e.get("rpc") == "Produce"]
    assert all(sent_at + 3 <= e.now_ms <= sent_at + 18 for e in delivered)


def test_reordering_breaks_fifo_when_asked() -> None:
    cluster = toy_cluster(3, nodes=1, network=NetworkConfig(min_latency_ms=1, max_latency_ms=20, reorder_rate=1.0))
    client = cluster.client()
    ids = [client.send("toy-1", "Produce", _produce(bytes([i]))) for i in range(20)]
    positions = [client.wait(i).message.partitions[0].base_offset for i in ids]
    assert sorted(positions) == list(range(20)) and positions != list(range(20))


def test_a_request_to_a_dead_node_fails_fast_with_unavailable() -> None:
    cluster = toy_cluster(1, nodes=2)
    cluster.crash("toy-2")
    client = cluster.client()
    start = cluster.now_ms
    with pytest.raises(TransportFailed) as failure:
        client.call("toy-2", "Metadata", broker_pb2.MetadataRequest())
    assert failure.value.reason == UNAVAILABLE
    assert cluster.now_ms - start <= cluster.network.config.unavailable_ms
    cluster.run_for(500)  # toy-1's pings to toy-2 fail too, and it keeps running
    assert cluster.core("toy-1").pings_failed >= 3


def test_a_partition_makes_calls_time_out_at_their_deadline_and_heal_restores() -> None:
    config = NetworkConfig(request_timeout_ms=2_000)
    cluster = toy_cluster(1, nodes=2, network=config)
    client = cluster.client()
    cluster.run_for(50)  # toy-1's first pings, sent before toy-2 booted, have failed by now
    cluster.network.isolate("toy-2")
    start = cluster.now_ms
    with pytest.raises(TransportFailed) as failure:
        client.call("toy-2", "Metadata", broker_pb2.MetadataRequest())
    assert failure.value.reason == DEADLINE_EXCEEDED and cluster.now_ms - start == 2_000
    cluster.run_for(500)
    failed = [e for e in cluster.trace.named("PingFailed", "toy-1") if e.get("peer") == "toy-2" and e.now_ms > start]
    assert failed and all(e.get("reason") == DEADLINE_EXCEEDED for e in failed)
    cluster.network.heal()
    assert client.call("toy-2", "Metadata", broker_pb2.MetadataRequest()).cluster_id == "toy-2"


def test_a_crash_while_a_call_is_in_flight_answers_unavailable() -> None:
    cluster = toy_cluster(1, nodes=1, network=NetworkConfig(min_latency_ms=50, max_latency_ms=50))
    client = cluster.client()
    request_id = client.send("toy-1", "Metadata", broker_pb2.MetadataRequest())
    cluster.run_for(10)
    cluster.crash("toy-1")
    answer = client.wait(request_id)
    assert answer.transport_error == UNAVAILABLE and cluster.now_ms - cluster.scheduler.start_ms < 50


def test_lossy_network_still_answers_every_call_exactly_once() -> None:
    config = NetworkConfig(loss_rate=0.3, duplicate_rate=0.3, request_timeout_ms=500)
    cluster = toy_cluster(5, nodes=1, network=config)
    client = cluster.client()
    ids = [client.send("toy-1", "Metadata", broker_pb2.MetadataRequest()) for _ in range(200)]
    answers = [client.wait(i) for i in ids]
    replies = cluster.trace.named("ReplyReceived", "client-1")
    assert len(replies) == 200  # one answer per call, no more, even with duplicates
    errors = {a.transport_error for a in answers}
    assert errors == {None, DEADLINE_EXCEEDED}
    seen = cluster.core("toy-1").requests_seen
    assert len(seen) > len(set(seen))  # duplicated requests did reach the server twice
    assert cluster.network.in_flight_calls() == 0


def test_a_restarted_node_never_gets_replies_meant_for_its_previous_life() -> None:
    slow = NetworkConfig(min_latency_ms=40, max_latency_ms=40)
    cluster = SimCluster(2, slow)
    for name, peer in (("toy-1", "toy-2"), ("toy-2", "toy-1")):
        cluster.add_node(name, counter_factory, CounterConfig(peers=(peer,)), start=False)
    cluster.start("toy-2")
    cluster.start("toy-1")
    t0 = cluster.now_ms
    cluster.run_for(45)  # toy-1's first ping (request id 1) has reached toy-2, its reply is on the wire
    cluster.restart("toy-1")  # the new incarnation's first ping reuses request id 1
    cluster.run_for(200)
    dropped = [e for e in cluster.trace.named("MessageDropped") if e.get("dst") == "toy-1" and e.get("response")]
    assert [(e.now_ms - t0, e.get("reason")) for e in dropped] == [(80, "peer gone")]
    answered = cluster.trace.named("PingAnswered", "toy-1")
    assert answered and min(e.now_ms - t0 for e in answered) == 45 + 80


# -- nodes, disks, crashes ------------------------------------------------------------------
@pytest.mark.parametrize("flush_policy, survives", [("none", False), ("batch", True)])
def test_power_loss_keeps_only_flushed_data(flush_policy: str, survives: bool) -> None:
    cluster = toy_cluster(4, nodes=1, flush_policy=flush_policy)
    client = cluster.client()
    for i in range(5):
        client.call("toy-1", "Produce", _produce(b"x" * (i + 1)))
    assert cluster.core("toy-1").size == 15
    cluster.crash("toy-1")  # a process kill keeps the page cache
    cluster.start("toy-1")
    assert cluster.core("toy-1").size == 15
    cluster.restart("toy-1", lose_unflushed=True)
    assert cluster.core("toy-1").size == (15 if survives else 0)
    names = [e.name for e in cluster.trace if e.node == "toy-1" and e.name.startswith("Node")]
    assert names == ["NodeStarted", "NodeCrashed", "NodeStarted", "NodeCrashed", "NodeStarted"]


def test_a_core_that_raises_is_reported_with_node_time_and_input() -> None:
    class Broken:
        def step(self, envelope, now_ms):
            raise KeyError("boom")

        def tick(self, now_ms):
            from brokerlab.sansio import Effects

            return Effects()

        def next_deadline_ms(self):
            return None

    cluster = SimCluster(1)
    cluster.add_node("bad-1", lambda ctx: Broken())
    with pytest.raises(Exception, match=r"bad-1 \(incarnation 1\) raised in step handling Metadata from client-1"):
        cluster.client().call("bad-1", "Metadata", broker_pb2.MetadataRequest())


# -- invariants and determinism -------------------------------------------------------------
def test_invariants_run_after_every_event_and_name_the_seed() -> None:
    calls = []

    def size_limit(cluster: SimCluster) -> None:
        calls.append(cluster.now_ms)
        core = cluster.core("toy-1")
        if core is not None and core.size > 3:
            raise InvariantViolation(f"toy-1 holds {core.size} bytes")

    cluster = toy_cluster(9, nodes=1, invariants=[size_limit])
    client = cluster.client()
    client.call("toy-1", "Produce", _produce(b"abc"))
    events_so_far = cluster.scheduler.events_run
    assert len(calls) >= events_so_far
    with pytest.raises(InvariantViolation, match=r"size_limit broken .* seed 9\): toy-1 holds 4 bytes"):
        client.call("toy-1", "Produce", _produce(b"d"))


def _toy_run(seed: int) -> bytes:
    cluster = toy_cluster(seed, nodes=3, network=NetworkConfig.from_seed(Scheduler(seed).child_random("knobs")))
    client = cluster.client()
    for i in range(10):
        try:
            client.call(f"toy-{i % 3 + 1}", "Produce", _produce(bytes([i])))
        except TransportFailed:
            pass
    cluster.crash("toy-2", lose_unflushed=True)
    cluster.run_for(300)
    cluster.start("toy-2")
    cluster.run_for(1_000)
    return cluster.trace.serialize()


def test_same_seed_same_trace_bytes_different_seed_different_schedule() -> None:
    first, second = _toy_run(11), _toy_run(11)
    assert first == second and len(first) > 10_000
    assert _toy_run(12) != first


def test_lab_sim_does_no_wall_clock_threads_or_asyncio() -> None:
    forbidden = {"time", "asyncio", "threading", "concurrent", "multiprocessing", "datetime", "socket", "uuid"}
    problems = []
    for path in sorted((ROOT / "lab" / "sim").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            problems += [f"{path.name} imports {n}" for n in names if n.split(".")[0] in forbidden]
    assert not problems, problems


def _produce(data: bytes) -> broker_pb2.ProduceRequest:
    return broker_pb2.ProduceRequest(acks=1, partitions=[broker_pb2.PartitionProduceData(records=data)])


def test_toy_factory_sees_its_own_random_per_incarnation() -> None:
    cluster = SimCluster(3)
    cluster.add_node("toy-1", counter_factory, CounterConfig())
    first = cluster.core("toy-1").random.random()
    cluster.restart("toy-1")
    assert cluster.core("toy-1").random.random() != first
    assert isinstance(Envelope, type)


def test_a_paused_node_holds_requests_until_resumed_and_callers_time_out() -> None:
    cluster = toy_cluster(6, nodes=2, network=NetworkConfig(request_timeout_ms=1_000))
    client = cluster.client()
    cluster.run_for(500)
    cluster.pause("toy-2")
    paused_at = cluster.now_ms
    with pytest.raises(TransportFailed) as failure:
        client.call("toy-2", "Produce", _produce(b"late"))
    assert failure.value.reason == DEADLINE_EXCEEDED  # not UNAVAILABLE: the process still exists
    assert cluster.core("toy-2").size == 0
    pings_before = cluster.core("toy-2").pings_answered
    cluster.run_for(1_000)
    assert cluster.core("toy-2").pings_answered == pings_before  # no timers while paused
    cluster.resume("toy-2")
    assert cluster.core("toy-2").size == 4  # the held request ran at resume
    resumed = cluster.trace.named("NodeResumed", "toy-2")[0]
    assert resumed.get("backlog") > 1 and resumed.now_ms - paused_at >= 2_000
    cluster.run_for(500)
    assert cluster.core("toy-2").pings_answered > pings_before


def test_clock_skew_shifts_what_the_core_reads_not_the_schedule() -> None:
    cluster = toy_cluster(6, nodes=1)
    core = cluster.core("toy-1")
    cluster.run_for(1_000)
    cluster.skew_clock("toy-1", 60_000)
    # The core's deadline is on its own clock: skewing forward makes its next ping due at once.
    cluster.run_for(1)
    assert core.next_ping_ms > cluster.now_ms + 60_000
