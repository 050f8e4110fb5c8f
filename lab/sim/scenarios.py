"""Seeded scenarios on the real cores: the same code runs in the tests' seed sweeps and in
``python -m lab.sim --scenario NAME --seed N``, so a failing seed replays exactly from the
command line.

A scenario takes the seed, draws everything it does (which partition, how many records, which
broker to crash, when) from the seed's own Random, and checks what its clients saw. Two kinds:
``produce-and-check`` (a script: acks=1 batches around one bounce, every ack read back), and the
failover scenarios of ``lab.sim.catalog`` (data: a workload, fault steps and a verdict by
``lab.checker`` over the run's history, see ``lab.sim.failover``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Callable

from brokerlab.errors import ErrorCode
from brokerlab.ids import CONTROLLER_NODE

from .catalog import CATALOG
from .client import LeaderNotFound, RetriableError, TransportFailed
from .cluster import SimCluster
from .cores import ClusterSpec, build_cluster, wait_ready
from .failover import FailoverRun, FailoverScenario, ScenarioFailed, run_failover
from .invariants import InvariantSuite, replication_checks
from .network import NetworkConfig
from .scheduler import SimulationError, derive_seed


@dataclass
class Report:
    seed: int
    produced: int = 0
    acked: int = 0
    failed: int = 0
    read: int = 0
    faults: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    # Failover scenarios: the run (history, steps taken, verdict), kept even when it failed.
    failover: FailoverRun | None = None

    def as_dict(self) -> dict[str, Any]:
        out = {
            "seed": self.seed, "produced": self.produced, "acked": self.acked, "failed": self.failed,
            "read": self.read, "faults": self.faults, "problems": self.problems, **self.summary,
        }
        if self.failover is not None:
            out["failover"] = self.failover.facts()
            out["history_sha256"] = self.failover.history_digest()
        return out


def network_for(seed: int, faults: bool) -> NetworkConfig:
    """Network knobs drawn from the seed (latencies always; loss/duplication only with ``faults``)."""
    return NetworkConfig.from_seed(random.Random(derive_seed(seed, "network-knobs")), faults=faults)


@dataclass
class Scenario:
    """``spec`` draws the cluster to build from the scenario's Random (``brokers`` None: the
    scenario's own count); ``body`` runs against it with the same Random, filling the report
    and raising ScenarioFailed on a broken promise; ``network`` may adjust the seed's network."""

    name: str
    spec: Callable[[random.Random, int | None], ClusterSpec]
    body: Callable[[SimCluster, random.Random, Report], None]
    doc: str = ""
    network: Callable[[NetworkConfig], NetworkConfig] | None = None


@dataclass
class Run:
    """One scenario run: the cluster (and so its trace) is kept even when the run failed."""

    scenario: str
    seed: int
    brokers: int | None
    faults: bool
    cluster: SimCluster | None
    report: Report
    error: BaseException | None = None
    skip_checks: frozenset[str] = frozenset()

    @property
    def ok(self) -> bool:
        return self.error is None

    def replay_command(self) -> str:
        command = f".venv/bin/python -m lab.sim --scenario {self.scenario} --seed {self.seed}"
        if self.brokers is not None:
            command += f" --brokers {self.brokers}"
        if self.faults:
            command += " --faults"
        for name in sorted(self.skip_checks):
            command += f" --skip-check {name}"
        return command

    def describe_failure(self) -> str:
        return f"seed {self.seed}: {type(self.error).__name__}: {self.error}\n  replay: {self.replay_command()}"


def run_scenario(name: str | Scenario, seed: int, *, brokers: int | None = None, faults: bool = False,
                 skip_checks: frozenset[str] = frozenset()) -> Run:
    """Run a scenario (a name in SCENARIOS, or one built by the caller, e.g. ``failover_scenario``);
    failures of the cluster, an invariant or the scenario's checks end up in ``Run.error`` (a bug
    in the harness itself still raises). ``skip_checks`` names invariant checks to leave out (to
    see what else a seed shows once a known bug has been found)."""
    scenario = SCENARIOS[name] if isinstance(name, str) else name
    name = scenario.name
    rng = random.Random(derive_seed(seed, "scenario", name))
    report = Report(seed)
    run = Run(name, seed, brokers, faults, None, report, skip_checks=frozenset(skip_checks))
    network = network_for(seed, faults)
    if scenario.network is not None:
        network = scenario.network(network)
    checks = [check for check in replication_checks() if check.__name__ not in skip_checks]
    try:
        run.cluster = build_cluster(seed, scenario.spec(rng, brokers), network, [InvariantSuite(checks)])
        scenario.body(run.cluster, rng, report)
    except (SimulationError, TransportFailed, LeaderNotFound, RetriableError) as exc:
        run.error = exc
    if run.cluster is not None:
        report.summary = run.cluster.summary()
    return run


