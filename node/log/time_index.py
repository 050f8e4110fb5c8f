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

ENTRY = struct.Struct(">qI")
ENTRY_BYTES = ENTRY.size


class TimeIndex:
    __slots__ = ("file", "base_offset", "_timestamps", "_relative_offsets", "_persisted", "_unsynced")

    def __init__(self, file: DiskFile, base_offset: int) -> None:
        self.file = file
        self.base_offset = base_offset
        self._timestamps: list[int] = []
        self._relative_offsets: list[int] = []
        self._persisted = 0
        self._unsynced = False

    @classmethod
    def load(cls, file: DiskFile, base_offset: int, next_offset: int) -> "TimeIndex | None":
        """Read the file; None if malformed or pointing past ``next_offset`` (rebuild it)."""
        index = cls(file, base_offset)
        size = file.size()
        if size % ENTRY_BYTES:
            return None
        data = file.read(0, size) if size else b""
        last_timestamp, last_offset = None, -1
        limit = next_offset - base_offset
        for timestamp, relative_offset in ENTRY.iter_unpack(data):
            if last_timestamp is not None and timestamp <= last_timestamp:
                return None
            if relative_offset < last_offset or relative_offset >= limit:
                return None
            index._timestamps.append(timestamp)
            index._relative_offsets.append(relative_offset)
            last_timestamp, last_offset = timestamp, relative_offset
        index._persisted = len(index._timestamps)
        return index

    def __len__(self) -> int:
        return len(self._timestamps)

    def maybe_append(self, timestamp_ms: int, offset: int) -> None:
        """Add ``(timestamp, offset)`` if it raises the largest timestamp indexed so far."""
        if timestamp_ms < 0 or (self._timestamps and timestamp_ms <= self._timestamps[-1]):
            return
        self._timestamps.append(timestamp_ms)
        self._relative_offsets.append(offset - self.base_offset)

    def lookup(self, timestamp_ms: int) -> int:
        """The offset to start searching for the first record with timestamp >= ``timestamp_ms``."""
        slot = bisect.bisect_right(self._timestamps, timestamp_ms) - 1
        return self.base_offset + (self._relative_offsets[slot] if slot >= 0 else 0)

    def last_entry(self) -> tuple[int, int] | None:
        """``(timestamp, offset)`` with the largest timestamp."""
        if not self._timestamps:
            return None
        return self._timestamps[-1], self.base_offset + self._relative_offsets[-1]

    def entries(self) -> list[tuple[int, int]]:
        return [(t, self.base_offset + r) for t, r in zip(self._timestamps, self._relative_offsets)]

    def truncate_to_offset(self, offset: int) -> None:
        """Drop entries whose offset is at or after ``offset``."""
        keep = bisect.bisect_left(self._relative_offsets, offset - self.base_offset)
        if keep >= len(self._timestamps):
            return
        del self._timestamps[keep:]
        del self._relative_offsets[keep:]
        if keep < self._persisted:
            self.file.truncate(keep * ENTRY_BYTES)
            self._persisted = keep
            self._unsynced = True

    def reset(self) -> None:
        self._timestamps.clear()
        self._relative_offsets.clear()
        self.file.truncate(0)
        self._persisted = 0
        self._unsynced = True

    def write_pending(self) -> None:
        if self._persisted == len(self._timestamps):
            return
        pack = ENTRY.pack
        data = b"".join(
            pack(t, r)
            for t, r in zip(self._timestamps[self._persisted :], self._relative_offsets[self._persisted :])
        )
        self.file.append(data)
        self._persisted = len(self._timestamps)
        self._unsynced = True

    def sync(self) -> None:
        self.write_pending()
        if self._unsynced:
            self.file.fsync()
            self._unsynced = False

    def close(self) -> None:
        self.file.close()
