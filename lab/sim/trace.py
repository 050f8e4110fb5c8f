"""The simulation trace: what every node did, when, in one ordered list that serializes stably.

An entry is ``(now_ms, node, event_name, fields)`` with ``fields`` a tuple of ``(name, value)``
pairs sorted by name. ``serialize()`` turns the whole trace into bytes that are identical for
identical runs (protobuf messages as one-line text format, bytes as hex, sets sorted), which is
what "the same seed gives the same trace" is checked against.
"""

from __future__ import annotations

import enum
import hashlib
import json
from typing import Any, Callable, Iterable, Iterator, NamedTuple

from google.protobuf import text_format
from google.protobuf.message import Message

from brokerlab.sansio import TraceEvent


class TraceEntry(NamedTuple):
    now_ms: int
    node: str
    name: str
    fields: tuple[tuple[str, Any], ...]

    def get(self, key: str, default: Any = None) -> Any:
        for name, value in self.fields:
            if name == key:
                return value
        return default


def plain(value: Any) -> Any:
    """A JSON-able, order-stable rendering of a trace field value."""
    if isinstance(value, enum.Enum):
        return value.name
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if isinstance(value, Message):
        return f"{type(value).__name__}{{{text_format.MessageToString(value, as_one_line=True)}}}"
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # NamedTuple, e.g. TopicPartition
        if type(value).__str__ is not object.__str__:
            return str(value)
        return {name: plain(v) for name, v in zip(value._fields, value)}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted((plain(v) for v in value), key=lambda v: json.dumps(v, sort_keys=True))
    if isinstance(value, dict):
        return {str(plain(k)): plain(v) for k, v in sorted(value.items(), key=lambda kv: str(plain(kv[0])))}
    return repr(value)


class Trace:
    """An append-only list of trace entries, with listeners (invariants, live printers)."""

    def __init__(self) -> None:
        self.entries: list[TraceEntry] = []
        self.listeners: list[Callable[[TraceEntry], None]] = []

    def record(self, now_ms: int, node: str, name: str, fields: dict[str, Any] | None = None) -> TraceEntry:
        entry = TraceEntry(now_ms, node, name, tuple(sorted((fields or {}).items())))
        self.entries.append(entry)
        for listener in self.listeners:
            listener(entry)
        return entry

    def record_events(self, now_ms: int, node: str, events: Iterable[TraceEvent]) -> None:
        for event in events:
            self.record(now_ms, node, event.name, event.fields)

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[TraceEntry]:
        return iter(self.entries)

    def named(self, name: str, node: str | None = None) -> list[TraceEntry]:
        return [e for e in self.entries if e.name == name and (node is None or e.node == node)]

    def lines(self) -> Iterator[str]:
        for entry in self.entries:
            fields = {name: plain(value) for name, value in entry.fields}
            yield json.dumps([entry.now_ms, entry.node, entry.name, fields], sort_keys=True, separators=(",", ":"))

    def serialize(self) -> bytes:
        """JSON lines, one entry per line; byte-identical for identical runs."""
        return "".join(line + "\n" for line in self.lines()).encode()

    def digest(self) -> str:
        return hashlib.sha256(self.serialize()).hexdigest()
