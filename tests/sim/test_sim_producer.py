"""The real producer cores on the simulator (lab/sim/producer_actor.py): retries after lost
answers with and without idempotence, what the history records, metadata past a paused broker.

A Produce answer that never arrives is the case idempotence exists for: the batch may be in the
log, so the producer retries it. With idempotence the broker recognises the retry (same producer
id, epoch and sequence) and answers with the original offsets; without it the retry is written
again, and the verdict explains that duplicate by the retry.
"""

from __future__ import annotations

import random

from brokerlab.sansio import Envelope
from lab.history import FAIL, INFO, OK
from lab.sim.cores import ClusterSpec, build_cluster, wait_ready
from lab.sim.failover import FailoverScenario, run_failover
from lab.sim.invariants import InvariantSuite, replication_checks
from lab.sim.producer_actor import ProducerSpec, SimProducer
from lab.sim.scenarios import network_for
from lab.sim.workload import SimHistory

DROP_EVERY = 3  # one Produce answer in three to the writer is lost, while the window is open


def lost_answers_run(seed: int, idempotence: bool):
    """A leader kill under load, with one Produce answer in three to the writer lost for 1.5 s:
    each lost answer is a timeout and a retry of a batch the broker already has."""
    scenario = FailoverScenario.from_dict({
        "name": "lost-answers",
        "doc": "Produce answers lost on the way back, then a leader kill",
        "topic": {"partitions": "2"},
        "producers": [{"name": "writer", "acks": "all", "idempotence": idempotence, "request_timeout_ms": 400,
                       "delivery_timeout_ms": 8_000}],
        "steps": ["wait 300", "await isr-full", "window open lossy", "wait 1500", "window close lossy",
                  "kill leader as=victim", "await leader-moved-from victim", "wait 500", "start victim",
                  "await in-isr victim"],
        "expect": {"checks": ["no-silent-loss"]},
    })
    rng = random.Random(seed)
    cluster = build_cluster(seed, scenario.cluster_spec(rng), scenario.network(network_for(seed, faults=False)),
                            [InvariantSuite(replication_checks())])
    network, send = cluster.network, cluster.network.send
    seen = [0]

    def lossy(envelope: Envelope) -> None:
        window = runs[0].context.windows.get("lossy") if runs else None
        if (envelope.is_response and envelope.rpc == "Produce" and envelope.dst == "client-writer"
                and window is not None and window[1] < 0):
            seen[0] += 1
            if seen[0] % DROP_EVERY == 0:
                return
        send(envelope)

    runs: list = []
    network.send = lossy
    run_failover(scenario, cluster, rng, on_start=runs.append)
    return runs[0], cluster


def retried(cluster) -> int:
    return sum(1 for e in cluster.trace.named("ProduceRetried", "client-writer") if e.get("error") == "REQUEST_TIMED_OUT")


def test_an_idempotent_producer_writes_a_batch_once_however_often_it_retries_it() -> None:
    for seed in range(3):
        run, cluster = lost_answers_run(seed, idempotence=True)
        assert run.verdict.ok, run.verdict.explain()
        assert retried(cluster) > 0, "no answer was lost: the test tested nothing"
        result, history = run.verdict.result, run.history
        assert result.count("duplicate") == 0 and result.count("unseen") == 0
        assert run.workload.maybe_duplicated() == set()
        read = [value for poll in history.polls if poll.process == "read-back" for (_, _, _, value) in poll.records]
        assert len(read) == len(set(read)) == sum(1 for s in history.sends if s.outcome == OK)
        # Retries answered with the original offsets: every acknowledged offset holds its value.
        at = {(t, p, o): v for poll in history.polls if poll.process == "read-back" for (t, p, o, v) in poll.records}
        for send in history.sends:
            if send.offset is not None:
                assert at[(send.topic, send.partition, send.offset)] == send.value
        assert "idempotence=on" in run.verdict.promise.promise.describe()


def test_without_idempotence_a_retry_after_a_lost_answer_duplicates_and_the_verdict_allows_it() -> None:
    duplicates = 0
    for seed in range(3):
        run, cluster = lost_answers_run(seed, idempotence=False)
        assert run.verdict.ok, run.verdict.explain()
        assert retried(cluster) > 0
        cases = run.verdict.result.anomalies["duplicate"]
        duplicates += len(cases)
        assert all(case["value"].encode() in run.workload.maybe_duplicated() for case in cases)
        if cases:
            assert run.verdict.facts["duplicates_explained_by_retries"] == len(cases)
            assert "duplicate" in run.verdict.promise.tolerated
            assert "without idempotence" in run.verdict.promise.reasons["duplicate"]
    assert duplicates > 0, "no retry wrote a record twice: the test tested nothing"


def test_a_send_is_fail_only_when_every_attempt_was_refused_before_the_append() -> None:
    """NOT_ENOUGH_REPLICAS on every attempt: definitely not written (fail). A request that timed
    out may have been appended: unknown (info), whatever the later attempts said."""
    cluster = build_cluster(5, ClusterSpec(brokers=3), invariants=[])
    wait_ready(cluster)
    admin = cluster.client("client-admin")
    admin.create_topic("events", 1, 3, {"min.insync.replicas": "2"})
    leader = admin.wait_for_leader("events", 0)
    history = SimHistory(lambda: cluster.scheduler.now_ms)
    spec = ProducerSpec(name="p", start=False, partition=0, request_timeout_ms=500, delivery_timeout_ms=1_500)
    producer = SimProducer(cluster, history, "events", [0], spec, ["broker-1", "broker-2", "broker-3"],
                           random.Random(1))

    def burst(records: int) -> list:
        done: list[bool] = []
        producer.burst(records, lambda: done.append(True))
        assert cluster.run_until(lambda: bool(done), 10_000)
        return history.sends[-records:]

    assert {s.outcome for s in burst(3)} == {OK}
    followers = [name for name in ("broker-1", "broker-2", "broker-3") if name != leader]
    for name in followers:
        cluster.crash(name)
    cluster.run_for(3_000)  # fenced, and out of the ISR: the leader refuses before appending
    refused = burst(2)
    assert {(s.outcome, s.error) for s in refused} == {(FAIL, "NOT_ENOUGH_REPLICAS")}
    cluster.pause(leader)  # now the attempts time out: they may have been appended
    unknown = burst(2)
    assert {s.outcome for s in unknown} == {INFO}


def test_metadata_goes_past_a_paused_broker_after_the_hedge() -> None:
    cluster = build_cluster(3, ClusterSpec(brokers=3), invariants=[])
    wait_ready(cluster)
    cluster.client("client-admin").create_topic("events", 1, 3)
    cluster.pause("broker-1")  # first in the bootstrap list: its calls are accepted, never answered
    history = SimHistory(lambda: cluster.scheduler.now_ms)
    producer = SimProducer(cluster, history, "events", [0], ProducerSpec(name="p", start=False, partition=0),
                           ["broker-1", "broker-2", "broker-3"], random.Random(3))
    started = cluster.now_ms
    producer.burst(1)
    assert cluster.run_until(lambda: bool(producer.link.cache.partitions_for("events")), 2_000)
    assert 250 <= cluster.now_ms - started < 400  # METADATA_HEDGE_MS, then the next broker answers
