"""The assign-mode consumer on the simulator (lab/sim/consumer_core.py): the real client
FetchCore on a node of its own, with the experiments' poll loop, and what it records."""

from __future__ import annotations

import random

from brokerlab.sansio import TraceEvent
from client.consumer.fetcher import FetchCore
from lab.sim.consumer_core import AssignConsumerCore, ConsumerSpec
from lab.sim.scenarios import run_scenario
from lab.sim.workload import SimHistory


def test_the_catalog_reader_is_the_real_fetch_core_and_follows_a_leader_kill() -> None:
    run = run_scenario("leader-kill", 1)
    assert run.ok, run.describe_failure()
    trace, history = run.cluster.trace, run.report.failover.history
    assert [e.name for e in trace.entries if e.node == "client-reader-1" and e.name.startswith("Node")] == [
        "NodeStarted", "NodeStopped"]
    # Its fetches went through the real core: leader epochs validated after the kill.
    assert trace.named("PositionValidated", "client-reader-1")
    partitions = run.report.as_dict()["failover"]["partitions"]
    first_poll = min(p.index for p in history.polls if p.process == "reader-1")
    assert sorted(s.partition for s in history.seeks if s.process == "reader-1" and s.index < first_poll) == list(
        range(partitions))
    read = {value for p in history.polls if p.process == "reader-1" for *_, value in p.records}
    acknowledged = {s.value for s in history.sends if s.outcome == "ok"}
    assert read and read <= acknowledged
    killed_at = next(e.now_ms for e in trace.entries if e.name == "StepRan" and e.get("step").startswith("kill"))
    after = {s.value for s in history.sends if s.outcome == "ok" and history.at(killed_at) < s.invoked_ms}
    assert after & read, "the reader read nothing written after the leader was killed"


def test_the_client_moving_its_own_position_is_recorded_as_a_seek() -> None:
    history = SimHistory(lambda: 1_000)
    spec = ConsumerSpec.assigned("reader-1", "events", ["broker-1"])
    core = AssignConsumerCore(spec, [0, 1], history, random.Random(1), 1_000)
    assert isinstance(core.fetch, FetchCore)
    assert [(s.partition, s.offset) for s in history.seeks] == [(0, None), (1, None)]
    where = {"topic": "events", "partition": 1}
    core._saw_events([
        TraceEvent("OffsetReset", {**where, "offset": 0, "strategy": "earliest"}),  # the first reset: no seek
        TraceEvent("PositionValidated", {**where, "position": 7, "end_offset": 9, "truncated": False}),
        TraceEvent("OffsetResetRequested", {**where, "offset": 12, "strategy": "earliest"}),
        TraceEvent("OffsetReset", {**where, "offset": 3, "strategy": "earliest"}),
        TraceEvent("PositionValidated", {**where, "position": 5, "end_offset": 5, "truncated": True}),
    ])
    assert [(s.partition, s.offset) for s in history.seeks[2:]] == [(1, 3), (1, 5)]
