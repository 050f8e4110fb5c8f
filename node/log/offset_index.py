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

ENTRY = struct.Struct(">II")
ENTRY_BYTES = ENTRY.size


class OffsetIndex:
    __slots__ = ("file", "base_offset", "_relative_offsets", "_positions", "_persisted", "_unsynced")

    def __init__(self, file: DiskFile, base_offset: int) -> None:
        self.file = file
        self.base_offset = base_offset
        self._relative_offsets = array("I")  # 32-bit on every platform CPython supports
        self._positions = array("I")
        self._persisted = 0  # entries already in the file
        self._unsynced = False

    @classmethod
    def load(cls, file: DiskFile, base_offset: int) -> "OffsetIndex | None":
        """Read the index file; None if it is malformed (the caller rebuilds it)."""
        index = cls(file, base_offset)
        size = file.size()
        if size % ENTRY_BYTES:
            return None
        data = file.read(0, size) if size else b""
        last_offset = last_position = -1
        for relative_offset, position in ENTRY.iter_unpack(data):
            if relative_offset <= last_offset or position <= last_position:
                return None
            index._relative_offsets.append(relative_offset)
            index._positions.append(position)
            last_offset, last_position = relative_offset, position
        index._persisted = len(index._positions)
        return index

    def __len__(self) -> int:
        return len(self._positions)

    def append(self, offset: int, position: int) -> None:
        """Index the batch starting at ``offset`` found at file ``position`` (both increasing)."""
        self._relative_offsets.append(offset - self.base_offset)
        self._positions.append(position)

    def lookup(self, offset: int) -> int:
        """File position of the last indexed batch starting at or before ``offset`` (0 if none)."""
        slot = bisect.bisect_right(self._relative_offsets, offset - self.base_offset) - 1
        return self._positions[slot] if slot >= 0 else 0

    def last_entry(self) -> tuple[int, int] | None:
        """``(offset, position)`` of the last entry."""
        if not self._positions:
            return None
        return self.base_offset + self._relative_offsets[-1], self._positions[-1]

    def entries(self) -> list[tuple[int, int]]:
        return [(self.base_offset + r, p) for r, p in zip(self._relative_offsets, self._positions)]

    def max_position(self) -> int:
        return self._positions[-1] if self._positions else -1

    def truncate_to_offset(self, offset: int) -> None:
        """Drop entries for batches starting at or after ``offset``."""
        keep = bisect.bisect_left(self._relative_offsets, offset - self.base_offset)
        self._truncate_entries(keep)

    def truncate_to_position(self, position: int) -> None:
        """Drop entries pointing at or after file ``position`` (the log was cut there)."""
        self._truncate_entries(bisect.bisect_left(self._positions, position))

    def _truncate_entries(self, keep: int) -> None:
        if keep >= len(self._positions):
            return
        del self._relative_offsets[keep:]
        del self._positions[keep:]
        if keep < self._persisted:
            self.file.truncate(keep * ENTRY_BYTES)
            self._persisted = keep
            self._unsynced = True

    def reset(self) -> None:
        """Forget every entry (before a rebuild)."""
        del self._relative_offsets[:]
        del self._positions[:]
        self.file.truncate(0)
        self._persisted = 0
        self._unsynced = True

    def write_pending(self) -> None:
        """Append the entries not yet in the file (one write)."""
        if self._persisted == len(self._positions):
            return
        pack = ENTRY.pack
        data = b"".join(
            pack(r, p)
            for r, p in zip(self._relative_offsets[self._persisted :], self._positions[self._persisted :])
        )
        self.file.append(data)
        self._persisted = len(self._positions)
        self._unsynced = True

    def sync(self) -> None:
        self.write_pending()
        if self._unsynced:
            self.file.fsync()
            self._unsynced = False

    def close(self) -> None:
        self.file.close()
