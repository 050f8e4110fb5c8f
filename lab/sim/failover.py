"""Failover scenarios as data, run on the simulator: cluster, topic, workload, steps, verdict.

A scenario is a dict (JSON-compatible, so the lab can keep them in files a user copies and
edits)::

    {"name": "leader-kill", "doc": "...",
     "broker_config": {"log.flush.policy": "none|batch"},     # values may be seed-drawn
     "topic": {"partitions": "1..3", "replication_factor": 3, "configs": {"min.insync.replicas": "2"}},
     "producers": [{"name": "writer", "acks": "all"}],
     "consumers": 1,
     "steps": ["wait 500..2000", "kill leader as=victim", ...],   # lab/sim/steps.py
     "expect": {"allowed": [], "checks": ["no-silent-loss"]}}      # lab/sim/verdict.py

A run: build the cluster from the seed, create the topic, wait until every ISR is full, start the
workload, run the steps; then heal everything (network, paused and stopped nodes), wait until
every ISR is full again and every send settled, read every partition back from offset 0 (the
"read-back" consumer in the history) and judge the history. The failover timings (fault ->
first acknowledgement after it) are in the history; the steps actually taken, with their drawn
values and resolved targets, are in the report and the trace (``StepRan``).
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field, replace
from typing import Any, Callable

from brokerlab.errors import ErrorCode
from brokerlab.ids import CONTROLLER_NODE, broker_node
from brokerlab.logfmt import format_value
from lab.checker import Promise
from lab.experiment.logevents import KEEP

from .cluster import SimCluster
from .cores import ClusterSpec, wait_ready
from .network import NetworkConfig
from .producer_actor import ProducerSpec, SimProducer
from .scheduler import SimulationError
from .steps import Step, StepContext, draw, run_steps
from .verdict import Evidence, Expect, Verdict, judge
from .workload import ConsumerSpec, SimConsumer, SimHistory, Workload, history_bytes

# Fast failure detection, as the real-process failover tests configure it.
FAILOVER_BROKER_CONFIG = {
    "broker.heartbeat.interval.ms": "100",
    "broker.session.timeout.ms": "1000",
    "replica.fetch.wait.max.ms": "200",
    "min.insync.replicas": "2",
}


class ScenarioFailed(SimulationError):
    """What the clients saw contradicts what the cluster promised."""


@dataclass(frozen=True)
class TopicSpec:
    name: str = "events"
    partitions: str = "1"
    replication_factor: int = 3
    configs: dict[str, str] = field(default_factory=lambda: {"min.insync.replicas": "2"})


@dataclass(frozen=True)
class FailoverScenario:
    name: str
    doc: str
    steps: tuple[Step, ...]
    expect: Expect = Expect()
    brokers: int = 3
    broker_config: dict[str, str] = field(default_factory=dict)
    controller_config: dict[str, str] = field(default_factory=dict)
    topic: TopicSpec = TopicSpec()
    producers: tuple[ProducerSpec, ...] = (ProducerSpec(),)
    consumers: int = 1
    settle_timeout_ms: int = 30_000
    # Network message faults (--faults) never duplicate requests here: gRPC does not, and a
    # duplicated Produce is a duplicate no broker could avoid.
    duplicate_requests: bool = False
    source: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "FailoverScenario":
        topic = TopicSpec(**{k: (str(v) if k == "partitions" else v) for k, v in data.get("topic", {}).items()})
        producers = tuple(ProducerSpec.from_dict(p) for p in data.get("producers", [{"name": "writer"}]))
        return cls(
            name=data["name"],
            doc=data.get("doc", ""),
            steps=tuple(Step.parse(s) for s in data.get("steps", [])),
            expect=Expect.from_dict(data.get("expect", {})),
            brokers=int(data.get("brokers", 3)),
            broker_config={**FAILOVER_BROKER_CONFIG, **data.get("broker_config", {})},
            controller_config=dict(data.get("controller_config", {})),
            topic=topic,
            producers=producers,
            consumers=int(data.get("consumers", 1)),
            settle_timeout_ms=int(data.get("settle_timeout_ms", 30_000)),
            source=data,
        )

    def cluster_spec(self, rng: random.Random, brokers: int | None = None) -> ClusterSpec:
        """The cluster to build, with any seed-drawn config value drawn (``none|batch``)."""
        return ClusterSpec(
            brokers=brokers or self.brokers,
            broker_config={k: draw(str(v), rng) for k, v in sorted(self.broker_config.items())},
            controller_config={k: draw(str(v), rng) for k, v in sorted(self.controller_config.items())},
        )

    def network(self, config: NetworkConfig) -> NetworkConfig:
        return config if self.duplicate_requests else replace(config, duplicate_rate=0.0)

    def promise(self) -> Promise:
        """What the configuration promises (lab.checker): the weakest producer's acks decide."""
        acks = sorted({p.acks for p in self.producers}, key=lambda a: {-1: 2, 1: 1, 0: 0}[a])[0]
        min_isr = self.topic.configs.get("min.insync.replicas", self.broker_config.get("min.insync.replicas", "2"))
        unclean = str(self.topic.configs.get("unclean.leader.election.enable", "false")).lower() == "true"
        # Idempotence only when every producer has it (the verdict holds each idempotent one to
        # no duplicates and in-order sends on its own).
        idempotence = all(p.effective_idempotence for p in self.producers)
        return Promise(acks="all" if acks == -1 else str(acks), min_insync_replicas=int(min_isr),
                       replication_factor=self.topic.replication_factor, idempotence=idempotence,
                       unclean_leader_election=unclean, max_in_flight=max(p.max_in_flight for p in self.producers))


