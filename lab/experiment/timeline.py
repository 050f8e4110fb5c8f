"""The failover timeline of a run, per partition, from its history (client ops, faults, node events).

For every fault: fault -> victim fenced (controller's BrokerFenced) -> new leader and its epoch
(controller's LeaderChanged) -> first acknowledged produce after that -> first record consumers
read after that, each as milliseconds after the fault. Around them: leadership segments,
unavailability windows (stretches without an acknowledgement, longer than ``gap_ms``), ISR
shrinks and expansions, truncations with the offset ranges and record counts they removed, and
consumer-group rebalances with their causes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from lab.history import OK, Event, History

READ_BACK = "read-back"


@dataclass
class LeaderSpan:
    start_ms: float
    end_ms: float
    leader: int
    epoch: int


@dataclass
class FailoverStep:
    fault: str
    node: str
    partition: int
    at_ms: float
    was_leader: bool
    fenced_after_ms: float | None = None
    new_leader: int | None = None
    new_epoch: int | None = None
    new_leader_after_ms: float | None = None
    first_ack_after_ms: float | None = None
    consumers_resumed_after_ms: float | None = None


@dataclass
class Timeline:
    leaders: dict[int, list[LeaderSpan]] = field(default_factory=dict)
    steps: list[FailoverStep] = field(default_factory=list)
    windows: dict[int, list[tuple[float, float]]] = field(default_factory=dict)  # unavailability, per partition
    isr_changes: list[dict[str, Any]] = field(default_factory=list)
    truncations: list[dict[str, Any]] = field(default_factory=list)
    rebalances: list[dict[str, Any]] = field(default_factory=list)
    faults: list[dict[str, Any]] = field(default_factory=list)  # fault/heal events in order
    end_ms: float = 0.0

    def records_truncated(self) -> int:
        return sum(t["records_removed"] for t in self.truncations)

    def to_json(self) -> dict:
        return {"leaders": {p: [asdict(s) for s in spans] for p, spans in self.leaders.items()},
                "failovers": [asdict(s) for s in self.steps],
                "unavailability": {p: [{"start_ms": a, "end_ms": b, "ms": round(b - a, 1)} for a, b in w]
                                   for p, w in self.windows.items()},
                "isr_changes": self.isr_changes, "truncations": self.truncations, "rebalances": self.rebalances,
                "faults": self.faults, "records_truncated": self.records_truncated()}


def _int(value: Any, default: int = -1) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _isr(text: Any) -> list[int]:
    return [int(x) for x in str(text).strip("[]").split(",") if x.strip().lstrip("-").isdigit()]


def build(history: History, topic: str, partitions: int, initial: dict[int, tuple[int, int]],
          load_end_ms: float, gap_ms: float = 500.0) -> Timeline:
    """``initial``: partition -> (leader, epoch) when the load started."""
    timeline = Timeline(end_ms=max([load_end_ms] + [s.completed_ms or 0 for s in history.sends]))
    events = sorted(history.events, key=lambda e: (e.at_ms, e.index))
    controller = [e for e in events if e.kind == "cluster" and e.node == "controller"]
    for p in range(partitions):
        leader, epoch = initial.get(p, (-1, 0))
        spans = [LeaderSpan(0.0, timeline.end_ms, leader, epoch)]
        for e in controller:
            if e.name == "LeaderChanged" and _int(e.fields.get("partition")) == p and e.fields.get("topic") == topic:
                spans[-1].end_ms = e.at_ms
                spans.append(LeaderSpan(e.at_ms, timeline.end_ms, _int(e.fields.get("leader")),
                                        _int(e.fields.get("leader_epoch"), 0)))
        timeline.leaders[p] = spans
    for e in controller:
        if e.name in ("IsrShrunk", "IsrExpanded") and e.fields.get("topic") == topic:
            timeline.isr_changes.append({"at_ms": e.at_ms, "change": e.name, "partition": _int(e.fields.get("partition")),
                                         "isr": _isr(e.fields.get("isr")), "previous_isr": _isr(e.fields.get("previous_isr")),
                                         "reason": e.fields.get("reason", "")})
    for e in events:
        if e.kind == "cluster" and e.name == "LogTruncated" and e.fields.get("topic") == topic:
            start, end = _int(e.fields.get("from_offset")), _int(e.fields.get("to_offset"))
            timeline.truncations.append({"at_ms": e.at_ms, "node": e.node, "partition": _int(e.fields.get("partition")),
                                         "offsets": f"{start}-{end - 1}" if end > start else "",
                                         "records_removed": _int(e.fields.get("records_removed"), 0),
                                         "reason": e.fields.get("reason", "")})
        elif e.kind == "cluster" and e.name == "LogRecovered":
            timeline.truncations.append({"at_ms": e.at_ms, "node": e.node, "partition": e.fields.get("partition", ""),
                                         "offsets": "", "records_removed": _int(e.fields.get("records_removed"), 0),
                                         "reason": "start-up recovery: " + " ".join(
                                             f"{k}={v}" for k, v in e.fields.items() if k != "topic")})
        elif e.name.startswith("Group") and e.name in ("GroupRebalanceStarted", "GroupJoinCompleted",
                                                       "GroupMemberRemoved", "GroupStaticMemberReplaced"):
            timeline.rebalances.append({"at_ms": e.at_ms, "event": e.name, "node": e.node,
                                        "generation_id": e.fields.get("generation_id", ""),
                                        "cause": e.fields.get("reason", e.fields.get("cause", ""))})
        elif e.kind == "client" and e.name.startswith("Partitions"):
            timeline.rebalances.append({"at_ms": e.at_ms, "event": e.name, "node": e.node,
                                        "generation_id": e.fields.get("generation_id", ""),
                                        "cause": f"partitions {e.fields.get('partitions')}"})
        elif e.kind in ("fault", "heal"):
            timeline.faults.append({"at_ms": e.at_ms, "kind": e.kind, "action": e.name, "node": e.node,
                                    **{k: v for k, v in e.fields.items() if k in ("role", "signal", "peers", "rule",
                                                                                  "skew_ms", "disk")}})
    _windows(timeline, history, topic, partitions, gap_ms, load_end_ms)
    _failovers(timeline, history, topic, controller)
    return timeline


def _windows(timeline: Timeline, history: History, topic: str, partitions: int, gap_ms: float,
             load_end_ms: float) -> None:
    for p in range(partitions):
        acks = sorted(s.completed_ms for s in history.sends
                      if s.outcome == OK and s.topic == topic and s.partition == p and s.completed_ms is not None)
        first = min((s.invoked_ms for s in history.sends if s.topic == topic and s.partition == p), default=None)
        windows = []
        if first is not None:
            edges = [first, *acks, load_end_ms] if acks and acks[-1] < load_end_ms else [first, *acks]
            for a, b in zip(edges, edges[1:]):
                if b - a > gap_ms:
                    windows.append((round(a, 1), round(b, 1)))
        timeline.windows[p] = windows


def _leader_at(timeline: Timeline, partition: int, at_ms: float) -> int:
    for span in timeline.leaders.get(partition, []):
        if span.start_ms <= at_ms < span.end_ms:
            return span.leader
    return -1


def _failovers(timeline: Timeline, history: History, topic: str, controller: list[Event]) -> None:
    for fault in (e for e in history.events if e.kind == "fault"):
        for node in (fault.node or "").split(","):
            if not node.startswith("broker-"):
                continue
            victim = _int(node.removeprefix("broker-"))
            led = [p for p in timeline.leaders if _leader_at(timeline, p, fault.at_ms) == victim]
            for p in led:
                step = FailoverStep(fault.name, node, p, round(fault.at_ms, 1), True)
                fenced = next((e for e in controller if e.name == "BrokerFenced" and e.at_ms >= fault.at_ms
                               and _int(e.fields.get("broker_id")) == victim), None)
                if fenced is not None:
                    step.fenced_after_ms = round(fenced.at_ms - fault.at_ms, 1)
                moved = next((e for e in controller if e.name == "LeaderChanged" and e.at_ms >= fault.at_ms
                              and e.fields.get("topic") == topic and _int(e.fields.get("partition")) == p
                              and _int(e.fields.get("leader")) >= 0), None)  # offline (-1) is not a new leader
                since = fault.at_ms
                if moved is not None:
                    step.new_leader = _int(moved.fields.get("leader"))
                    step.new_epoch = _int(moved.fields.get("leader_epoch"))
                    step.new_leader_after_ms = round(moved.at_ms - fault.at_ms, 1)
                    since = moved.at_ms
                ack = min((s.completed_ms for s in history.sends if s.outcome == OK and s.topic == topic
                           and s.partition == p and s.completed_ms is not None and s.completed_ms >= since), default=None)
                if ack is not None:
                    step.first_ack_after_ms = round(ack - fault.at_ms, 1)
                read = min((poll.at_ms for poll in history.polls if poll.process != READ_BACK and poll.at_ms >= since
                            and any(t == topic and q == p for t, q, _, _ in poll.records)), default=None)
                if read is not None:
                    step.consumers_resumed_after_ms = round(read - fault.at_ms, 1)
                timeline.steps.append(step)
