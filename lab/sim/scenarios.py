"""Seeded scenarios on the real cores: the same code runs in the tests' seed sweeps and in
``python -m lab.sim --seed N``, so a failing seed replays exactly from the command line.

A scenario takes the seed, draws everything it does (which partition, how many records, which
broker to crash, when) from the seed's own Random, and checks what its client saw: every
acknowledged record is read back at the offset it was acknowledged with.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Callable

from brokerlab.errors import ErrorCode
from brokerlab.ids import CONTROLLER_NODE

from .client import LeaderNotFound, TransportFailed
from .cluster import SimCluster
from .cores import ClusterSpec, build_cluster, wait_ready
from .network import NetworkConfig
from .scheduler import SimulationError, derive_seed


class ScenarioFailed(SimulationError):
    """What the client saw contradicts what the cluster promised."""


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

    def as_dict(self) -> dict[str, Any]:
        return {
            "seed": self.seed, "produced": self.produced, "acked": self.acked, "failed": self.failed,
            "read": self.read, "faults": self.faults, "problems": self.problems, **self.summary,
        }


def replay_command(scenario: str, seed: int) -> str:
    return f".venv/bin/python -m lab.sim --scenario {scenario} --seed {seed}"


def network_for(seed: int, faults: bool) -> NetworkConfig:
    """Network knobs drawn from the seed (latencies always; loss/duplication only with ``faults``)."""
    return NetworkConfig.from_seed(random.Random(derive_seed(seed, "network-knobs")), faults=faults)


def produce_and_check(seed: int, *, brokers: int = 3, faults: bool = False) -> tuple[SimCluster, Report]:
    """Create a topic, produce seeded batches, crash and restart a broker (and maybe the
    controller) in the middle, then read every partition back and check every acknowledged record.

    Replication factor 1 (replication is issue 3): a crashed broker's partitions are offline
    until it restarts; a kill (not a power loss) must lose nothing that was acknowledged.
    """
    rng = random.Random(derive_seed(seed, "scenario", "produce-and-check"))
    spec = ClusterSpec(brokers=brokers)
    cluster = build_cluster(seed, spec, network_for(seed, faults))
    report = Report(seed)
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
            _bounce(cluster, rng, report)
        partition = rng.randrange(partitions)
        values = [f"{seed}-{batch}-{i}".encode() for i in range(rng.randint(1, 5))]
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
    report.summary = cluster.summary()
    if report.problems:
        raise ScenarioFailed(f"seed {seed}: {len(report.problems)} problem(s), first: {report.problems[0]}")
    return cluster, report


def _bounce(cluster: SimCluster, rng: random.Random, report: Report) -> None:
    """Kill a seed-chosen broker (or the controller), keep it down a while, start it again."""
    names = sorted(n for n in cluster.nodes if n.startswith("broker-")) + [CONTROLLER_NODE]
    victim = rng.choice(names)
    down_ms = rng.randrange(0, 3_000)
    report.faults.append(f"kill {victim} for {down_ms} ms")
    cluster.crash(victim)
    cluster.run_for(down_ms)
    cluster.start(victim)
    wait_ready(cluster)


SCENARIOS: dict[str, Callable[..., tuple[SimCluster, Report]]] = {
    "produce-and-check": produce_and_check,
}
