"""The history checker: anomalies by name (Jepsen's Kafka workload, REFERENCE.md's table).

``check(history)`` looks at every send and poll of a ``lab.history.History`` and reports:

| name | meaning |
|---|---|
| lost-write | an acknowledged send is never read, although an offset at or after its own in that partition was read |
| unseen | acknowledged but never read by anyone (lost, or just late): a superset of lost-write |
| duplicate | one value at more than one offset (reads and acknowledged offsets) |
| inconsistent-offsets | one offset read with more than one value |
| aborted-read (G1a) | a value whose send definitely failed is read |
| poll-skip | one consumer's successive reads of a partition jump over offsets that exist (read by someone or acknowledged); a seek in between allows it |
| nonmonotonic-poll | a consumer's next read of a partition is at or before its previous one (a seek in between allows it) |
| nonmonotonic-send | one producer's successive acknowledged sends to a partition land at non-increasing offsets |
| offset-gap | (brokerlab, opt-in with ``contiguous=True``) an offset between the first and last read of a partition that nobody read: a hole in a log read back in full |

Kafka semantics decide what is *expected*: acks=1 or an unclean election may lose acknowledged
writes (lost-write), a producer without idempotence may duplicate on retry and reorder with
more than one request in flight (duplicate, nonmonotonic-send). The caller says which names it
tolerates; ``CheckResult.valid`` is False when any other shows up.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Iterable

from lab.history import FAIL, OK, History

ANOMALIES = (
    "lost-write",
    "unseen",
    "duplicate",
    "inconsistent-offsets",
    "aborted-read",
    "poll-skip",
    "nonmonotonic-poll",
    "nonmonotonic-send",
    "offset-gap",
)
MAX_EXAMPLES = 20  # listed per anomaly in summaries; the counts are exact


@dataclass
class CheckResult:
    anomalies: dict[str, list[dict]]
    stats: dict[str, int]
    allowed: frozenset[str] = field(default_factory=frozenset)

    @property
    def valid(self) -> bool:
        return not any(cases for name, cases in self.anomalies.items() if name not in self.allowed)

    def count(self, name: str) -> int:
        return len(self.anomalies.get(name, ()))

    def counts(self) -> dict[str, int]:
        return {name: len(cases) for name, cases in self.anomalies.items() if cases}

    def summary(self) -> str:
        """One line: the stats, then each anomaly found with its count."""
        stats = " ".join(f"{k}={v}" for k, v in self.stats.items())
        found = ", ".join(f"{name}={n}" for name, n in self.counts().items()) or "no anomalies"
        return f"{'valid' if self.valid else 'INVALID'}: {found} ({stats})"

    def explain(self) -> str:
        """The summary and up to MAX_EXAMPLES cases of each anomaly (for assertion messages)."""
        lines = [self.summary()]
        for name, cases in self.anomalies.items():
            for case in cases[:MAX_EXAMPLES]:
                lines.append(f"  {name}: {case}")
            if len(cases) > MAX_EXAMPLES:
                lines.append(f"  {name}: ... {len(cases) - MAX_EXAMPLES} more")
        return "\n".join(lines)

    def to_json(self) -> dict:
        return {"valid": self.valid, "stats": self.stats, "counts": self.counts(),
                "anomalies": {name: cases[:MAX_EXAMPLES] for name, cases in self.anomalies.items() if cases}}


def _show(value: bytes | None) -> str:
    if value is None:
        return "null"
    try:
        return value.decode("ascii")
    except UnicodeDecodeError:
        return value.hex()


def check(history: History, allowed: Iterable[str] = (), contiguous: bool = False) -> CheckResult:
    anomalies: dict[str, list[dict]] = {name: [] for name in ANOMALIES}
    sends = history.sends
    # What was read where: (topic, partition) -> offset -> values; value -> positions.
    read_at: dict[tuple[str, int], dict[int, set]] = defaultdict(lambda: defaultdict(set))
    positions: dict[bytes, set[tuple[str, int, int]]] = defaultdict(set)
    read_values: set = set()
    for poll in history.polls:
        for topic, partition, offset, value in poll.records:
            read_at[(topic, partition)][offset].add(value)
            positions[value].add((topic, partition, offset))
            read_values.add(value)
    acked = [s for s in sends if s.outcome == OK and s.offset is not None]
    for send in acked:
        positions[send.value].add((send.topic, send.partition, send.offset))
    max_read = {tp: max(offsets) for tp, offsets in read_at.items() if offsets}

    for tp, offsets in sorted(read_at.items()):
        for offset, values in sorted(offsets.items()):
            if len(values) > 1:
                anomalies["inconsistent-offsets"].append(
                    {"topic": tp[0], "partition": tp[1], "offset": offset, "values": sorted(map(_show, values))})
    for value, where in positions.items():
        if len(where) > 1:
            anomalies["duplicate"].append({"value": _show(value), "at": sorted(where)})
    for send in acked:
        if send.value in read_values:
            continue
        case = {"value": _show(send.value), "topic": send.topic, "partition": send.partition,
                "offset": send.offset, "process": send.process}
        anomalies["unseen"].append(case)
        if max_read.get((send.topic, send.partition), -1) >= send.offset:
            anomalies["lost-write"].append(case)
    for send in sends:
        if send.outcome == FAIL and send.value in read_values:
            anomalies["aborted-read"].append({"value": _show(send.value), "error": send.error,
                                              "process": send.process, "at": sorted(positions[send.value])})
    _check_polls(history, read_at, acked, anomalies)
    _check_sends(acked, anomalies)
    if contiguous:
        for tp, offsets in sorted(read_at.items()):
            missing = sorted(set(range(min(offsets), max(offsets) + 1)) - set(offsets))
            if missing:
                anomalies["offset-gap"].append({"topic": tp[0], "partition": tp[1], "offsets": _ranges(missing)})
    stats = {
        "sends": len(sends),
        "acknowledged": len(acked),
        "failed": sum(1 for s in sends if s.outcome == FAIL),
        "indeterminate": sum(1 for s in sends if s.outcome not in (OK, FAIL)),
        "polls": len(history.polls),
        "records_read": sum(len(p.records) for p in history.polls),
        "values_read": len(read_values),
    }
    return CheckResult(anomalies, stats, frozenset(allowed))


def _check_polls(history: History, read_at, acked, anomalies) -> None:
    """Per consumer and partition, in history order: skips and rewinds between successive reads."""
    known: dict[tuple[str, int], set[int]] = defaultdict(set)
    for tp, offsets in read_at.items():
        known[tp].update(offsets)
    for send in acked:
        known[(send.topic, send.partition)].add(send.offset)
    sorted_known = {tp: sorted(offsets) for tp, offsets in known.items()}
    events = sorted([(p.index, "poll", p) for p in history.polls] + [(s.index, "seek", s) for s in history.seeks],
                    key=lambda e: e[0])
    last: dict[tuple[str, str, int], int] = {}  # (process, topic, partition) -> last offset read
    for _, kind, op in events:
        if kind == "seek":
            last.pop((op.process, op.topic, op.partition), None)
            continue
        for topic, partition, offset, _ in op.records:
            key = (op.process, topic, partition)
            previous = last.get(key)
            last[key] = offset
            if previous is None:
                continue
            if offset <= previous:
                anomalies["nonmonotonic-poll"].append({"process": op.process, "topic": topic, "partition": partition,
                                                       "previous": previous, "offset": offset})
            elif offset > previous + 1:
                skipped = _between(sorted_known.get((topic, partition), []), previous, offset)
                if skipped:
                    anomalies["poll-skip"].append({"process": op.process, "topic": topic, "partition": partition,
                                                   "from": previous, "to": offset, "skipped": _ranges(skipped)})


def _check_sends(acked, anomalies) -> None:
    last: dict[tuple[str, str, int], tuple[int, bytes]] = {}
    for send in sorted(acked, key=lambda s: s.index):
        key = (send.process, send.topic, send.partition)
        previous = last.get(key)
        last[key] = (send.offset, send.value)
        if previous is not None and send.offset <= previous[0]:
            anomalies["nonmonotonic-send"].append({
                "process": send.process, "topic": send.topic, "partition": send.partition,
                "previous": {"value": _show(previous[1]), "offset": previous[0]},
                "next": {"value": _show(send.value), "offset": send.offset}})


def _between(ordered: list[int], low: int, high: int) -> list[int]:
    import bisect

    return ordered[bisect.bisect_right(ordered, low): bisect.bisect_left(ordered, high)]


def _ranges(offsets: list[int]) -> list[str]:
    """[3, 4, 5, 9] -> ["3-5", "9"] (short enough to print)."""
    out: list[str] = []
    start = prev = None
    for offset in offsets:
        if start is None:
            start = prev = offset
        elif offset == prev + 1:
            prev = offset
        else:
            out.append(f"{start}-{prev}" if prev != start else str(start))
            start = prev = offset
    if start is not None:
        out.append(f"{start}-{prev}" if prev != start else str(start))
    return out


# ---- what a configuration promises, and the verdict against it ---------------------------------

DURABILITY = ("lost-write", "unseen")


@dataclass(frozen=True)
class Promise:
    """What Kafka's semantics promise for a producer/topic configuration (REFERENCE.md's matrix).

    - acks=all + min.insync.replicas >= 2 + clean elections: nothing acknowledged is lost
      (lost-write, unseen after a full read-back), and offsets are never rewritten.
    - idempotence: no duplicates, sends of one producer land in order (nonmonotonic-send).
      Without it, a retry after a lost answer may write twice and, with more than one request in
      flight, out of order.
    - always: a definitely failed send is never read (aborted-read); a consumer's reads of a
      partition move forward without skipping (poll-skip, nonmonotonic-poll) unless it seeked or
      data it read was truncated, which only a configuration that may lose data allows.
    """

    acks: str = "all"
    min_insync_replicas: int = 2
    replication_factor: int = 3
    idempotence: bool = False
    unclean_leader_election: bool = False
    max_in_flight: int = 5

    @property
    def durable(self) -> bool:
        return (self.acks in ("all", "-1") and self.min_insync_replicas >= 2 and self.replication_factor >= 2
                and not self.unclean_leader_election)

    def allowed(self) -> dict[str, str]:
        """Anomaly name -> why this configuration does not promise its absence."""
        out: dict[str, str] = {"offset-gap": "not one of Jepsen's anomalies (opt-in)"}
        if not self.durable:
            why = (f"acks={self.acks}" if self.acks not in ("all", "-1") else
                   "unclean.leader.election.enable=true" if self.unclean_leader_election else
                   f"min.insync.replicas={self.min_insync_replicas}")
            reason = f"{why} does not promise durability: an acknowledged write may be truncated"
            for name in ("lost-write", "unseen", "nonmonotonic-send", "poll-skip", "nonmonotonic-poll"):
                out[name] = reason
            if self.unclean_leader_election:
                out["inconsistent-offsets"] = "an unclean leader may rewrite offsets consumers already read"
                out["duplicate"] = "an unclean leader may rewrite offsets consumers already read"
        if not self.idempotence:
            out.setdefault("duplicate", "without idempotence a retried send may be written twice")
            if self.max_in_flight > 1:
                out.setdefault("nonmonotonic-send", "without idempotence, retries with more than one request "
                                                     "in flight may reorder")
        return out

    def describe(self) -> str:
        return (f"acks={self.acks} min.insync.replicas={self.min_insync_replicas} "
                f"replication.factor={self.replication_factor} idempotence={'on' if self.idempotence else 'off'} "
                f"unclean.leader.election={'on' if self.unclean_leader_election else 'off'} "
                f"max.in.flight={self.max_in_flight}")


@dataclass
class Verdict:
    ok: bool  # no promised anomaly showed up
    broken: dict[str, int]  # promised absent, yet found
    tolerated: dict[str, int]  # found, but the configuration does not promise otherwise
    reasons: dict[str, str]  # for each tolerated name: why it is allowed
    promise: Promise

    def to_json(self) -> dict:
        return {"ok": self.ok, "broken": self.broken, "tolerated": self.tolerated, "reasons": self.reasons,
                "promise": self.promise.describe(), "durable": self.promise.durable}

    def lines(self) -> list[str]:
        head = "PASS: every promise of the configuration held" if self.ok else (
            "FAIL: broke the configuration's promises: " + ", ".join(f"{k}={v}" for k, v in self.broken.items()))
        lines = [head, f"  promises of {self.promise.describe()}:"]
        promised = [name for name in ANOMALIES if name not in self.promise.allowed()]
        lines.append(f"    zero {', '.join(promised)}")
        if not self.promise.durable:
            lines.append("    NOT promised: durability of acknowledged writes (the checker counts what was lost)")
        for name, count in self.tolerated.items():
            lines.append(f"  allowed here: {name}={count} ({self.reasons[name]})")
        return lines


def judge(result: CheckResult, promise: Promise) -> Verdict:
    allowed = promise.allowed()
    counts = result.counts()
    broken = {name: n for name, n in counts.items() if name not in allowed}
    tolerated = {name: n for name, n in counts.items() if name in allowed}
    return Verdict(not broken, broken, tolerated, {name: allowed[name] for name in tolerated}, promise)
