"""The lab's experiment scenarios (``lab/scenarios/*.toml``) on the deterministic simulator.

The same file that drives a real-process experiment (``brokerlab experiment run``) runs here on
the real cores, in virtual time, reproducibly from a seed: the cluster and topic it asks for,
its workload (producers at its rate, consumers by assignment), its faults at their times
against roles resolved when they strike, the heal of everything, a full read-back; then the
experiments' own analysis (``lab.experiment.report.analyze``: the checker, the verdict against
the configuration's promise, the expected verdict and anomaly counts, the failover timeline) on
a history with the same shape and the same ``meta`` as a real run. ``python -m lab.sim
--experiment NAME|PATH --seed N`` runs one.

What the simulator does not model (yet) is refused with a clear error rather than faked: slow
links (``slow``), consumer groups and their coordinator or consumer targets. Differences, on
purpose: producers keep one request in flight (``max.in.flight`` 1; the promise is judged with
the scenario's own setting, which only tolerates more); faults run one after the other in time
order, so a fault whose start or heal waits (a restart waits until the broker is ready) delays
the ones due meanwhile.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from typing import Any

from brokerlab.ids import CONTROLLER_NODE, broker_node
from brokerlab.record_batch import BATCH_HEADER_BYTES, iter_headers
from lab.experiment import report
from lab.experiment.scenario import FaultSpec, Scenario, ScenarioError, parse_seconds
from lab.experiment.scenario import load as load_scenario
from lab.experiment.timeline import READ_BACK
from lab.local_cluster import route_config

from .cluster import SimCluster
from .cores import ClusterSpec, build_cluster, wait_ready
from .failover import FAILOVER_BROKER_CONFIG, record_events
from .invariants import InvariantSuite, replication_checks
from .scenarios import network_for
from .scheduler import SimulationError, derive_seed
from .steps import StepContext
from .workload import ProducerSpec, SimConsumer, SimHistory, SimProducer, Workload

# The node settings every experiment runs with (lab/experiment/runner.py NODE_DEFAULTS).
NODE_DEFAULTS = {**FAILOVER_BROKER_CONFIG, "replica.lag.time.max.ms": "3000"}
NODE_DEFAULTS.pop("min.insync.replicas")
UNSUPPORTED_ACTIONS = {"slow": "slow links are not modelled by the simulated network yet"}
READY_TIMEOUT_MS = 20_000


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
    if scenario.workload.consumer_mode != "assign":
        raise ExperimentUnsupported("consumer groups are not simulated yet (workload.consumer_mode=group)")
    for fault in scenario.faults:
        if fault.action in UNSUPPORTED_ACTIONS:
            raise ExperimentUnsupported(f"{fault.action}: {UNSUPPORTED_ACTIONS[fault.action]}")
        if fault.target in ("coordinator", "consumer", "consumers"):
            raise ExperimentUnsupported(f"target {fault.target}: consumer groups are not simulated yet")


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
    # Each producer process is one lane per partition, each with one request in flight: a real
    # producer's batches to different brokers do not wait for each other (a paused broker must
    # not stall the load on the others).
    lane_rate = load.rate / max(load.producers, 1) / max(topic.partitions, 1)
    for index in range(load.producers):
        for partition in range(topic.partitions):
            spec = ProducerSpec(name=f"producer-{index + 1}", acks=-1 if load.acks in ("all", "-1") else int(load.acks),
                                rate_per_s=lane_rate, min_batch=1, max_batch=100, partition=partition,
                                request_timeout_ms=load.request_timeout_ms,
                                delivery_timeout_ms=load.delivery_timeout_ms, timeout_ms=load.request_timeout_ms)
            lane = f"p{partition}"
            workload.producers[f"{spec.name}-{lane}"] = SimProducer(
                cluster, history, topic.name, [partition], spec, brokers,
                cluster.scheduler.child_random("producer", spec.name, lane), cluster.acknowledge, lane=lane)
    for index in range(load.consumers):
        name = f"consumer-{index + 1}"
        workload.consumers.append(SimConsumer(name, cluster, history, topic.name, range(topic.partitions), brokers,
                                              cluster.scheduler.child_random("consumer", name)))
    nemesis = SimNemesis(context, history, rng, run.notes)
    started = cluster.now_ms
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
        workload={**vars(load), "idempotence_effective": False, "max_in_flight_effective": 1},
        faults=scenario.raw_faults, expect=vars(scenario.expect), notes=run.notes,
        trace_sha256=cluster.trace.digest())
    run.analysis = report.analyze(history)[0]


def _epoch(context: StepContext, partition: int) -> int:
    state = context.controller_partition(partition)
    return state.leader_epoch if state is not None else -1


@dataclass
class _Active:
    spec: FaultSpec
    nodes: list[str]
    heal: Any = None  # () -> None
    healed: bool = False


class SimNemesis:
    """lab/experiment/nemesis.py's faults, on simulated nodes, at virtual times."""

    def __init__(self, context: StepContext, history: SimHistory, rng: random.Random, notes: list[str]) -> None:
        self.context = context
        self.cluster = context.cluster
        self.history = history
        self.rng = rng
        self.notes = notes
        self.active: list[_Active] = []

    def run(self, faults: list[FaultSpec], started_ms: int, end_ms: int) -> None:
        """Strike and heal at their times (in order; a late one runs as soon as it can)."""
        agenda: list[tuple[int, int, str, Any]] = []
        for index, spec in enumerate(faults):
            agenda.append((started_ms + round(spec.at_s * 1000), index, "strike", spec))
        agenda.sort(key=lambda item: (item[0], item[1]))
        while agenda:
            due, index, what, item = agenda.pop(0)
            if due >= end_ms:
                break
            self.cluster.run_for(max(0, due - self.cluster.now_ms))
            if what == "strike":
                try:
                    fault = self.strike(item)
                except (SimulationError, ScenarioError) as exc:
                    self.notes.append(f"fault {item.describe()} at {item.at_s:g}s failed: {exc}")
                    self.history.record_event("fault", "fault-failed", None, action=item.action, error=str(exc))
                    continue
                if item.duration_s is not None and not fault.healed:
                    agenda.append((due + round(item.duration_s * 1000), index, "heal", fault))
                    agenda.sort(key=lambda entry: (entry[0], entry[1]))
            else:
                self.heal(item)
        self.cluster.run_for(max(0, end_ms - self.cluster.now_ms))

    # -- targets ------------------------------------------------------------------------------
    def resolve(self, spec: FaultSpec) -> list[str]:
        role, context = spec.target, self.context
        if role.startswith("broker-") or role == CONTROLLER_NODE:
            return [role]
        if role == "random-broker":
            return [self.rng.choice(context.brokers())]
        if role == "brokers":
            return context.brokers()
        view = context.partition_view(spec.partition)
        if role == "leader":
            context.wait_until(lambda: context.live_leader(spec.partition) is not None, READY_TIMEOUT_MS,
                               f"a leader of partition {spec.partition}")
            return [context.live_leader(spec.partition)]
        others = [broker_node(r) for r in (view[1] if view else []) if view is None or r != view[0]]
        if role == "followers":
            return others
        if role == "follower" and others:
            return [self.rng.choice(others)]
        raise ScenarioError(f"cannot resolve fault target {role!r}")

    # -- strike and heal ----------------------------------------------------------------------
    def strike(self, spec: FaultSpec) -> _Active:
        fault = _Active(spec, self.resolve(spec))
        getattr(self, "_" + spec.action.replace("-", "_"))(fault)
        self.active.append(fault)
        return fault

    def heal(self, fault: _Active) -> None:
        if not fault.healed:
            fault.healed = True
            if fault.heal is not None:
                fault.heal()

    def heal_all(self) -> None:
        for fault in reversed(self.active):
            self.heal(fault)
        for name, node in sorted(self.cluster.nodes.items()):  # nothing left down or stopped
            if node.alive and node.paused:
                self.cluster.resume(name)
                self._record("heal", "resume", name, role="cleanup")
            elif not node.alive:
                self._start(name, role="cleanup")

    def _record(self, kind: str, name: str, node: str | None, **fields: Any) -> None:
        self.history.record_event(kind, name, node, **fields)

    def _stop(self, fault: _Active, signal: str, nodes: list[str] | None = None, lose_unflushed: bool = False) -> None:
        for node in nodes or fault.nodes:
            self._record("fault", fault.spec.action, node, role=fault.spec.target, partition=fault.spec.partition,
                         signal=f"SIG{signal}")
            if signal == "TERM":
                self.cluster.stop(node)
            else:
                self.cluster.crash(node, lose_unflushed=lose_unflushed)
        fault.heal = lambda: self._restart(fault)

    def _restart(self, fault: _Active, nodes: list[str] | None = None) -> None:
        for node in nodes or fault.nodes:
            self._start(node, role=fault.spec.target)

    def _start(self, node: str, role: str) -> None:
        if self.cluster.nodes[node].alive:
            return
        self._record("heal", "restart", node, role=role)
        self.cluster.start(node)
        if node != CONTROLLER_NODE:  # the real target waits for the node's health check
            core = lambda: self.cluster.core(node)  # noqa: E731
            self.cluster.run_until(lambda: core() is not None and core().is_ready, READY_TIMEOUT_MS)

    def _terminate(self, fault: _Active) -> None:
        self._stop(fault, "TERM")

    def _kill(self, fault: _Active) -> None:
        self._stop(fault, "KILL")

    def _bounce(self, fault: _Active) -> None:
        args = fault.spec.args
        count = int(args.get("count", 5))
        signal = str(args.get("signal", "KILL")).upper().removeprefix("SIG")
        interval_ms = round(float(_seconds(args.get("interval", "1s"))) * 1000)
        for round_number in range(count):
            one = _Active(fault.spec, fault.nodes if round_number == 0 else self.resolve(fault.spec))
            self._stop(one, signal)
            self._restart(one)
            if round_number + 1 < count:
                self.cluster.run_for(interval_ms)
        fault.healed = True

    def _rolling_restart(self, fault: _Active) -> None:
        settle_ms = round(float(_seconds(fault.spec.args.get("settle", "30s"))) * 1000)
        signal = str(fault.spec.args.get("signal", "TERM")).upper().removeprefix("SIG")
        for node in fault.nodes:
            one = _Active(fault.spec, [node])
            self._stop(one, signal)
            self._restart(one)
            self.cluster.run_until(self.context.isr_full, settle_ms)
        fault.healed = True

    def _pause(self, fault: _Active) -> None:
        for node in fault.nodes:
            self._record("fault", "pause", node, role=fault.spec.target, partition=fault.spec.partition,
                         signal="SIGSTOP")
            self.cluster.pause(node)

        def resume() -> None:
            for node in fault.nodes:
                if self.cluster.nodes[node].paused:
                    self.cluster.resume(node)
                self._record("heal", "resume", node, role=fault.spec.target, signal="SIGCONT")

        fault.heal = resume

    def _peers(self, fault: _Active, node: str) -> list[str]:
        peers = fault.spec.args.get("peers", ["nodes"])
        out: list[str] = []
        for peer in [peers] if isinstance(peers, str) else peers:
            if peer == "nodes":
                out += [n for n in sorted(self.cluster.nodes) if n != node]
            elif peer in ("*", "all"):
                out += [n for n in sorted(self.cluster.network.endpoints) if n != node]
            else:
                out.append(str(peer))
        return out

    def _partition(self, fault: _Active) -> None:
        network = self.cluster.network
        cuts = [(node, peer) for node in fault.nodes for peer in self._peers(fault, node)]
        for node in fault.nodes:
            peers = [peer for n, peer in cuts if n == node]
            self._record("fault", "partition", node, role=fault.spec.target, peers=peers, rule="drop all")
        for node, peer in cuts:
            network.cut(node, peer)

        def restore() -> None:
            for node, peer in cuts:
                network.uncut(node, peer)
            for node in fault.nodes:
                self._record("heal", "clear-link-faults", node, role=fault.spec.target)

        fault.heal = restore

    def _clock_skew(self, fault: _Active) -> None:
        skew_ms = round(float(_seconds(fault.spec.args.get("skew", "30s"))) * 1000)
        for node in fault.nodes:
            self.cluster.skew_clock(node, skew_ms)
            self._record("fault", "clock-skew", node, role=fault.spec.target, skew_ms=skew_ms)

        def unskew() -> None:
            for node in fault.nodes:
                self.cluster.skew_clock(node, 0)
                self._record("heal", "clock-skew-cleared", node, role=fault.spec.target)

        fault.heal = unskew

    def _lose_unflushed(self, fault: _Active) -> None:
        self._disk_fault(fault)

    def _torn_tail(self, fault: _Active) -> None:
        self._disk_fault(fault)

    def _bit_flip(self, fault: _Active) -> None:
        self._disk_fault(fault)

    def _disk_fault(self, fault: _Active) -> None:
        """Kill -9, then the disk fault on the stopped broker's files (lab/experiment/diskfaults.py's
        rules; losing unflushed data is the in-memory disk's own power loss), restart at the heal."""
        if fault.spec.duration_s is None:
            fault.spec = replace(fault.spec, duration_s=1.0)
        action = fault.spec.action
        for node in fault.nodes:
            if node == CONTROLLER_NODE:
                raise ScenarioError("disk faults apply to brokers")
            self.cluster.crash(node, lose_unflushed=action == "lose-unflushed")
            done = [] if action == "lose-unflushed" else self._damage(node, fault)
            self._record("fault", action, node, role=fault.spec.target, signal="SIGKILL", disk=done)
        fault.heal = lambda: self._restart(fault)

    def _damage(self, node: str, fault: _Active) -> list[dict]:
        """torn-tail: the last segment loses the last ``bytes`` bytes (default half its last batch);
        bit-flip: one bit inverted in the last batch's records (past the header: the CRC breaks)."""
        disk = self.cluster.nodes[node].disk
        log_dir = self.cluster.nodes[node].config.log_dirs.strip("/")
        wanted = fault.spec.args.get("partitions")
        done = []
        for partition in range(self.context.partitions):
            if wanted is not None and partition not in wanted:
                continue
            directory = f"{log_dir}/{self.context.topic}-{partition}"
            segments = sorted(name for name in disk.listdir(directory) if name.endswith(".log"))
            batches = list(iter_headers(disk.read_file(f"{directory}/{segments[-1]}"))) if segments else []
            if not batches:
                continue
            path = f"{directory}/{segments[-1]}"
            data = disk.read_file(path)
            last = batches[-1][0]
            where = {"partition": f"{self.context.topic}-{partition}"}
            if fault.spec.action == "torn-tail":
                cut = fault.spec.args.get("bytes")
                cut = int(cut) if cut is not None else max(1, (len(data) - last) // 2)
                handle = disk.open(path)
                handle.truncate(max(0, len(data) - cut))
                handle.fsync()
                handle.close()
                done.append({**where, "cut_bytes": cut})
            else:
                at = min(len(data) - 1, last + BATCH_HEADER_BYTES + 1)
                disk.corrupt(path, at, bytes([data[at] ^ 0x01]))
                done.append({**where, "flipped_byte": at})
        return done


def _seconds(value: Any) -> float:
    return parse_seconds(value, "fault argument")