@dataclass
class FailoverRun:
    """What one run left behind for the report and the tests."""

    context: StepContext
    workload: Workload
    history: SimHistory
    verdict: Verdict | None = None

    def facts(self) -> dict[str, Any]:
        facts = dict(self.verdict.facts) if self.verdict is not None else {}
        facts["steps"] = list(self.context.log)
        return facts

    def history_digest(self) -> str:
        return hashlib.sha256(history_bytes(self.history)).hexdigest()


def run_failover(scenario: FailoverScenario, cluster: SimCluster, rng: random.Random,
                 on_start: Callable[[FailoverRun], None] | None = None) -> FailoverRun:
    """Run ``scenario`` on a freshly built ``cluster``; the verdict is in the returned run.

    Raises SimulationError subclasses (a step that timed out, a broken invariant) as they happen;
    ``on_start`` gets the run first, so whoever called keeps its history and steps even then.
    """
    topic = scenario.topic
    partitions = int(draw(topic.partitions, rng))
    brokers = [broker_node(b) for b in range(1, len(_brokers(cluster)) + 1)]
    history = SimHistory(lambda: cluster.scheduler.now_ms)
    workload = Workload(history)
    for spec in scenario.producers:
        workload.producers[spec.name] = SimProducer(
            cluster, history, topic.name, range(partitions), spec, brokers,
            cluster.scheduler.child_random("producer", spec.name), cluster.acknowledge)
    for index in range(scenario.consumers):
        name = f"reader-{index + 1}"
        workload.consumers.append(SimConsumer(cluster, history, ConsumerSpec.assigned(name, topic.name, brokers),
                                              range(partitions)))
    context = StepContext(cluster, rng, topic.name, partitions, workload.producers)
    run = FailoverRun(context, workload, history)
    if on_start is not None:
        on_start(run)

    wait_ready(cluster)
    client = cluster.client("client-admin")
    client.request_timeout_ms = 5_000
    created = client.retrying(lambda: client.create_topic(topic.name, partitions, topic.replication_factor,
                                                          dict(topic.configs)))
    if created.error_code not in (ErrorCode.NONE, ErrorCode.TOPIC_ALREADY_EXISTS):
        raise ScenarioFailed(f"CreateTopics failed: {created.error_code} {created.error_message}")
    context.wait_until(context.isr_full, 20_000, "every ISR full before the workload starts")
    context.record(f"topic {topic.name} partitions={partitions} rf={topic.replication_factor}")
    workload.start()
    run_steps(list(scenario.steps), context)
    _heal_everything(context)
    workload.stop()
    # Sends settle first: an acks=1 record acknowledged after the ISRs looked full would sit
    # above the high watermark (a follower fetch away) when the read-back starts.
    longest = max((p.spec.delivery_timeout_ms for p in workload.producers.values()), default=0)
    context.wait_until(workload.settled, longest + 5_000, "every send to settle")
    context.wait_until(context.isr_full, scenario.settle_timeout_ms, "every ISR full after healing")
    _read_back(cluster, history, topic.name, partitions)
    record_events(history, cluster.trace, topic.name)
    healthy = not (cluster.network.config.loss_rate or cluster.network.config.duplicate_rate)
    evidence = Evidence(history, cluster.trace, workload, context.windows, context.bindings, healthy)
    run.verdict = judge(scenario.expect, evidence, scenario.promise())
    run.verdict.facts["partitions"] = partitions
    run.verdict.facts["flush_policy"] = cluster.node(brokers[0]).config.log_config.flush_policy
    run.verdict.facts["leader_changes"] = len(cluster.trace.named("LeaderChanged", CONTROLLER_NODE))
    for name, producer in sorted(workload.producers.items()):
        if producer.spec.start:
            run.verdict.facts[f"longest_ack_gap_ms_{name}"] = history.longest_ack_gap_ms(0, history.now_ms(), name)
    return run


