"""What Kafka's ``.index`` and ``.timeindex`` share: a file of fixed-width big-endian entries.

Each entry is a pair ``(key, value)`` kept in two parallel columns in memory, both increasing,
so a lookup is a binary search. New entries reach the file in one write when the segment is
flushed, rolled or closed; truncation cuts the file only if it already held the dropped entries.
"""

from __future__ import annotations

import struct
from typing import Iterable, MutableSequence

from brokerlab.disk import DiskFile


class IndexFile:
    ENTRY: struct.Struct  # set by each subclass

    __slots__ = ("file", "base_offset", "_keys", "_values", "_persisted", "_unsynced")

    def __init__(self, file: DiskFile, base_offset: int, keys: MutableSequence[int],
                 values: MutableSequence[int]) -> None:
        self.file = file
        self.base_offset = base_offset
        self._keys = keys
        self._values = values
        self._persisted = 0  # entries already in the file
        self._unsynced = False

    def _read_entries(self) -> Iterable[tuple[int, int]] | None:
        """The file's entries, or None when its size is not a whole number of entries."""
        size = self.file.size()
        if size % self.ENTRY.size:
            return None
        return self.ENTRY.iter_unpack(self.file.read(0, size) if size else b"")

    def _loaded(self) -> None:
        self._persisted = len(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def _truncate_entries(self, keep: int) -> None:
        if keep >= len(self._keys):
            return
        del self._keys[keep:]
        del self._values[keep:]
        if keep < self._persisted:
            self.file.truncate(keep * self.ENTRY.size)
            self._persisted = keep
            self._unsynced = True

    def reset(self) -> None:
        """Forget every entry (before a rebuild)."""
        del self._keys[:]
        del self._values[:]
        self.file.truncate(0)
        self._persisted = 0
        self._unsynced = True

    def write_pending(self) -> None:
        """Append the entries not yet in the file (one write)."""
        if self._persisted == len(self._keys):
            return
        pack = self.ENTRY.pack
        start = self._persisted
        self.file.append(b"".join(pack(k, v) for k, v in zip(self._keys[start:], self._values[start:])))
        self._persisted = len(self._keys)
        self._unsynced = True

    def sync(self) -> None:
        file = self.prepare_sync()
        if file is not None:
            file.fsync()
            self._unsynced = False

    def prepare_sync(self) -> DiskFile | None:
        """Write the pending entries; the file if it needs an fsync (then ``synced()``)."""
        self.write_pending()
        return self.file if self._unsynced else None

    def synced(self) -> None:
        self._unsynced = False

    def close(self) -> None:
        self.file.close()
