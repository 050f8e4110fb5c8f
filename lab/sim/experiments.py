"""The lab's experiment scenarios (``lab/scenarios/*.toml``) on the deterministic simulator.

The same file that drives a real-process experiment (``brokerlab experiment run``) runs here on
the real cores, in virtual time, reproducibly from a seed: the cluster and topic it asks for,
its workload (producers at its rate, consumers by assignment or in one consumer group: each
member a node running the real client group and fetch cores, ``group_consumer``), its faults at
their times against roles resolved when they strike (``nemesis``), the heal of everything, a
full read-back; then the
experiments' own analysis (``lab.experiment.report.analyze``: the checker, the verdict against
the configuration's promise, the expected verdict and anomaly counts, the failover timeline) on
a history with the same shape and the same ``meta`` as a real run. ``python -m lab.sim
--experiment NAME|PATH --seed N`` runs one.

What the simulator does not model is refused with a clear error rather than faked
(``check_supported``): faults aimed at consumers that read by assignment (they run the real
fetch core on nodes of their own, ``consumer_core``, but no fault targets them yet). The
producers are the real client producer with the workload's settings (``producer_actor``: acks,
idempotence, max.in.flight, linger, timeouts), keyed and paced as the real workload's. Differences, on purpose: faults run one after the other in time
order, so a fault whose start or heal waits (a restart waits until the broker is ready, a
consumer's clean close until it has left the group) delays the ones due meanwhile.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from typing import Any

from brokerlab.ids import broker_node
from lab.experiment import report
from lab.experiment.scenario import Scenario, ScenarioError
from lab.experiment.scenario import load as load_scenario
from lab.experiment.timeline import READ_BACK
from lab.local_cluster import route_config

from .cluster import SimCluster
from .cores import ClusterSpec, build_cluster, wait_ready
from .failover import FAILOVER_BROKER_CONFIG, record_events
from .group_consumer import MemberSpec, member_factory, member_stop
from .invariants import InvariantSuite, replication_checks
from .nemesis import SimNemesis
from .producer_actor import FACADE_PIPELINE_MIN_BYTES, ProducerSpec, SimProducer
from .scenarios import network_for
from .scheduler import SimulationError, derive_seed
from .steps import StepContext
from .workload import ConsumerSpec, SimConsumer, SimHistory, Workload

# The node settings every experiment runs with (lab/experiment/runner.py NODE_DEFAULTS).
NODE_DEFAULTS = {**FAILOVER_BROKER_CONFIG, "replica.lag.time.max.ms": "3000"}
NODE_DEFAULTS.pop("min.insync.replicas")


class ExperimentUnsupported(ScenarioError):
    """The scenario asks for something the simulator does not model."""


@dataclass
class SimExperiment:
    scenario: Scenario
    seed: int
    cluster: SimCluster | None = None
    history: SimHistory | None = None
    analysis: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    error: BaseException | None = None
    skip_checks: frozenset[str] = frozenset()

    @property
    def as_expected(self) -> bool:
        return self.error is None and bool(self.analysis and self.analysis["expected"]["as_expected"])

    def replay_command(self) -> str:
        command = f".venv/bin/python -m lab.sim --experiment {self.scenario.source or self.scenario.name} --seed {self.seed}"
        command += f" --duration {self.scenario.duration_s:g}"
        for name in sorted(self.skip_checks):
            command += f" --skip-check {name}"
        return command


def check_supported(scenario: Scenario) -> None:
    if scenario.workload.consumer_mode not in ("assign", "group"):
        raise ExperimentUnsupported(f"consumer_mode {scenario.workload.consumer_mode!r} is not simulated")
    for fault in scenario.faults:
        if fault.target in ("consumer", "consumers") and scenario.workload.consumer_mode != "group":
            raise ExperimentUnsupported(f"target {fault.target}: only group consumers (consumer_mode=group) are "
                                        "fault targets in the simulator, not modelled for assign")
        if fault.target == "coordinator" and scenario.workload.consumer_mode != "group":
            raise ExperimentUnsupported("target coordinator: the workload has no consumer group")


def run_experiment(scenario: Scenario | str, seed: int, skip_checks: frozenset[str] = frozenset()) -> SimExperiment:
    """Run an experiment scenario (or a built-in name / a path) on the simulator; ``skip_checks``
    names invariant checks to leave out (to look past a known bug)."""
    if isinstance(scenario, str):
        scenario = load_scenario(scenario)
    check_supported(scenario)
    run = SimExperiment(scenario, seed, skip_checks=frozenset(skip_checks))
    try:
        _run(run)
    except SimulationError as exc:
        run.error = exc
    return run


def _run(run: SimExperiment) -> None:
    scenario, seed = run.scenario, run.seed
    rng = random.Random(derive_seed(seed, "experiment", scenario.name))
    config = {**NODE_DEFAULTS, **scenario.cluster.config}
    controller_config, broker_config = route_config(config)  # each key to the role(s) that know it
    # Latencies and reordering drawn from the seed, as for the catalog's scenarios; no message loss.
    network = replace(network_for(seed, faults=False), duplicate_rate=0.0)
    checks = [check for check in replication_checks() if check.__name__ not in run.skip_checks]
    cluster = build_cluster(seed, ClusterSpec(brokers=scenario.cluster.brokers, broker_config=broker_config,
                                              controller_config=controller_config), network,
                            [InvariantSuite(checks)])
    run.cluster = cluster
    topic, load = scenario.topic, scenario.workload
    wait_ready(cluster)
    admin = cluster.client("client-admin")
    admin.request_timeout_ms = 5_000
    admin.retrying(lambda: admin.create_topic(topic.name, topic.partitions, topic.replication_factor, dict(topic.configs)))
    brokers = [broker_node(b) for b in range(1, scenario.cluster.brokers + 1)]
    context = StepContext(cluster, rng, topic.name, topic.partitions, {})
    if not cluster.run_until(context.isr_full, 30_000):
        run.notes.append("the topic was not fully replicated before the load started")
    history = SimHistory(lambda: cluster.scheduler.now_ms)
    run.history = history
    history.meta["initial_leaders"] = {
        p: (view[0], _epoch(context, p)) for p in range(topic.partitions) if (view := context.partition_view(p))}
    workload = Workload(history)
    # The real producer with the settings lab/experiment/workload.py gives the facade (its
    # defaults for the rest), keyed values at the scenario's rate.
    idempotent = False
    for index in range(load.producers):
        spec = ProducerSpec(name=f"producer-{index + 1}", acks=-1 if load.acks in ("all", "-1") else int(load.acks),
                            idempotence=bool(load.idempotence), max_in_flight=load.max_in_flight,
                            linger_ms=load.linger_ms, request_timeout_ms=load.request_timeout_ms,
                            delivery_timeout_ms=load.delivery_timeout_ms, pipeline_min_bytes=FACADE_PIPELINE_MIN_BYTES,
                            rate_per_s=load.rate / max(load.producers, 1), keys=load.keys, value_bytes=load.value_bytes)
        idempotent = spec.effective_idempotence
        workload.producers[spec.name] = SimProducer(
            cluster, history, topic.name, range(topic.partitions), spec, brokers,
            cluster.scheduler.child_random("producer", spec.name), cluster.acknowledge)
    members: list[MemberSpec] = []
    for index in range(load.consumers):
        name = f"consumer-{index + 1}"
        if load.consumer_mode == "group":
            members.append(MemberSpec.from_workload(load, index, topic.name, brokers))
            continue
        workload.consumers.append(SimConsumer(cluster, history, ConsumerSpec.assigned(name, topic.name, brokers),
                                              range(topic.partitions)))
    nemesis = SimNemesis(context, history, rng, run.notes, {m.process: m.node for m in members}, load.group)
    started = cluster.now_ms
    for member in members:  # consumers start first, as the experiments' workload starts them
        cluster.add_node(member.node, member_factory(member, history), shutdown=member_stop(member),
                         call_timeout=member.call_timeout_ms)
    workload.start()
    nemesis.run(scenario.faults, started, started + round(scenario.duration_s * 1000))
    nemesis.heal_all()
    history.meta["load_end_ms"] = history.now_ms()
    workload.stop()
    if not cluster.run_until(workload.settled, load.delivery_timeout_ms + 5_000):
        run.notes.append("some sends never settled")
    if not cluster.run_until(context.isr_full, 30_000):
        run.notes.append("the cluster was not fully replicated 30 s after the heal")
    reader = cluster.client("client-read-back")
    reader.request_timeout_ms = 5_000
    for partition in range(topic.partitions):
        records = reader.fetch_all(topic.name, partition)
        history.record_poll(READ_BACK, [(topic.name, partition, r.offset, r.value) for r in records])
    history.meta["end_ms"] = history.now_ms()
    record_events(history, cluster.trace, topic.name, steps=False)
    history.meta.update(
        scenario=scenario.name, description=scenario.description, target="sim", seed=seed,
        duration_s=scenario.duration_s, run_id=f"sim-{scenario.name}-{seed}", started_at=None,
        cluster={"brokers": scenario.cluster.brokers, "config": config}, topic=vars(topic),
        workload={**vars(load), "idempotence_effective": idempotent},
        faults=scenario.raw_faults, expect=vars(scenario.expect), notes=run.notes,
        trace_sha256=cluster.trace.digest())
    run.analysis = report.analyze(history)[0]


def _epoch(context: StepContext, partition: int) -> int:
    state = context.controller_partition(partition)
    return state.leader_epoch if state is not None else -1
