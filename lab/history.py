"""A history of what clients did and saw: sends with their outcome, polls with what they read.

The input of the checker (lab/checker.py), in the shape of Jepsen's Kafka workload: every send
is invoked, then completes as

- ``ok``: acknowledged, at ``offset`` (the broker's answer);
- ``fail``: definitely not written (the broker refused it before appending, e.g.
  NOT_ENOUGH_REPLICAS: the ISR was too small);
- ``info``: unknown (a timeout, a lost connection, acks=0, or still pending at the end): it may
  or may not be in the log.

A poll lists the ``(topic, partition, offset, value)`` records one consumer got, in order; a
seek (or a new assignment) tells the checker that the consumer's next poll may start anywhere.
Values identify sends, so a workload gives every send a unique value.

An event is anything else with a time: a fault or heal the nemesis applied, a cluster event read
from a node's log (BecameLeader, IsrShrunk, LogTruncated...), a consumer's rebalance. Times are
milliseconds since the history started; ``started_epoch_ms`` (wall clock at that moment) lines
them up with the nodes' logfmt ``ts=``.

Recording is cheap (appends to lists) and works from producer callbacks on the event loop.
``save``/``load`` keep a history as JSON lines next to an experiment's results.
"""

from __future__ import annotations

import itertools
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

from brokerlab.errors import ErrorCode, KafkaError, error_name

OK, FAIL, INFO = "ok", "fail", "info"

# Codes a broker answers before appending anything: the send definitely did not happen. Only
# safe as a verdict when every attempt got one of them (a producer retries; an earlier attempt
# that timed out may have been appended), which the workload arranges or accepts.
DEFINITE_FAILURES = frozenset({
    ErrorCode.NOT_ENOUGH_REPLICAS,
    ErrorCode.MESSAGE_TOO_LARGE,
    ErrorCode.RECORD_LIST_TOO_LARGE,
    ErrorCode.INVALID_REQUIRED_ACKS,
    ErrorCode.INVALID_TOPIC_EXCEPTION,
    ErrorCode.CORRUPT_MESSAGE,
    ErrorCode.INVALID_REQUEST,
})


def outcome_of(error: BaseException | None) -> str:
    """``ok`` for no error, ``fail`` for a code that proves nothing was appended, else ``info``."""
    if error is None:
        return OK
    if isinstance(error, KafkaError) and error.code in DEFINITE_FAILURES:
        return FAIL
    return INFO


@dataclass
class Send:
    index: int  # order of invocation across the whole history
    process: str  # which producer
    topic: str
    partition: int
    value: bytes
    outcome: str = INFO  # stays info until completed
    offset: int | None = None
    error: str | None = None
    invoked_ms: float = 0.0
    completed_ms: float | None = None
    key: bytes | None = None

    @property
    def completed(self) -> bool:
        return self.completed_ms is not None


@dataclass
class Poll:
    index: int
    process: str  # which consumer
    records: list[tuple[str, int, int, bytes]]  # (topic, partition, offset, value), in order
    at_ms: float = 0.0


@dataclass
class Seek:
    """The consumer's next read of ``topic``/``partition`` may start anywhere (seek, reassignment)."""

    index: int
    process: str
    topic: str
    partition: int
    offset: int | None = None
    at_ms: float = 0.0


