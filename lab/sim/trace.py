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
from functools import partial
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


# Field values that render as themselves (a type check, not isinstance: bool and enum subclass int).
_PLAIN_TYPES = frozenset({int, str, bool, float, type(None)})
# One encoder for every line: json.dumps would build a new one per call for these options.
_LINE_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"))
# json's own string quoting (ensure_ascii, as json.dumps does by default).
_quote = getattr(json.encoder, "c_encode_basestring_ascii", None) or json.encoder.py_encode_basestring_ascii


def plain(value: Any) -> Any:
    """A JSON-able, order-stable rendering of a trace field value."""
    if type(value) in _PLAIN_TYPES:
        return value
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


def entry_line(entry: TraceEntry) -> str:
    """One entry as its JSON line (without the newline): what ``json.dumps(..., sort_keys=True,
    separators=(",", ":"))`` writes, built directly when every field is a str, int, bool or None
    (most entries: one per message) and by the encoder otherwise."""
    now_ms, node, name, fields = entry
    parts = []
    previous = ""
    for key, value in fields:
        kind = type(value)
        if type(key) is not str or key <= previous:  # not sorted by name as sort_keys would order them
            return _LINE_ENCODER.encode([now_ms, node, name, {k: plain(v) for k, v in fields}])
        previous = key
        if kind is str:
            text = _quote(value)
        elif kind is int:
            text = int.__repr__(value)
        elif kind is bool:
            text = "true" if value else "false"
        elif value is None:
            text = "null"
        else:
            return _LINE_ENCODER.encode([now_ms, node, name, {k: plain(v) for k, v in fields}])
        parts.append(f"{_quote(key)}:{text}")
    if type(now_ms) is not int or type(node) is not str or type(name) is not str:
        return _LINE_ENCODER.encode([now_ms, node, name, {k: plain(v) for k, v in fields}])
    return f"[{now_ms},{_quote(node)},{_quote(name)},{{{','.join(parts)}}}]"


# tuple.__new__ builds the NamedTuple without its Python-level __new__ (one entry per message).
_new_entry = partial(tuple.__new__, TraceEntry)


class Trace:
    """An append-only list of trace entries, with listeners (invariants, live printers).

    Entries are rendered to text only when asked (``lines``, ``serialize``, ``digest``); the
    digest is kept up to date incrementally, so asking for it twice costs the new entries only.
    """

    def __init__(self) -> None:
        self.entries: list[TraceEntry] = []
        self.listeners: list[Callable[[TraceEntry], None]] = []
        self._hash = hashlib.sha256()
        self._hashed = 0  # entries folded into _hash so far

    def record(self, now_ms: int, node: str, name: str, fields: dict[str, Any] | None = None) -> TraceEntry:
        return self.record_sorted(now_ms, node, name, tuple(sorted(fields.items())) if fields else ())

    def record_sorted(self, now_ms: int, node: str, name: str, fields: tuple[tuple[str, Any], ...]) -> TraceEntry:
        """``record`` for callers on the hot path whose ``(name, value)`` pairs are already sorted by name."""
        entry = _new_entry((now_ms, node, name, fields))
        self.entries.append(entry)
        if self.listeners:
            for listener in self.listeners:
                listener(entry)
        return entry

    def record_events(self, now_ms: int, node: str, events: Iterable[TraceEvent]) -> None:
        for event in events:
            fields = event.fields
            self.record_sorted(now_ms, node, event.name, tuple(sorted(fields.items())) if fields else ())

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[TraceEntry]:
        return iter(self.entries)

    def named(self, name: str, node: str | None = None) -> list[TraceEntry]:
        return [e for e in self.entries if e.name == name and (node is None or e.node == node)]

    def lines(self) -> Iterator[str]:
        return map(entry_line, self.entries)

    def serialize(self) -> bytes:
        """JSON lines, one entry per line; byte-identical for identical runs."""
        return "".join(line + "\n" for line in self.lines()).encode()

    def digest(self) -> str:
        """sha256 of ``serialize()``."""
        entries = self.entries
        if self._hashed > len(entries):  # not append-only after all: start again
            self._hash, self._hashed = hashlib.sha256(), 0
        if self._hashed < len(entries):
            self._hash.update("".join(entry_line(e) + "\n" for e in entries[self._hashed:]).encode())
            self._hashed = len(entries)
        return self._hash.copy().hexdigest()
