"""One log segment: ``<base_offset:020d>.log`` plus its ``.index`` and ``.timeindex``.

Batches are opaque bytes here: the segment reads batch headers (61 bytes) to find boundaries,
offsets and timestamps, never the records, except to answer a timestamp query inside one batch.
All file access goes through the ``Disk`` port.
"""

from __future__ import annotations

import struct
from bisect import bisect_right
from typing import Iterator, Sequence

from brokerlab.disk import Disk, DiskFile
from brokerlab.record_batch import (
    BATCH_HEADER,
    BATCH_HEADER_BYTES,
    BatchHeader,
    decode_records,
)
from node.log.offset_index import OffsetIndex
from node.log.time_index import TimeIndex

LOG_SUFFIX = ".log"
INDEX_SUFFIX = ".index"
TIME_INDEX_SUFFIX = ".timeindex"
SUFFIXES = (LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX)
# A batch shorter than its own header is garbage (batch_length counts bytes after itself).
MIN_BATCH_LENGTH = BATCH_HEADER_BYTES - 12
# Header walks (load, truncation, timestamp search) read this much at a time.
WALK_CHUNK_BYTES = 1024 * 1024
# The read path needs only base_offset, batch_length and last_offset_delta of each header.
_OFFSET_AND_LENGTH = struct.Struct(">qi")
_LAST_OFFSET_DELTA = struct.Struct(">i")
_LAST_OFFSET_DELTA_AT = 23

# (position in the appended bytes, base offset, last offset, max timestamp, size) of each batch.
BatchEntry = tuple[int, int, int, int, int]


def segment_file_name(base_offset: int, suffix: str = LOG_SUFFIX) -> str:
    return f"{base_offset:020d}{suffix}"


def parse_segment_file_name(name: str) -> tuple[int, str] | None:
    """``("00000000000000000042.log")`` -> ``(42, ".log")``; None for other files."""
    stem, dot, ext = name.rpartition(".")
    if not dot or "." + ext not in SUFFIXES or len(stem) != 20 or not stem.isdigit():
        return None
    return int(stem), "." + ext


