"""The metadata journal: an append-only file of ``MetadataRecord``s (Kafka KRaft's __cluster_metadata).

Each record is one frame::

    length   u32 big-endian   size of the payload
    crc      u32 big-endian   CRC32C of the 4 length bytes followed by the payload
    payload  bytes            the serialized MetadataRecord

Offsets are record indexes from 0; the end offset is the number of records. ``append`` writes
every frame of a batch with one write and fsyncs before it returns, so whatever the controller
replies after an append survives power loss. Opening the journal recovers it: frames are read
from the start and the file is cut at the first frame that is incomplete (a torn write), fails
its CRC or does not parse, so the journal is always its longest valid prefix.

The records are also kept in memory: the controller's metadata is small, and brokers fetching
from any offset are served without touching the disk.
"""

from __future__ import annotations

import struct
from typing import Iterable, Sequence

import crc32c
from google.protobuf.message import DecodeError

from brokerlab.disk import Disk
from brokerlab.v1.metadata_pb2 import MetadataRecord

FRAME_HEADER = struct.Struct(">II")
_LENGTH = struct.Struct(">I")
# A sanity bound: a length field beyond it is garbage, not a record.
MAX_RECORD_BYTES = 16 * 1024 * 1024
DEFAULT_PATH = "metadata/journal.log"


def frame_checksum(payload: bytes) -> int:
    return crc32c.crc32c(payload, crc32c.crc32c(_LENGTH.pack(len(payload))))


def encode_frame(record: MetadataRecord) -> bytes:
    payload = record.SerializeToString()
    if len(payload) > MAX_RECORD_BYTES:
        raise ValueError(f"metadata record of {len(payload)} bytes exceeds {MAX_RECORD_BYTES}")
    return FRAME_HEADER.pack(len(payload), frame_checksum(payload)) + payload


def decode_frames(data: bytes) -> tuple[list[MetadataRecord], int]:
    """Records of the longest valid prefix of ``data`` and that prefix's length in bytes."""
    records: list[MetadataRecord] = []
    position = 0
    view = memoryview(data)
    while position + FRAME_HEADER.size <= len(data):
        length, checksum = FRAME_HEADER.unpack_from(data, position)
        start = position + FRAME_HEADER.size
        end = start + length
        if length > MAX_RECORD_BYTES or end > len(data):
            break  # torn write or a garbage length
        payload = bytes(view[start:end])
        if frame_checksum(payload) != checksum:
            break
        try:
            record = MetadataRecord.FromString(payload)
        except DecodeError:
            break
        records.append(record)
        position = end
    return records, position


class MetadataJournal:
    """Durable, append-only sequence of metadata records."""

    def __init__(self, disk: Disk, path: str = DEFAULT_PATH) -> None:
        self._disk = disk
        self.path = path
        parent = path.rsplit("/", 1)[0] if "/" in path else ""
        created = not disk.exists(path)
        if parent:
            disk.makedirs(parent)
        self._file = disk.open(path)
        if created:
            # The new file's directory entry must be durable too, or a crash could lose the file.
            self._file.fsync()
            disk.fsync_dir(parent)
        size = self._file.size()
        records, valid_bytes = decode_frames(self._file.read(0, size))
        self._records: list[MetadataRecord] = records
        self._size = valid_bytes
        # What start-up recovery cut off (a torn or corrupt tail); 0 for a clean journal.
        self.truncated_bytes = size - valid_bytes
        if self.truncated_bytes:
            self._file.truncate(valid_bytes)
            self._file.fsync()

    @property
    def end_offset(self) -> int:
        """The offset the next record will get (= the number of records)."""
        return len(self._records)

    @property
    def size_bytes(self) -> int:
        return self._size

    def append(self, records: Iterable[MetadataRecord]) -> int:
        """Append ``records`` durably (written and fsynced); returns the new end offset."""
        batch = list(records)
        if not batch:
            return self.end_offset
        data = b"".join(encode_frame(record) for record in batch)
        try:
            self._file.append(data)
            self._file.fsync()
        except Exception:
            # Leave no half-written frame behind the records we still consider the journal.
            self._file.truncate(self._size)
            raise
        self._size += len(data)
        self._records.extend(batch)
        return self.end_offset

    def read(self, from_offset: int, max_records: int) -> list[MetadataRecord]:
        """Up to ``max_records`` records starting at ``from_offset`` ([] at the end).

        The returned records are shared with the journal: callers must not modify them.
        """
        if from_offset < 0 or from_offset > self.end_offset:
            raise ValueError(f"offset {from_offset} outside the journal [0, {self.end_offset}]")
        return self._records[from_offset : from_offset + max(0, max_records)]

    def records(self) -> Sequence[MetadataRecord]:
        """Every record, for replay at start."""
        return tuple(self._records)

    def close(self) -> None:
        self._file.close()
