"""logfmt lines for every node's structured log: ``ts=... level=info node=controller event=TopicCreated k=v``.

Values print bare when safe and double-quoted (with ``\\``, ``"``, newlines and tabs escaped)
when they hold spaces, ``=``, quotes or nothing; booleans as ``true``/``false``, None as
``null``, lists and tuples as ``[1,2,3]``. Pure: the caller supplies the clock
(``EventLog(node, clock_ms)``), so this module stays usable from cores and the simulator.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, Callable, Mapping, TextIO

from brokerlab.sansio import TraceEvent


def format_value(value: Any) -> str:
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif value is None:
        text = "null"
    elif isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value) if isinstance(value, (set, frozenset)) else value
        text = "[" + ",".join(format_value(v) for v in items) + "]"
    elif isinstance(value, bytes):
        text = value.hex()
    else:
        text = str(value)
    if text == "" or any(c in text for c in ' ="\\\n\t\r'):
        escaped = (
            text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r")
        )
        return f'"{escaped}"'
    return text


def format_line(fields: Mapping[str, Any]) -> str:
    """One logfmt line (no newline) from ordered ``key -> value`` pairs."""
    return " ".join(f"{key}={format_value(value)}" for key, value in fields.items())


def utc_timestamp(epoch_ms: int) -> str:
    """``2026-11-25T08:49:18.123Z`` from milliseconds since the epoch (proleptic Gregorian, UTC).

    Pure arithmetic (Howard Hinnant's civil_from_days), so no clock or datetime import is needed.
    """
    seconds, millis = divmod(int(epoch_ms), 1000)
    days, second_of_day = divmod(seconds, 86400)
    hour, rest = divmod(second_of_day, 3600)
    minute, second = divmod(rest, 60)
    z = days + 719468
    era = z // 146097
    day_of_era = z - era * 146097
    year_of_era = (day_of_era - day_of_era // 1460 + day_of_era // 36524 - day_of_era // 146096) // 365
    day_of_year = day_of_era - (365 * year_of_era + year_of_era // 4 - year_of_era // 100)
    mp = (5 * day_of_year + 2) // 153
    day = day_of_year - (153 * mp + 2) // 5 + 1
    month = mp + 3 if mp < 10 else mp - 9
    year = year_of_era + era * 400 + (1 if month <= 2 else 0)
    return f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}.{millis:03d}Z"


def event_level(event_name: str) -> str:
    """Default level of a trace event: failures warn, everything else is info."""
    return "warn" if event_name.endswith(("Failed", "Expired")) else "info"


class EventLog:
    """Writes trace events (and ad-hoc events) as logfmt lines, flushing each one."""

    def __init__(self, node: str, clock_ms: Callable[[], int], stream: TextIO | None = None) -> None:
        self.node = node
        self.clock_ms = clock_ms
        self.stream = stream

    def emit(self, event: str, level: str = "info", **fields: Any) -> None:
        stream = self.stream if self.stream is not None else sys.stderr
        head = {"ts": utc_timestamp(self.clock_ms()), "level": level, "node": self.node, "event": event}
        stream.write(format_line({**head, **fields}) + "\n")
        stream.flush()

    def __call__(self, event: TraceEvent) -> None:
        self.emit(event.name, event_level(event.name), **event.fields)


class LogfmtHandler(logging.Handler):
    """Routes Python ``logging`` records (library warnings, driver errors) into the same log."""

    def __init__(self, events: EventLog, level: int = logging.INFO) -> None:
        super().__init__(level)
        self.events = events

    def emit(self, record: logging.LogRecord) -> None:
        level = {"WARNING": "warn", "CRITICAL": "error"}.get(record.levelname, record.levelname.lower())
        fields: dict[str, Any] = {"logger": record.name, "msg": record.getMessage()}
        if record.exc_info and record.exc_info[1] is not None:
            fields["error"] = repr(record.exc_info[1])
        self.events.emit("Log", level, **fields)
