"""The sparse offset index of one segment: relative offset -> file position (Kafka's .index).

Fixed-width big-endian entries ``relative_offset uint32 | position uint32`` (8 bytes), so a lookup
is a binary search. One entry is added per ``index.interval.bytes`` appended, pointing at the
start of a batch; a lookup gives the last indexed batch at or before an offset, and the reader
walks batch headers from there (at most ``index.interval.bytes`` away).

Entries live in memory; new ones reach the file when the segment is flushed, rolled or closed.
That is enough: an unclean shutdown rescans (and reindexes) every segment from the recovery point,
and the segments before it were fully flushed, indexes included.
"""

from __future__ import annotations

import bisect
import struct
from array import array

from brokerlab.disk import DiskFile
from node.log.index_file import IndexFile

ENTRY = struct.Struct(">II")
ENTRY_BYTES = ENTRY.size


class OffsetIndex(IndexFile):
    """Keys are offsets relative to the segment's base offset; values are file positions."""

    ENTRY = ENTRY
    __slots__ = ()

    def __init__(self, file: DiskFile, base_offset: int) -> None:
        # array("I"): 32-bit on every platform CPython supports, and compact for big segments.
        super().__init__(file, base_offset, array("I"), array("I"))

    @classmethod
    def load(cls, file: DiskFile, base_offset: int) -> "OffsetIndex | None":
        """Read the index file; None if it is malformed (the caller rebuilds it)."""
        index = cls(file, base_offset)
        entries = index._read_entries()
        if entries is None:
            return None
        last_offset = last_position = -1
        for relative_offset, position in entries:
            if relative_offset <= last_offset or position <= last_position:
                return None
            index._keys.append(relative_offset)
            index._values.append(position)
            last_offset, last_position = relative_offset, position
        index._loaded()
        return index

    def append(self, offset: int, position: int) -> None:
        """Index the batch starting at ``offset`` found at file ``position`` (both increasing)."""
        self._keys.append(offset - self.base_offset)
        self._values.append(position)

    def lookup(self, offset: int) -> int:
        """File position of the last indexed batch starting at or before ``offset`` (0 if none)."""
        slot = bisect.bisect_right(self._keys, offset - self.base_offset) - 1
        return self._values[slot] if slot >= 0 else 0

    def last_entry(self) -> tuple[int, int] | None:
        """``(offset, position)`` of the last entry."""
        if not self._values:
            return None
        return self.base_offset + self._keys[-1], self._values[-1]

    def entries(self) -> list[tuple[int, int]]:
        return [(self.base_offset + r, p) for r, p in zip(self._keys, self._values)]

    def max_position(self) -> int:
        return self._values[-1] if self._values else -1

    def truncate_to_offset(self, offset: int) -> None:
        """Drop entries for batches starting at or after ``offset``."""
        self._truncate_entries(bisect.bisect_left(self._keys, offset - self.base_offset))

    def truncate_to_position(self, position: int) -> None:
        """Drop entries pointing at or after file ``position`` (the log was cut there)."""
        self._truncate_entries(bisect.bisect_left(self._values, position))