@dataclass
class Event:
    """A fault/heal (``kind`` "fault"/"heal"), a node's log event ("cluster") or a client's ("client")."""

    index: int
    kind: str
    name: str
    at_ms: float = 0.0
    node: str | None = None
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass
class History:
    sends: list[Send] = field(default_factory=list)
    polls: list[Poll] = field(default_factory=list)
    seeks: list[Seek] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._counter = itertools.count(len(self.sends) + len(self.polls) + len(self.seeks) + len(self.events))
        self._started = time.monotonic()
        self.started_epoch_ms = time.time() * 1000

    def now_ms(self) -> float:
        """Milliseconds since the history started (the clock of every op's timestamps)."""
        return round((time.monotonic() - self._started) * 1000, 3)

    # ---- recording ------------------------------------------------------------------------

    def epoch_to_ms(self, epoch_ms: float) -> float:
        """A wall-clock time (ms since the epoch, e.g. a log line's ts=) on the history's clock."""
        return round(epoch_ms - self.started_epoch_ms, 3)

    def invoke_send(self, process: str, topic: str, partition: int, value: bytes, key: bytes | None = None) -> Send:
        send = Send(next(self._counter), process, topic, partition, value, invoked_ms=self.now_ms(), key=key)
        self.sends.append(send)
        return send

    def complete_send(self, send: Send, offset: int | None = None, error: BaseException | None = None,
                      outcome: str | None = None) -> None:
        """Settle a send: acknowledged at ``offset`` (-1 / None: acks=0, so unknown), or failed."""
        send.completed_ms = self.now_ms()
        if error is not None:
            send.outcome = outcome or outcome_of(error)
            code = getattr(error, "code", None)
            send.error = error_name(int(code)) if code is not None else repr(error)
        elif offset is None or offset < 0:
            send.outcome = outcome or INFO  # acks=0: handed over, never confirmed
        else:
            send.outcome = outcome or OK
            send.offset = offset

    def track(self, process: str, handle: Any, value: bytes, topic: str | None = None,
              partition: int | None = None, key: bytes | None = None) -> Send:
        """Record a producer send from its ``RecordHandle`` (settled by the handle's callback)."""
        send = self.invoke_send(process, topic or handle.topic, handle.partition if partition is None else partition,
                                value, key)

        def done(h: Any) -> None:
            error = h.exception()
            self.complete_send(send, None if error is not None else h.result().offset, error)

        handle.add_done_callback(done)
        return send

    def record_poll(self, process: str, records: Iterable[Any]) -> Poll:
        """One poll's records (objects with topic, partition, offset, value, or 4-tuples)."""
        rows = [
            (r.topic, r.partition, r.offset, r.value) if hasattr(r, "offset") else tuple(r)
            for r in records
        ]
        poll = Poll(next(self._counter), process, rows, self.now_ms())
        self.polls.append(poll)
        return poll

    def record_seek(self, process: str, topic: str, partition: int, offset: int | None = None) -> Seek:
        seek = Seek(next(self._counter), process, topic, partition, offset, self.now_ms())
        self.seeks.append(seek)
        return seek

    def record_event(self, kind: str, name: str, node: str | None = None, at_ms: float | None = None,
                     **fields: Any) -> Event:
        event = Event(next(self._counter), kind, name, self.now_ms() if at_ms is None else at_ms, node, fields)
        self.events.append(event)
        return event

    # ---- views ----------------------------------------------------------------------------

    def acknowledged(self) -> list[Send]:
        return [s for s in self.sends if s.outcome == OK]

    def read_values(self) -> set[bytes]:
        return {value for poll in self.polls for (_, _, _, value) in poll.records}

    def failed_between(self, start_ms: float, end_ms: float, process: str | None = None) -> list[Send]:
        """Sends invoked in [start_ms, end_ms] that did not end acknowledged (failed or unknown)."""
        return [s for s in self.sends if start_ms <= s.invoked_ms <= end_ms and s.outcome != OK
                and (process is None or s.process == process)]

    def longest_ack_gap_ms(self, start_ms: float, end_ms: float, process: str | None = None,
                           partition: tuple[str, int] | None = None) -> float:
        """The longest stretch within [start_ms, end_ms] without an acknowledgement (of ``partition``
        if given, as ``(topic, partition)``): unavailability as a steadily sending producer saw it."""
        times = sorted(s.completed_ms for s in self.sends if s.outcome == OK and s.completed_ms is not None
                       and start_ms <= s.completed_ms <= end_ms and (process is None or s.process == process)
                       and (partition is None or (s.topic, s.partition) == tuple(partition)))
        edges = [start_ms, *times, end_ms]
        return round(max(b - a for a, b in zip(edges, edges[1:])), 3)

    # ---- persistence ----------------------------------------------------------------------

    def save(self, path: Path | str) -> None:
        """JSON lines, one op each, in index order (values hex-encoded)."""
        ops = [("send", s) for s in self.sends] + [("poll", p) for p in self.polls] + [("seek", k) for k in self.seeks]
        ops += [("event", e) for e in self.events]
        ops.sort(key=lambda op: op[1].index)
        with open(path, "w") as out:
            out.write(json.dumps({"type": "meta", "started_epoch_ms": self.started_epoch_ms, **self.meta}) + "\n")
            for kind, op in ops:
                data = asdict(op)
                if kind == "send":
                    data["value"] = op.value.hex()
                    data["key"] = op.key.hex() if op.key is not None else None
                elif kind == "poll":
                    data["records"] = [[t, p, o, v.hex() if v is not None else None] for t, p, o, v in op.records]
                out.write(json.dumps({"type": kind, **data}) + "\n")

    @classmethod
    def load(cls, path: Path | str) -> "History":
        history = cls()
        for line in Path(path).read_text().splitlines():
            data = json.loads(line)
            kind = data.pop("type")
            if kind == "meta":
                history.started_epoch_ms = data.pop("started_epoch_ms", history.started_epoch_ms)
                history.meta = data
            elif kind == "send":
                data["value"] = bytes.fromhex(data["value"])
                if data.get("key") is not None:
                    data["key"] = bytes.fromhex(data["key"])
                history.sends.append(Send(**data))
            elif kind == "poll":
                data["records"] = [(t, p, o, bytes.fromhex(v) if v is not None else None)
                                   for t, p, o, v in data["records"]]
                history.polls.append(Poll(**data))
            elif kind == "seek":
                history.seeks.append(Seek(**data))
            elif kind == "event":
                history.events.append(Event(**data))
        history.events.sort(key=lambda e: (e.at_ms, e.index))
        indices = [op.index for op in (*history.sends, *history.polls, *history.seeks, *history.events)]
        history._counter = itertools.count(max(indices, default=-1) + 1)
        return history