# -- failover scenarios (lab.sim.catalog) -----------------------------------------------------
def failover_scenario(data: dict[str, Any]) -> Scenario:
    """A registry entry for one failover scenario given as data."""
    failover = FailoverScenario.from_dict(data)

    def body(cluster: SimCluster, rng: random.Random, report: Report) -> None:
        def keep(run: FailoverRun) -> None:
            report.failover = run

        run = run_failover(failover, cluster, rng, on_start=keep)
        counts = run.workload.outcomes()
        report.produced = len(run.history.sends)
        report.acked, report.failed = counts["ok"], counts["fail"]
        report.read = sum(len(poll.records) for poll in run.history.polls if poll.process == "read-back")
        report.problems.extend(run.verdict.problems)
        if not run.verdict.ok:
            raise ScenarioFailed(run.verdict.explain())

    return Scenario(failover.name, lambda rng, brokers: failover.cluster_spec(rng, brokers), body,
                    failover.doc, failover.network)


# -- produce-and-check ------------------------------------------------------------------------
def produce_and_check_spec(rng: random.Random, brokers: int | None) -> ClusterSpec:
    # With per-batch fsync an acknowledged record must survive even a power loss; without it, a kill.
    brokers = 3 if brokers is None else brokers
    return ClusterSpec(brokers=brokers, broker_config={"log.flush.policy": rng.choice(["none", "batch"])})


def produce_and_check(cluster: SimCluster, rng: random.Random, report: Report) -> None:
    """Create a topic, produce seeded batches, crash and restart a broker (or the controller)
    in the middle, then read every partition back and check every acknowledged record.

    Replication factor 1 (replication is issue 3): a crashed broker's partitions are offline
    until it restarts. The spec picked ``log.flush.policy``: with ``none`` the fault is a kill
    (the page cache survives), with ``batch`` it may be a power loss; neither may lose an
    acknowledged record.
    """
    flush_policy = cluster.node("broker-1").config.log_config.flush_policy if "broker-1" in cluster.nodes else "none"
    report.faults.append(f"log.flush.policy={flush_policy}")
    client = cluster.client()
    client.request_timeout_ms = 5_000
    wait_ready(cluster)
    partitions = rng.randint(1, 4)
    # A lost answer makes the retry see TOPIC_ALREADY_EXISTS: that is success too.
    created = client.retrying(lambda: client.create_topic("events", partitions, replication_factor=1))
    if created.error_code not in (ErrorCode.NONE, ErrorCode.TOPIC_ALREADY_EXISTS):
        raise ScenarioFailed(f"CreateTopics failed: {created.error_code} {created.error_message}")
    acked: dict[int, dict[int, bytes]] = {p: {} for p in range(partitions)}
    batches = rng.randint(10, 30)
    crash_at = rng.randrange(batches)
    for batch in range(batches):
        if batch == crash_at:
            _bounce(cluster, rng, report, power_loss=flush_policy == "batch" and rng.random() < 0.5)
        partition = rng.randrange(partitions)
        values = [f"{report.seed}-{batch}-{i}".encode() for i in range(rng.randint(1, 5))]
        report.produced += len(values)
        try:
            answer = client.produce("events", partition, values, acks=1)
        except (TransportFailed, LeaderNotFound) as exc:
            report.failed += len(values)
            report.faults.append(f"produce {batch} failed: {exc}")
            continue
        if answer.error_code != ErrorCode.NONE:
            report.failed += len(values)
            continue
        report.acked += len(values)
        for i, value in enumerate(values):
            acked[partition][answer.base_offset + i] = value
        client.sleep(rng.randrange(0, 30))
    wait_ready(cluster)
    for partition in range(partitions):
        records = client.fetch_all("events", partition)
        report.read += len(records)
        by_offset = {record.offset: record.value for record in records}
        for offset, value in sorted(acked[partition].items()):
            if by_offset.get(offset) != value:
                report.problems.append(
                    f"events-{partition}@{offset}: acknowledged {value!r}, read {by_offset.get(offset)!r}"
                )
    if report.problems:
        raise ScenarioFailed(f"{len(report.problems)} acknowledged record(s) not read back, first: {report.problems[0]}")


def _bounce(cluster: SimCluster, rng: random.Random, report: Report, power_loss: bool) -> None:
    """Kill a seed-chosen broker (or the controller), keep it down a while, start it again."""
    names = sorted(n for n in cluster.nodes if n.startswith("broker-")) + [CONTROLLER_NODE]
    victim = rng.choice(names)
    down_ms = rng.randrange(0, 3_000)
    report.faults.append(f"{'power loss' if power_loss else 'kill'} {victim} for {down_ms} ms")
    cluster.crash(victim, lose_unflushed=power_loss)
    cluster.run_for(down_ms)
    cluster.start(victim)
    wait_ready(cluster)


SCENARIOS: dict[str, Scenario] = {
    "produce-and-check": Scenario("produce-and-check", produce_and_check_spec, produce_and_check,
                                  "acks=1 produce with a broker or controller bounce; every ack is read back"),
    **{entry["name"]: failover_scenario(entry) for entry in CATALOG},
}
FAILOVER_SCENARIOS = [entry["name"] for entry in CATALOG]
