"""What a controller command decides: the records to write and the response to send once durable.

Kafka's ControllerResult: a command only reads the state; the core appends ``records`` to the
journal (fsynced), replays them, emits ``events`` and only then releases ``response``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from brokerlab.sansio import TraceEvent
from brokerlab.v1.metadata_pb2 import MetadataRecord


@dataclass
class ControllerResult:
    response: Any = None
    records: list[MetadataRecord] = field(default_factory=list)
    events: list[TraceEvent] = field(default_factory=list)

    def add(self, other: "ControllerResult") -> "ControllerResult":
        """Append another result's records and events (its response is dropped)."""
        self.records.extend(other.records)
        self.events.extend(other.events)
        return self
