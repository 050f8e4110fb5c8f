"""Scenarios are data: a TOML file says which cluster, which load, which faults when, and what
verdict to expect. Built-in ones live in ``lab/scenarios/*.toml``; a user copies one, edits it and
runs it by path. The same file drives every target (local processes, docker-compose, and the
deterministic simulator): nothing in it is specific to how nodes run.

    name = "leader-kill"
    description = "..."
    duration = "30s"

    [cluster]            brokers, config (node keys, Kafka names)
    [topic]              name, partitions, replication_factor, configs
    [workload]           producers, rate, value_bytes, keys, acks, idempotence, max_in_flight,
                         request_timeout_ms, delivery_timeout_ms, consumers, consumer_mode
                         (assign|group), assignment_strategy, static_members, session_timeout_ms
    [[faults]]           at ("40%" of the duration or "5s"), action, target, partition, duration,
                         plus action arguments (see lab/experiment/nemesis.py ACTIONS)
    [expect]             verdict ("pass" | "fail"), anomalies = { "lost-write" = ">0" }, notes

Times: "250ms", "5s", "1.5s", "2m", or a bare number of seconds; ``at`` may be a percentage of
the run's duration so a scenario scales with ``--duration``.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from brokerlab.errors import ErrorCode, KafkaError
from client.producer.idempotence import resolve_idempotence
from client.producer.sender import parse_acks

BUILTIN_DIR = Path(__file__).resolve().parent.parent / "scenarios"
_TIME = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*(ms|s|m)?\s*$")


class ScenarioError(KafkaError):
    def __init__(self, message: str) -> None:
        super().__init__(ErrorCode.INVALID_REQUEST, message)


def parse_seconds(text: Any, what: str = "time") -> float:
    """"250ms" -> 0.25, "5s" -> 5.0, "2m" -> 120.0, 3 -> 3.0."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return float(text)
    match = _TIME.match(str(text))
    if not match:
        raise ScenarioError(f"{what}: expected a time like 250ms, 5s or 2m, got {text!r}")
    value, unit = float(match.group(1)), match.group(2) or "s"
    return value / 1000 if unit == "ms" else value * 60 if unit == "m" else value


def parse_at(text: Any, duration_s: float, what: str = "at") -> float:
    """A point in the run: "40%" of the duration, a time, or a sum of both ("40% + 350ms")."""
    if not isinstance(text, str):
        return parse_seconds(text, what)
    total = 0.0
    for term in text.split("+"):
        term = term.strip()
        if term.endswith("%"):
            try:
                total += duration_s * float(term[:-1]) / 100
            except ValueError:
                raise ScenarioError(f"{what}: bad percentage {text!r}") from None
        else:
            total += parse_seconds(term, what)
    return total


@dataclass
class ClusterSpec:
    brokers: int = 3
    config: dict[str, str] = field(default_factory=dict)


@dataclass
class TopicSpec:
    name: str = "experiment"
    partitions: int = 3
    replication_factor: int = 3
    configs: dict[str, str] = field(default_factory=lambda: {"min.insync.replicas": "2"})


@dataclass
class WorkloadSpec:
    producers: int = 2
    rate: float = 200.0  # records per second, all producers together
    value_bytes: int = 64
    keys: int = 32  # > 0: keyed (the partitioner picks by key hash); 0: partitions in turn
    acks: str = "all"
    # enable.idempotence: on by default as in Kafka 3.0+; in effect only with acks=all and at most
    # five requests in flight (``effective_idempotence``), as the producer's own default is.
    idempotence: bool = True
    max_in_flight: int = 5
    linger_ms: int = 2
    request_timeout_ms: int = 3000
    delivery_timeout_ms: int = 12000
    consumers: int = 1
    consumer_mode: str = "assign"  # assign: every consumer reads every partition; group: one group
    group: str = "experiment-group"
    assignment_strategy: str = "range"  # range | roundrobin | sticky | cooperative-sticky
    static_members: bool = False  # group.instance.id per member (KIP-345)
    session_timeout_ms: int = 3000
    heartbeat_interval_ms: int = 500


def effective_idempotence(spec: WorkloadSpec) -> bool:
    """Kafka's rule for a default-on setting: quietly off with acks other than all or more than
    five requests in flight (asked for explicitly with those, the real producer refuses)."""
    return bool(spec.idempotence) and resolve_idempotence(None, parse_acks(spec.acks), spec.max_in_flight)


@dataclass
class FaultSpec:
    at_s: float
    action: str
    target: str = "leader"
    partition: int = 0
    duration_s: float | None = None  # heal after this long; None: healed before the read-back
    args: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        what = f"{self.action} {self.target}" + (f" (partition {self.partition})" if "leader" in self.target
                                                  or "follower" in self.target else "")
        return what + (f" for {self.duration_s:g}s" if self.duration_s is not None else "")


