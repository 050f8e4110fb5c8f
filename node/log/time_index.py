"""The time index of one segment: max timestamp so far -> its offset (Kafka's .timeindex).

Fixed-width big-endian entries ``timestamp int64 | relative_offset uint32`` (12 bytes), both
increasing. An entry ``(t, o)`` says: every record before the batch holding offset ``o`` has a
timestamp below ``t``, and that batch reaches ``t``. So the first record with timestamp >= T is
at or after the offset of the last entry with ``t <= T``. Entries are added next to offset index
entries, plus a final one when the segment stops being active, so the last entry carries the
segment's largest timestamp (what time retention reads after a restart).
"""

from __future__ import annotations

import bisect
import struct

from brokerlab.disk import DiskFile
from node.log.index_file import IndexFile

ENTRY = struct.Struct(">qI")
ENTRY_BYTES = ENTRY.size


class TimeIndex(IndexFile):
    """Keys are timestamps; values are offsets relative to the segment's base offset."""

    ENTRY = ENTRY
    __slots__ = ()

    def __init__(self, file: DiskFile, base_offset: int) -> None:
        super().__init__(file, base_offset, [], [])

    @classmethod
    def load(cls, file: DiskFile, base_offset: int, next_offset: int) -> "TimeIndex | None":
        """Read the file; None if malformed or pointing past ``next_offset`` (rebuild it)."""
        index = cls(file, base_offset)
        entries = index._read_entries()
        if entries is None:
            return None
        last_timestamp, last_offset = None, -1
        limit = next_offset - base_offset
        for timestamp, relative_offset in entries:
            if last_timestamp is not None and timestamp <= last_timestamp:
                return None
            if relative_offset < last_offset or relative_offset >= limit:
                return None
            index._keys.append(timestamp)
            index._values.append(relative_offset)
            last_timestamp, last_offset = timestamp, relative_offset
        index._loaded()
        return index

    def maybe_append(self, timestamp_ms: int, offset: int) -> None:
        """Add ``(timestamp, offset)`` if it raises the largest timestamp indexed so far."""
        if timestamp_ms < 0 or (self._keys and timestamp_ms <= self._keys[-1]):
            return
        self._keys.append(timestamp_ms)
        self._values.append(offset - self.base_offset)

    def lookup(self, timestamp_ms: int) -> int:
        """The offset to start searching for the first record with timestamp >= ``timestamp_ms``."""
        slot = bisect.bisect_right(self._keys, timestamp_ms) - 1
        return self.base_offset + (self._values[slot] if slot >= 0 else 0)

    def last_entry(self) -> tuple[int, int] | None:
        """``(timestamp, offset)`` with the largest timestamp."""
        if not self._keys:
            return None
        return self._keys[-1], self.base_offset + self._values[-1]

    def entries(self) -> list[tuple[int, int]]:
        return [(t, self.base_offset + r) for t, r in zip(self._keys, self._values)]

    def truncate_to_offset(self, offset: int) -> None:
        """Drop entries whose offset is at or after ``offset``."""
        self._truncate_entries(bisect.bisect_left(self._values, offset - self.base_offset))