class LogSegment:
    __slots__ = (
        "disk",
        "directory",
        "base_offset",
        "index_interval_bytes",
        "log",
        "index",
        "time_index",
        "size",
        "next_offset",
        "max_timestamp_ms",
        "offset_of_max_timestamp",
        "bytes_since_last_index_entry",
        "rolling_base_ms",
        "_log_unsynced",
        "_tail_bases",
        "_tail_positions",
    )

    def __init__(self, disk: Disk, directory: str, base_offset: int, index_interval_bytes: int) -> None:
        self.disk = disk
        self.directory = directory
        self.base_offset = base_offset
        self.index_interval_bytes = index_interval_bytes
        self.log = disk.open(self.path(LOG_SUFFIX))
        self.index = OffsetIndex(disk.open(self.path(INDEX_SUFFIX)), base_offset)
        self.time_index = TimeIndex(disk.open(self.path(TIME_INDEX_SUFFIX)), base_offset)
        self.size = self.log.size()
        self.next_offset = base_offset  # offset after the last batch
        self.max_timestamp_ms = -1
        self.offset_of_max_timestamp = -1
        self.bytes_since_last_index_entry = 0
        # When the segment's age starts counting (its first append; the load time after a restart).
        self.rolling_base_ms: int | None = None
        self._log_unsynced = False
        # Base offset and position of every batch from the last index entry to the end (None:
        # unknown, after a load or truncation, until the next index entry): a read near the
        # end starts at its batch instead of walking up to index.interval.bytes of headers.
        self._tail_bases: list[int] | None = None
        self._tail_positions: list[int] = []

    @classmethod
    def create(cls, disk: Disk, directory: str, base_offset: int, index_interval_bytes: int) -> "LogSegment":
        """A new empty segment (stale files with the same name are emptied)."""
        segment = cls(disk, directory, base_offset, index_interval_bytes)
        if segment.size:
            segment.log.truncate(0)
            segment.size = 0
        segment.index.reset()
        segment.time_index.reset()
        segment._tail_bases, segment._tail_positions = [], []
        return segment

    def path(self, suffix: str) -> str:
        return f"{self.directory}/{segment_file_name(self.base_offset, suffix)}"

    def __repr__(self) -> str:
        return f"LogSegment(base_offset={self.base_offset}, size={self.size}, next_offset={self.next_offset})"

    @property
    def is_empty(self) -> bool:
        return self.size == 0

    # ------------------------------------------------------------------ append

    def append(self, data: bytes | bytearray, batches: Sequence[BatchEntry], now_ms: int) -> None:
        """Append stamped batches with one write; index them as Kafka does."""
        position = self.log.append(data)
        if self.rolling_base_ms is None:
            self.rolling_base_ms = now_ms
        for relative_position, base_offset, last_offset, max_timestamp, size in batches:
            self._track(position + relative_position, base_offset, last_offset, max_timestamp, size)
        self.size = position + len(data)
        self.next_offset = batches[-1][2] + 1
        self._log_unsynced = True

    def _track(self, position: int, base_offset: int, last_offset: int, max_timestamp: int, size: int) -> None:
        if max_timestamp > self.max_timestamp_ms:
            self.max_timestamp_ms = max_timestamp
            self.offset_of_max_timestamp = last_offset
        # Kafka's rule: a batch gets an entry once more than index.interval.bytes were appended
        # since the last one, so a lookup lands at most that many bytes before its batch.
        if self.bytes_since_last_index_entry > self.index_interval_bytes:
            self.index.append(base_offset, position)
            self.time_index.maybe_append(self.max_timestamp_ms, self.offset_of_max_timestamp)
            self.bytes_since_last_index_entry = 0
            self._tail_bases, self._tail_positions = [base_offset], [position]
        elif self._tail_bases is not None:
            self._tail_bases.append(base_offset)
            self._tail_positions.append(position)
        self.bytes_since_last_index_entry += size

    def on_inactive(self) -> None:
        """No more appends (rolled or closing): index the largest timestamp for retention."""
        self.time_index.maybe_append(self.max_timestamp_ms, self.offset_of_max_timestamp)

    # ------------------------------------------------------------------ load and rebuild

    def rebuild_indexes(self, batches: Sequence[tuple[int, BatchHeader]]) -> None:
        """Reindex from the ``(position, header)`` of every batch (after a scan)."""
        self.index.reset()
        self.time_index.reset()
        self.next_offset = self.base_offset
        self.max_timestamp_ms = -1
        self.offset_of_max_timestamp = -1
        self.bytes_since_last_index_entry = 0
        self._tail_bases, self._tail_positions = [], []
        for position, header in batches:
            self._track(position, header.base_offset, header.last_offset, header.max_timestamp, header.size_bytes)
        if batches:
            self.next_offset = batches[-1][1].next_offset

    def load(self, now_ms: int) -> str | None:
        """Open a segment that is trusted (before the recovery point, or after a clean shutdown).

        Checks the indexes (rebuilding a missing or corrupt one) and walks the headers after the
        last index entry to find the segment's end. Returns None, or what is wrong with the log
        file itself (a torn tail, offsets out of order): then the caller recovers from here.
        """
        self.rolling_base_ms = now_ms if self.size else None
        self._tail_bases = None
        index = OffsetIndex.load(self.index.file, self.base_offset)
        if index is None or not self._points_at_batch(index):
            return self._load_by_full_walk()
        self.index = index
        problem = self._load_tail()
        if problem is not None:
            return problem
        time_index = TimeIndex.load(self.time_index.file, self.base_offset, self.next_offset)
        if time_index is None:
            return self._load_by_full_walk()
        self.time_index = time_index
        last = time_index.last_entry()
        if last is not None and last[0] > self.max_timestamp_ms:
            self.max_timestamp_ms, self.offset_of_max_timestamp = last
        return None

    def _points_at_batch(self, index: OffsetIndex) -> bool:
        """Cheap sanity check: the last entry is inside the file and starts the batch it names."""
        last = index.last_entry()
        if last is None:
            return True
        offset, position = last
        if position + BATCH_HEADER_BYTES > self.size:
            return False
        (base_offset, _) = _OFFSET_AND_LENGTH.unpack_from(self.log.read(position, 12))
        return base_offset == offset

    def _load_tail(self) -> str | None:
        """Walk headers after the last index entry: next offset, max timestamp, consistency."""
        last = self.index.last_entry()
        expected, start = (last if last is not None else (self.base_offset, 0))
        self.next_offset = self.base_offset
        self.max_timestamp_ms = -1
        self.offset_of_max_timestamp = -1
        end = start
        for position, header in self.walk_headers(start):
            if header.base_offset != expected:
                return f"batch at position {position} has base offset {header.base_offset}, expected {expected}"
            if header.max_timestamp > self.max_timestamp_ms:
                self.max_timestamp_ms = header.max_timestamp
                self.offset_of_max_timestamp = header.last_offset
            expected = header.next_offset
            end = position + header.size_bytes
        if end != self.size:
            return f"incomplete batch at position {end} of {self.size}"
        self.next_offset = expected if end > 0 else self.base_offset
        self.bytes_since_last_index_entry = self.size - start
        return None

    def _load_by_full_walk(self) -> str | None:
        batches = []
        expected, end = self.base_offset, 0
        for position, header in self.walk_headers(0):
            if header.base_offset != expected:
                return f"batch at position {position} has base offset {header.base_offset}, expected {expected}"
            batches.append((position, header))
            expected, end = header.next_offset, position + header.size_bytes
        if end != self.size:
            return f"incomplete batch at position {end} of {self.size}"
        self.rebuild_indexes(batches)
        return None

    # ------------------------------------------------------------------ read

    def walk_headers(self, position: int = 0, end: int | None = None) -> Iterator[tuple[int, BatchHeader]]:
        """``(position, header)`` of each complete batch from ``position``, reading in chunks.

        No CRC check (see recovery for that); stops at a partial or impossible header.
        """
        end = self.size if end is None else end
        while end - position >= BATCH_HEADER_BYTES:
            buf = self.log.read(position, min(WALK_CHUNK_BYTES, end - position))
            offset = 0
            while len(buf) - offset >= BATCH_HEADER_BYTES:
                header = BatchHeader._make(BATCH_HEADER.unpack_from(buf, offset))
                if header.batch_length < MIN_BATCH_LENGTH or position + offset + header.size_bytes > end:
                    return
                yield position + offset, header
                offset += header.size_bytes
            if offset == 0:
                return
            position += offset

    def read(self, fetch_offset: int, max_bytes: int, limit_offset: int, min_one: bool) -> tuple[bytes, int]:
        """Whole batches from the one holding ``fetch_offset``, up to ``max_bytes`` (the first one
        even if larger when ``min_one``), none reaching ``limit_offset``.

        Returns ``(data, next_offset)``; ``next_offset`` is ``fetch_offset`` when nothing was read.
        Usually one read call: the index lands within index.interval.bytes of the batch.
        """
        size = self.size
        bases = self._tail_bases
        i = bisect_right(bases, fetch_offset) - 1 if bases else -1
        # Any batch boundary at or before the batch holding fetch_offset gives the same answer.
        start = self._tail_positions[i] if i >= 0 else self.index.lookup(fetch_offset)
        want = min(size - start, self.index_interval_bytes + max(max_bytes, 0) + BATCH_HEADER_BYTES)
        buf = self.log.read(start, want)
        buf_start = start
        position = start
        first = end = -1
        next_offset = fetch_offset
        unpack_length = _OFFSET_AND_LENGTH.unpack_from
        unpack_delta = _LAST_OFFSET_DELTA.unpack_from
        while size - position >= BATCH_HEADER_BYTES:
            at = position - buf_start
            if len(buf) - at < BATCH_HEADER_BYTES:
                buf = self.log.read(position, min(size - position, max(want, BATCH_HEADER_BYTES)))
                buf_start, at = position, 0
            base_offset, batch_length = unpack_length(buf, at)
            (last_delta,) = unpack_delta(buf, at + _LAST_OFFSET_DELTA_AT)
            batch_size = batch_length + 12
            last_offset = base_offset + last_delta
            if batch_length < MIN_BATCH_LENGTH or position + batch_size > size:
                break
            if first < 0:
                if last_offset < fetch_offset:
                    position += batch_size
                    continue
                if last_offset >= limit_offset or (batch_size > max_bytes and not min_one):
                    break
                first = position
            elif last_offset >= limit_offset or position + batch_size - first > max_bytes:
                break
            end = position + batch_size
            next_offset = last_offset + 1
            position = end
        if first < 0:
            return b"", fetch_offset
        if first >= buf_start and end <= buf_start + len(buf):
            if first == buf_start and end == buf_start + len(buf):
                return buf, next_offset
            return buf[first - buf_start : end - buf_start], next_offset
        return self.log.read(first, end - first), next_offset

    def find_offset_by_timestamp(self, timestamp_ms: int, min_offset: int) -> tuple[int, int] | None:
        """``(offset, timestamp)`` of the first record at or after ``min_offset`` whose timestamp
        is >= ``timestamp_ms``; only the batch that holds it is decoded."""
        start_offset = max(self.time_index.lookup(timestamp_ms), min_offset)
        for position, header in self.walk_headers(self.index.lookup(start_offset)):
            if header.last_offset < min_offset or header.max_timestamp < timestamp_ms:
                continue
            for record in decode_records(self.log.read(position, header.size_bytes)):
                if record.offset >= min_offset and record.timestamp_ms >= timestamp_ms:
                    return record.offset, record.timestamp_ms
        return None

    # ------------------------------------------------------------------ truncate, flush, delete

    def truncate_to(self, offset: int) -> int:
        """Cut the file at the start of the batch holding ``offset``; returns bytes removed."""
        cut = None
        for position, header in self.walk_headers(self.index.lookup(offset)):
            if header.last_offset >= offset:
                cut = position
                break
        if cut is None:
            return 0
        return self.truncate_at(cut)

    def truncate_at(self, position: int) -> int:
        """Cut the file at a batch boundary (durably) and fix the indexes; returns bytes removed."""
        removed = self.size - position
        if removed <= 0:
            return 0
        self.log.truncate(position)
        self.log.fsync()  # a truncation that a crash undoes would resurrect removed records
        self.size = position
        if self._tail_bases is not None:  # still every batch from its first one to the new end
            keep = bisect_right(self._tail_positions, position - 1)
            del self._tail_bases[keep:], self._tail_positions[keep:]
        self.index.truncate_to_position(position)
        self._load_tail()
        self.time_index.truncate_to_offset(self.next_offset)
        last = self.time_index.last_entry()
        if last is not None and last[0] > self.max_timestamp_ms:
            self.max_timestamp_ms, self.offset_of_max_timestamp = last
        if self.size == 0:
            self.rolling_base_ms = None
        return removed

    @property
    def has_unflushed_data(self) -> bool:
        return self._log_unsynced

    def flush(self, include_indexes: bool) -> None:
        """fsync the log file, and the indexes too when asked (roll, close, recovery)."""
        if self._log_unsynced:
            self.log.fsync()
            self._log_unsynced = False
        if include_indexes:
            self.index.sync()
            self.time_index.sync()

    def files_to_flush(self) -> list[DiskFile]:
        """For a flush run elsewhere (flush_job.py): the files to fsync, index entries written first."""
        files = [self.log] if self._log_unsynced else []
        for index in (self.index, self.time_index):
            file = index.prepare_sync()
            if file is not None:
                files.append(file)
        return files

    def flushed(self) -> None:
        """The ``files_to_flush`` were fsynced and nothing changed since (a rolled segment)."""
        self._log_unsynced = False
        self.index.synced()
        self.time_index.synced()

    def close(self) -> None:
        self.index.write_pending()
        self.time_index.write_pending()
        self.log.close()
        self.index.close()
        self.time_index.close()

    def delete(self) -> None:
        self.log.close()
        self.index.close()
        self.time_index.close()
        for suffix in SUFFIXES:
            self.disk.remove(self.path(suffix))