def _brokers(cluster: SimCluster) -> list[str]:
    return [n for n in cluster.nodes if n.startswith("broker-")]


def _heal_everything(context: StepContext) -> None:
    """The end of the fault phase: links healed, paused nodes resumed, stopped nodes started."""
    cluster = context.cluster
    if cluster.network.cut_links:
        context.record("heal (end)")
        cluster.network.heal()
    for name, node in sorted(cluster.nodes.items()):
        if node.alive and node.paused:
            context.record(f"resume {name} (end)")
            cluster.resume(name)
    for name, node in sorted(cluster.nodes.items()):
        if not node.alive:
            context.record(f"start {name} (end)")
            cluster.start(name)


# Faults and heals as the history records them (the experiments' nemesis does the same).
FAULT_STEPS = {"kill": "fault", "power-loss": "fault", "crash": "fault", "stop": "fault", "pause": "fault",
               "isolate": "fault", "cut": "fault", "bounce": "fault", "start": "heal", "resume": "heal", "heal": "heal"}


def record_events(history: SimHistory, trace: Any, topic: str, steps: bool = True) -> None:
    """Faults, heals (from the steps, unless ``steps`` is False: a nemesis recorded its own) and
    the cluster events a failover timeline needs into the history, as the real-process
    experiments record them from the nodes' logs (lab/experiment/logevents.py: the same names,
    values as the logfmt lines render them)."""
    for entry in trace.entries:
        if entry.node == "scenario" and entry.name == "StepRan":
            if not steps:
                continue
            words = entry.get("step").split()
            kind = FAULT_STEPS.get(words[0])
            if kind is not None:
                history.record_event(kind, words[0], entry.get("target"), at_ms=history.at(entry.now_ms),
                                     step=entry.get("step"))
        elif entry.name in KEEP and entry.get("topic", topic) == topic:
            fields = {(f"{k}_" if k in ("kind", "name", "node", "at_ms") else k): _as_logged(v) for k, v in entry.fields}
            history.record_event("cluster", entry.name, entry.node, at_ms=history.at(entry.now_ms), **fields)


def _as_logged(value: Any) -> str:
    """A field value as a node's logfmt line shows it, once parsed back (unquoted)."""
    text = format_value(value)
    if text.startswith('"') and text.endswith('"'):
        text = text[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    return text


def _read_back(cluster: SimCluster, history: SimHistory, topic: str, partitions: int) -> None:
    """Every partition from offset 0 to its high watermark, recorded as the "read-back" consumer."""
    client = cluster.client("client-read-back")
    client.request_timeout_ms = 5_000
    for partition in range(partitions):
        records = client.fetch_all(topic, partition)
        history.record_seek("read-back", topic, partition, 0)
        history.record_poll("read-back", [(topic, partition, r.offset, r.value) for r in records])