@dataclass
class Expectation:
    verdict: str = "pass"  # pass: every promise held; fail: a promise broken (a bug, or unclean)
    anomalies: dict[str, str] = field(default_factory=dict)  # name -> "0", ">0", ">=3", "<=2"
    notes: str = ""

    def check(self, verdict_ok: bool, counts: dict[str, int]) -> list[str]:
        """What differs from the expectation (empty: as expected)."""
        problems = []
        if (self.verdict == "pass") != verdict_ok:
            problems.append(f"verdict {'pass' if verdict_ok else 'fail'}, expected {self.verdict}")
        for name, rule in self.anomalies.items():
            count = counts.get(name, 0)
            if not _compare(count, rule):
                problems.append(f"{name}={count}, expected {rule}")
        return problems


def _compare(count: int, rule: str) -> bool:
    match = re.match(r"^\s*(>=|<=|>|<|==|=)?\s*(\d+)\s*$", str(rule))
    if not match:
        raise ScenarioError(f"expect.anomalies: bad rule {rule!r} (use 0, >0, >=3, <=2)")
    op, n = match.group(1) or "==", int(match.group(2))
    return {">": count > n, "<": count < n, ">=": count >= n, "<=": count <= n}.get(op, count == n)


@dataclass
class Scenario:
    name: str
    description: str = ""
    duration_s: float = 30.0
    cluster: ClusterSpec = field(default_factory=ClusterSpec)
    topic: TopicSpec = field(default_factory=TopicSpec)
    workload: WorkloadSpec = field(default_factory=WorkloadSpec)
    faults: list[FaultSpec] = field(default_factory=list)
    expect: Expectation = field(default_factory=Expectation)
    source: str = ""
    raw_faults: list[dict] = field(default_factory=list)  # as written, to re-resolve for another duration

    def with_duration(self, duration_s: float) -> "Scenario":
        """The same scenario over another duration (percentages rescale, absolute times stay)."""
        return replace(self, duration_s=duration_s, faults=[_fault(f, duration_s) for f in self.raw_faults])

    def settings(self) -> dict[str, Any]:
        return {"cluster": vars(self.cluster), "topic": vars(self.topic), "workload": vars(self.workload),
                "faults": self.raw_faults, "expect": vars(self.expect), "duration_s": self.duration_s}


def _section(cls, data: dict, where: str):
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ScenarioError(f"[{where}]: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    values = dict(data)
    for key in ("config", "configs"):
        if key in values:
            values[key] = {str(k): str(v).lower() if isinstance(v, bool) else str(v) for k, v in values[key].items()}
    if "acks" in values:
        values["acks"] = str(values["acks"])
    return cls(**values)


def _fault(data: dict, duration_s: float) -> FaultSpec:
    data = dict(data)
    try:
        at = parse_at(data.pop("at"), duration_s)
        action = str(data.pop("action"))
    except KeyError as exc:
        raise ScenarioError(f"[[faults]]: every fault needs {exc.args[0]!r}") from None
    duration = data.pop("duration", None)
    return FaultSpec(at, action, str(data.pop("target", "leader")), int(data.pop("partition", 0)),
                     parse_at(duration, duration_s, "duration") if duration is not None else None, data)


def parse(text: str, source: str = "<string>") -> Scenario:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{source}: {exc}") from None
    if "name" not in data:
        raise ScenarioError(f"{source}: a scenario needs a name")
    duration_s = parse_seconds(data.get("duration", 30), "duration")
    raw_faults = list(data.get("faults", []))
    from lab.experiment.nemesis import ACTIONS  # the one list of actions

    faults = [_fault(f, duration_s) for f in raw_faults]
    for fault in faults:
        if fault.action not in ACTIONS:
            raise ScenarioError(f"{source}: unknown fault action {fault.action!r} (known: {', '.join(sorted(ACTIONS))})")
    unknown = sorted(set(data) - {"name", "description", "duration", "cluster", "topic", "workload", "faults", "expect"})
    if unknown:
        raise ScenarioError(f"{source}: unknown top-level key(s) {', '.join(unknown)}")
    scenario = Scenario(
        name=str(data["name"]), description=str(data.get("description", "")).strip(), duration_s=duration_s,
        cluster=_section(ClusterSpec, data.get("cluster", {}), "cluster"),
        topic=_section(TopicSpec, data.get("topic", {}), "topic"),
        workload=_section(WorkloadSpec, data.get("workload", {}), "workload"),
        faults=faults, expect=_section(Expectation, data.get("expect", {}), "expect"), source=source,
        raw_faults=raw_faults)
    if scenario.workload.consumer_mode not in ("assign", "group"):
        raise ScenarioError(f"{source}: workload.consumer_mode must be assign or group")
    if scenario.workload.acks not in ("0", "1", "all", "-1"):
        raise ScenarioError(f"{source}: workload.acks must be 0, 1 or all")
    return scenario


def load(name_or_path: str | Path) -> Scenario:
    """A built-in scenario by name, or a scenario file by path."""
    path = Path(name_or_path)
    if not path.suffix and not path.exists():
        path = BUILTIN_DIR / f"{name_or_path}.toml"
    if not path.is_file():
        raise ScenarioError(f"no scenario {str(name_or_path)!r} (built-in: {', '.join(builtin_names())}; "
                            "or give the path of a .toml file)")
    return parse(path.read_text(), str(path))


def builtin_names() -> list[str]:
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.toml"))


def builtins() -> list[Scenario]:
    return [load(name) for name in builtin_names()]
