"""Helpers shared by the storage tests: batches, record dumps, a disk that counts reads."""

from __future__ import annotations

from brokerlab.disk import MemoryDisk, MemoryFile
from brokerlab.ids import TopicPartition
from brokerlab.record_batch import decode_records, encode_batch, iter_headers
from node.log import LogConfig, LogManager, PartitionLog

TP = TopicPartition("orders", 0)
TP_DIR = "orders-0"


def batch(values, timestamp_ms: int = 1_000, key: bytes | None = b"k", headers=()) -> bytes:
    """One batch of records with consecutive timestamps from ``timestamp_ms``."""
    return encode_batch([(timestamp_ms + i, key, value, headers) for i, value in enumerate(values)])


def sized_batch(size: int, timestamp_ms: int = 1_000) -> bytes:
    """A one-record batch of exactly ``size`` bytes (61 header + 26 record header + value)."""
    return batch([b"x" * (size - 61 - 26 - 1)], timestamp_ms, key=b"k")


def all_records(log: PartitionLog):
    """Every record from the log start, as comparable tuples (reads in 4 KiB steps)."""
    out = []
    offset = log.log_start_offset
    while offset < log.log_end_offset:
        data = log.read(offset, 4096)
        assert data, f"empty read at {offset} below the log end {log.log_end_offset}"
        records = [tuple(r) for r in decode_records(data) if r.offset >= offset]
        out.extend(records)
        offset = records[-1][0] + 1
    return out


def headers_of(data: bytes):
    return [header for _, header in iter_headers(data)]


def open_manager(disk, now_ms: int = 0, **config) -> LogManager:
    return LogManager(disk, LogConfig(**config), now_ms)


def new_log(disk=None, now_ms: int = 0, **config) -> tuple[LogManager, PartitionLog]:
    disk = MemoryDisk() if disk is None else disk
    manager = open_manager(disk, now_ms, **config)
    return manager, manager.get_or_create(TP, now_ms)


class CountingFile:
    def __init__(self, inner: MemoryFile, counter: "CountingDisk") -> None:
        self._inner = inner
        self._counter = counter

    def read(self, position: int, size: int) -> bytes:
        self._counter.reads += 1
        return self._inner.read(position, size)

    def append(self, data: bytes) -> int:
        self._counter.appends += 1
        return self._inner.append(data)

    def fsync(self) -> None:
        self._counter.fsyncs += 1
        self._inner.fsync()

    def __getattr__(self, name):
        return getattr(self._inner, name)


class CountingDisk(MemoryDisk):
    """A MemoryDisk counting read/append/fsync calls on open files, atomic and unsynced writes,
    and listing fsyncs by path (``fsync_path`` and ``fsync_dir``) in order in ``synced``."""

    def __init__(self) -> None:
        super().__init__()
        self.reset_counts()

    def open(self, path: str):
        return CountingFile(super().open(path), self)

    def write_file_atomic(self, path: str, data: bytes, ticket: int | None = None) -> bool:
        self.atomic_writes += 1
        return super().write_file_atomic(path, data, ticket)

    def write_file(self, path: str, data: bytes) -> None:
        self.unsynced_writes += 1
        super().write_file(path, data)

    def fsync_path(self, path: str) -> None:
        self.synced.append(path)
        super().fsync_path(path)

    def fsync_dir(self, path: str) -> None:
        self.synced.append(path)
        super().fsync_dir(path)

    def reset_counts(self) -> None:
        self.reads = self.appends = self.fsyncs = self.atomic_writes = self.unsynced_writes = 0
        self.synced: list[str] = []
