"""Judging a simulated failover run: ``lab.checker`` on its history, plus named checks.

The history of a run is judged by the same checker as the real-process experiments:
``lab.checker.check`` names the anomalies (REFERENCE.md's table) and ``lab.checker.judge`` holds
them to the ``Promise`` of the scenario's configuration (acks=all + min ISR 2 promises no loss;
acks=1 does not; no idempotence allows a retry's duplicate). On top of that, the simulator reads
everything back, so a hole in a partition (``offset-gap``) is a failure too; a scenario's
``Expect`` may tolerate more, with a reason (all replicas losing power together without fsync),
and names further checks. Those read the history, the trace (truncations, recoveries, fencing,
controlled shutdowns) and the workload (who acknowledged what, which values a retry may have
written twice):

=============================  ===================================================================
``no-silent-loss``             every lost acknowledged record is explained by a recorded LogTruncated
                               (covering its offset) or LogRecovered (ending at or below it) of the
                               broker that acknowledged it, after the acknowledgement
``loss-equals-truncation``     the acknowledged records inside those brokers' LogTruncated ranges are
                               exactly the lost ones, and there are some (acks=1: "count it exactly")
``loss-only-from:P``           every lost record was sent by producer P
``unserved:P``                 nothing producer P sent is ever read (a zombie's tail is never served)
``zero-failed-in:W``           every send invoked inside window W was acknowledged
``never-acked-in:W``           no new write was acknowledged inside window W (an idempotent retry
                               answered with the offsets it was written at before is none)
``failed-in:W:CODE``           some send completed inside window W failed definitely with CODE
``acked-after:W``              some send was acknowledged after window W closed
``acked-in:W``                 some send was acknowledged inside window W
``fenced:NAME``                the controller fenced the broker bound to NAME
``truncated:NAME``             the broker bound to NAME logged a LogTruncated with records removed
``controlled-shutdowns``       every broker stop completed its controlled shutdown (none abandoned)
=============================  ===================================================================

A ``duplicate`` is always checked against the workload: a value at two offsets is only
acceptable when a producer without idempotence retried it after an attempt whose fate was
unknown, or, where offsets may be rewritten (``inconsistent-offsets`` tolerated: every replica
lost its unflushed tail), when the final log holds it once (a copy read before the loss, the
retry after it); any other duplicate is a bug. Sends of an idempotent producer must land in
order (``nonmonotonic-send``) even when another producer of the scenario makes the promise
weaker.

Safety checks hold on any network. The others need the scenario's setup to have worked as
planned on a healthy network (a burst landing on the zombie alone, a clean step with no lost
message, a window long enough for a definite failure): with ``--faults`` (message loss) they
are skipped (``LIVENESS``), and ``loss-equals-truncation`` keeps its equality but not its
"some were lost" part.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

from brokerlab.ids import broker_id_of
from lab import checker
from lab.checker import CheckResult
from lab.experiment.timeline import READ_BACK
from lab.history import FAIL, OK

from .trace import Trace
from .workload import SimHistory, Workload


@dataclass(frozen=True)
class Expect:
    """Beyond the configuration's promise: anomalies the scenario's faults make legitimate
    (name -> why) and further named checks."""

    tolerate: tuple[tuple[str, str], ...] = ()
    checks: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Expect":
        return cls(tuple(sorted(data.get("tolerate", {}).items())), tuple(data.get("checks", ())))


@dataclass
class Verdict:
    result: CheckResult
    promise: checker.Verdict | None = None
    problems: list[str] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    def explain(self) -> str:
        lines = [self.result.summary(), *self.problems]
        if self.promise is not None:
            lines += self.promise.lines()
        return "\n".join(lines)


@dataclass
class Evidence:
    """Everything a check may look at."""

    history: SimHistory
    trace: Trace
    workload: Workload
    windows: dict[str, list[int]]  # virtual ms
    bindings: dict[str, str]
    healthy: bool = True  # no message faults: the setup steps did what they planned
    result: CheckResult | None = None

    def window(self, name: str) -> tuple[float, float]:
        start, end = self.windows[name]
        return self.history.at(start), self.history.at(end)

    def sends_by_value(self) -> dict[bytes, Any]:
        return {send.value: send for send in self.history.sends}

    def lost(self) -> list[dict]:
        """Acknowledged and never read (the read-back covers every partition to its end)."""
        return self.result.anomalies["unseen"] if self.result is not None else []


def judge(expect: Expect, evidence: Evidence, promise: checker.Promise) -> Verdict:
    result = checker.check(evidence.history, contiguous=True)
    evidence.result = result
    against = checker.judge(result, promise)
    verdict = Verdict(result, against)
    verdict.facts.update(result.stats)
    verdict.facts["anomalies"] = result.counts()
    verdict.facts["promise"] = against.to_json()
    tolerated = dict(expect.tolerate)
    # Duplicates are judged one by one below (a retry without idempotence explains one).
    broken = {name: n for name, n in against.broken.items() if name not in tolerated and name != "duplicate"}
    if result.count("offset-gap") and "offset-gap" not in tolerated:  # everything was read back
        broken["offset-gap"] = result.count("offset-gap")
    if broken:
        verdict.problems.append(
            "broke the configuration's promises (" + promise.describe() + "): "
            + ", ".join(f"{k}={v}" for k, v in broken.items()) + "\n" + _examples(result, broken))
    maybe_duplicated = evidence.workload.maybe_duplicated()
    duplicates = result.anomalies["duplicate"]
    unexplained = [case for case in duplicates if case["value"].encode() not in maybe_duplicated]
    verdict.facts["duplicates_explained_by_retries"] = len(duplicates) - len(unexplained)
    if "inconsistent-offsets" in tolerated or "inconsistent-offsets" in promise.allowed():
        # Offsets may be rewritten here: a value read at an offset that was then lost, and
        # written again (a retry), is at two offsets but in the final log once.
        final = _read_back_counts(evidence.history)
        rewritten = [case for case in unexplained if final.get(case["value"].encode(), 0) <= 1]
        verdict.facts["duplicates_from_rewritten_offsets"] = len(rewritten)
        unexplained = [case for case in unexplained if case not in rewritten]
    if unexplained and "duplicate" not in tolerated:
        verdict.problems.append(f"duplicate without a retry that could explain it: {unexplained[:5]}")
    # The promise is the weakest producer's; an idempotent one is held to in-order sends anyway.
    idempotent = {p.process for p in evidence.workload.producers.values() if p.idempotent}
    reordered = [case for case in result.anomalies["nonmonotonic-send"] if case["process"] in idempotent]
    if reordered and "nonmonotonic-send" not in tolerated and "nonmonotonic-send" not in broken:
        verdict.problems.append(f"nonmonotonic-send from an idempotent producer: {reordered[:5]}")
    verdict.facts["lost"] = len(evidence.lost())
    if result.stats["acknowledged"] == 0 and evidence.healthy:
        verdict.problems.append("nothing was acknowledged: the scenario tested nothing")
    for name in expect.checks:
        kind, _, arg = name.partition(":")
        if kind in LIVENESS and not evidence.healthy:
            continue
        problem = CHECKS[kind](evidence, arg, verdict.facts)
        if problem:
            verdict.problems.append(f"{name}: {problem}")
    return verdict


def _read_back_counts(history: SimHistory) -> dict[bytes, int]:
    """How often each value is in the final logs (the read-back reads every partition in full)."""
    counts: dict[bytes, int] = {}
    for poll in history.polls:
        if poll.process == READ_BACK:
            for _, _, _, value in poll.records:
                counts[value] = counts.get(value, 0) + 1
    return counts


def _examples(result: CheckResult, names: dict[str, int], limit: int = 5) -> str:
    return "\n".join(f"  {name}: {case}" for name in names for case in result.anomalies.get(name, [])[:limit])


# -- the named checks: (evidence, argument, facts) -> problem or None -------------------------
def _explanations(evidence: Evidence, kinds: Iterable[str]) -> dict[tuple[str, str, int], list]:
    """(node, topic, partition) -> truncation/recovery trace entries of that kind."""
    out: dict[tuple[str, str, int], list] = {}
    wanted = set(kinds)
    for entry in evidence.trace.entries:
        if entry.name in wanted and entry.node.startswith("broker-"):
            out.setdefault((entry.node, entry.get("topic"), entry.get("partition")), []).append(entry)
    return out


def _covers(entry: Any, offset: int) -> bool:
    if entry.name == "LogTruncated":
        return entry.get("from_offset", 0) <= offset < entry.get("to_offset", 0)
    return entry.get("log_end_offset", 0) <= offset  # LogRecovered: the log came back ending below it


def _explained(evidence: Evidence, send: Any, kinds: Iterable[str], table: dict) -> bool:
    broker = evidence.workload.acknowledged_by().get(send.value)
    if broker is None or send.offset is None:
        return False
    acked_at = send.completed_ms or 0.0
    for entry in table.get((broker, send.topic, send.partition), ()):
        if evidence.history.at(entry.now_ms) >= acked_at and _covers(entry, send.offset):
            return True
    return False


def no_silent_loss(evidence: Evidence, arg: str, facts: dict) -> str | None:
    table = _explanations(evidence, ("LogTruncated", "LogRecovered"))
    sends = evidence.sends_by_value()
    silent = [case for case in evidence.lost()
              if not _explained(evidence, sends[case["value"].encode()], ("LogTruncated", "LogRecovered"), table)]
    if silent:
        return f"{len(silent)} lost record(s) with no truncation or recovery to explain them, first {silent[:3]}"
    return None


def loss_equals_truncation(evidence: Evidence, arg: str, facts: dict) -> str | None:
    table = _explanations(evidence, ("LogTruncated",))
    copies = {send.value for send in evidence.history.sends
              if send.outcome == OK and _explained(evidence, send, ("LogTruncated",), table)}
    # A value a retry wrote twice may lose its acknowledged copy and keep the other: not lost.
    truncated = copies - evidence.history.read_values()
    lost = {case["value"].encode() for case in evidence.lost()}
    facts["truncated_acknowledged"] = len(truncated)
    facts["truncated_acknowledged_copies_read_elsewhere"] = len(copies) - len(truncated)
    facts["records_truncated"] = sum(e.get("records_removed", 0) for entries in table.values() for e in entries)
    if not truncated and evidence.healthy:
        return "no acknowledged record was truncated: the scenario did not provoke the loss it counts"
    if lost != truncated:
        return (f"lost {len(lost)} acknowledged records, truncation logs account for {len(truncated)}: "
                f"lost but not truncated {sorted(lost - truncated)[:5]}, truncated but read {sorted(truncated - lost)[:5]}")
    return None


def loss_only_from(evidence: Evidence, arg: str, facts: dict) -> str | None:
    others = [case for case in evidence.lost() if case["process"] != arg]
    return f"{len(others)} lost record(s) from other producers, first {others[:3]}" if others else None


def unserved(evidence: Evidence, arg: str, facts: dict) -> str | None:
    theirs = {send.value for send in evidence.history.sends if send.process == arg}
    served = sorted(theirs & evidence.history.read_values())
    facts[f"sent_by_{arg}"] = len(theirs)
    return f"{len(served)} record(s) of {arg} were served, first {served[:3]}" if served else None


def zero_failed_in(evidence: Evidence, arg: str, facts: dict) -> str | None:
    start, end = evidence.window(arg)
    inside = [s for s in evidence.history.sends if start <= s.invoked_ms <= end]
    failed = [s for s in inside if s.outcome != OK]
    facts[f"sends_in_{arg}"] = len(inside)
    facts[f"failed_in_{arg}"] = len(failed)
    if not inside:
        return f"no send was invoked inside window {arg}"
    if failed:
        first = failed[0]
        return f"{len(failed)} of {len(inside)} sends failed, first {first.value!r}: {first.outcome} {first.error}"
    return None


def never_acked_in(evidence: Evidence, arg: str, facts: dict) -> str | None:
    start, end = evidence.window(arg)
    acked = [s for s in evidence.history.sends
             if s.outcome == OK and s.completed_ms is not None and start <= s.completed_ms <= end]
    # An idempotent retry of a batch written (and committed) before the window, answered with its
    # original offsets, acknowledges no new write: its first answer was lost on the way back.
    retried = _duplicate_answers(evidence)
    new = [s for s in acked if (s.topic, s.partition, s.offset) not in retried]
    facts[f"retries_acknowledged_in_{arg}"] = len(acked) - len(new)
    return f"{len(new)} send(s) acknowledged inside, first {new[0].value!r}" if new else None


def _duplicate_answers(evidence: Evidence) -> set[tuple[str, int, int]]:
    """Offsets that a broker answered a retry with (DuplicateProduceAnswered): written before."""
    out: set[tuple[str, int, int]] = set()
    for entry in evidence.trace.named("DuplicateProduceAnswered"):
        topic, partition = entry.get("topic"), entry.get("partition")
        out.update((topic, partition, offset) for offset in range(entry.get("base_offset"), entry.get("last_offset") + 1))
    return out


def failed_in(evidence: Evidence, arg: str, facts: dict) -> str | None:
    window, _, code = arg.partition(":")
    start, end = evidence.window(window)
    failed = [s for s in evidence.history.sends
              if s.outcome == FAIL and s.completed_ms is not None and start <= s.completed_ms <= end and s.error == code]
    facts[f"failed_{code}"] = len(failed)
    return None if failed else f"no send failed with {code} inside window {window}"


def acked_after(evidence: Evidence, arg: str, facts: dict) -> str | None:
    _, end = evidence.window(arg)
    after = [s for s in evidence.history.sends if s.outcome == OK and (s.completed_ms or 0) > end]
    facts[f"acknowledged_after_{arg}"] = len(after)
    return None if after else f"nothing acknowledged after window {arg} closed"


def acked_in(evidence: Evidence, arg: str, facts: dict) -> str | None:
    start, end = evidence.window(arg)
    inside = [s for s in evidence.history.sends if s.outcome == OK and start <= (s.completed_ms or -1) <= end]
    facts[f"acknowledged_in_{arg}"] = len(inside)
    return None if inside else f"nothing acknowledged inside window {arg}"


def fenced(evidence: Evidence, arg: str, facts: dict) -> str | None:
    broker_id = broker_id_of(evidence.bindings[arg])
    hits = [e for e in evidence.trace.named("BrokerFenced", "controller") if e.get("broker_id") == broker_id]
    return None if hits else f"the controller never fenced {evidence.bindings[arg]}"


def truncated(evidence: Evidence, arg: str, facts: dict) -> str | None:
    node = evidence.bindings[arg]
    removed = sum(e.get("records_removed", 0) for e in evidence.trace.named("LogTruncated", node))
    facts[f"records_truncated_on_{arg}"] = removed
    return None if removed else f"{node} truncated nothing"


def controlled_shutdowns(evidence: Evidence, arg: str, facts: dict) -> str | None:
    def brokers(name: str) -> list:
        return [e for e in evidence.trace.named(name) if e.node.startswith("broker-")]

    stops = brokers("NodeStopping")
    completed = brokers("ControlledShutdownCompleted")  # (the controller logs its own as well)
    abandoned = brokers("ControlledShutdownAbandoned")
    durations = [e.get("duration_ms", 0) for e in completed]
    facts["controlled_shutdowns"] = len(completed)
    facts["controlled_shutdown_max_ms"] = max(durations, default=0)
    if not stops:
        return "no broker was stopped"
    if abandoned:
        return f"{len(abandoned)} controlled shutdown(s) abandoned at their timeout: {[e.node for e in abandoned]}"
    if len(completed) < len(stops):
        return f"{len(stops)} stops, {len(completed)} controlled shutdowns completed"
    return None


# Checks that need the planned setup and a healthy network (skipped with --faults).
LIVENESS = frozenset({"unserved", "zero-failed-in", "failed-in", "acked-after", "acked-in", "fenced", "truncated",
                      "controlled-shutdowns"})

CHECKS = {
    "no-silent-loss": no_silent_loss,
    "loss-equals-truncation": loss_equals_truncation,
    "loss-only-from": loss_only_from,
    "unserved": unserved,
    "zero-failed-in": zero_failed_in,
    "never-acked-in": never_acked_in,
    "failed-in": failed_in,
    "acked-after": acked_after,
    "acked-in": acked_in,
    "fenced": fenced,
    "truncated": truncated,
    "controlled-shutdowns": controlled_shutdowns,
}
