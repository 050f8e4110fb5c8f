"""The record-batch codec: a Kafka v2 shaped batch header with CRC32C, then the records.

Batch header (big-endian, 61 bytes, the same fields and order as Kafka's v2 batch):

    base_offset int64 | batch_length int32 | partition_leader_epoch int32 | magic int8 (=2)
    | crc uint32 | attributes int16 | last_offset_delta int32 | base_timestamp int64
    | max_timestamp int64 | producer_id int64 | producer_epoch int16 | base_sequence int32
    | record_count int32

``batch_length`` counts the bytes after its own field. The CRC32C covers everything from
``attributes`` to the end of the batch, so a broker may rewrite ``base_offset`` and
``partition_leader_epoch`` in place without recomputing it (as Kafka does).

Records differ from Kafka's on purpose: fixed-width fields instead of varints, so a pure Python
reader decodes a record with one ``struct.unpack_from`` (Kafka saves ~18 bytes a record; we
save CPU, the scarce resource here):

    length int32 (bytes after this field) | timestamp_delta int64 | offset_delta int32
    | key_length int32 (-1 = null) | value_length int32 (-1 = null) | header_count uint16
    | key | value | headers: (key_length uint16 | key utf-8 | value_length int32 | value)*
"""

from __future__ import annotations

import struct
from functools import partial
from itertools import repeat
from operator import add, itemgetter
from typing import Iterator, NamedTuple, Sequence

import crc32c

MAGIC = 2
BATCH_HEADER = struct.Struct(">qiiBIhiqqqhii")
BATCH_HEADER_BYTES = BATCH_HEADER.size  # 61
# Offsets of fields inside the header.
LENGTH_OFFSET = 8
LEADER_EPOCH_OFFSET = 12
MAGIC_OFFSET = 16
CRC_OFFSET = 17
ATTRIBUTES_OFFSET = 21
# Bytes counted by batch_length that precede the records: epoch..record_count.
_LENGTH_PREFIX = struct.Struct(">qi")
_CRC_COVERED_HEADER = struct.Struct(">hiqqqhii")
RECORD_HEADER = struct.Struct(">iqiiiH")
RECORD_HEADER_BYTES = RECORD_HEADER.size  # 26
_HEADER_KEY = struct.Struct(">H")
_HEADER_VALUE = struct.Struct(">i")
_INT64 = struct.Struct(">q")
_INT32 = struct.Struct(">i")

NO_PRODUCER_ID = -1
NO_PRODUCER_EPOCH = -1
NO_SEQUENCE = -1
NO_PARTITION_LEADER_EPOCH = -1

ATTR_TIMESTAMP_LOG_APPEND = 0x08
ATTR_TRANSACTIONAL = 0x10
ATTR_CONTROL = 0x20

Header = tuple[str, "bytes | None"]


class CorruptBatchError(ValueError):
    """A batch that fails validation; ``reason`` is one line for logs and error messages."""

    def __init__(self, reason: str, position: int = 0) -> None:
        super().__init__(reason)
        self.reason = reason
        self.position = position


class BatchHeader(NamedTuple):
    base_offset: int
    batch_length: int
    partition_leader_epoch: int
    magic: int
    crc: int
    attributes: int
    last_offset_delta: int
    base_timestamp: int
    max_timestamp: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    record_count: int

    @property
    def size_bytes(self) -> int:
        return self.batch_length + 12

    @property
    def last_offset(self) -> int:
        return self.base_offset + self.last_offset_delta

    @property
    def next_offset(self) -> int:
        return self.base_offset + self.last_offset_delta + 1

    @property
    def last_sequence(self) -> int:
        if self.base_sequence < 0:
            return NO_SEQUENCE
        return (self.base_sequence + self.last_offset_delta) % (1 << 31)


class Record(NamedTuple):
    """One decoded record (what a consumer sees, before deserialization).

    A NamedTuple because a consumer builds millions of these a second.
    """

    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: tuple[Header, ...] = ()


def encode_record(
    offset_delta: int,
    timestamp_delta_ms: int,
    key: bytes | None,
    value: bytes | None,
    headers: Sequence[Header] = (),
) -> bytes:
    """Encode one record (the producer appends these to an open batch)."""
    key_length = -1 if key is None else len(key)
    value_length = -1 if value is None else len(value)
    if headers:
        header_bytes = _encode_headers(headers)
    else:
        header_bytes = b""
    length = RECORD_HEADER_BYTES - 4 + max(key_length, 0) + max(value_length, 0) + len(header_bytes)
    head = RECORD_HEADER.pack(
        length, timestamp_delta_ms, offset_delta, key_length, value_length, len(headers)
    )
    if key is None:
        return b"".join((head, value or b"", header_bytes))
    return b"".join((head, key, value or b"", header_bytes))


def _encode_headers(headers: Sequence[Header]) -> bytes:
    parts = []
    for name, value in headers:
        name_bytes = name.encode()
        parts.append(_HEADER_KEY.pack(len(name_bytes)))
        parts.append(name_bytes)
        if value is None:
            parts.append(_HEADER_VALUE.pack(-1))
        else:
            parts.append(_HEADER_VALUE.pack(len(value)))
            parts.append(value)
    return b"".join(parts)


def build_batch(
    records: bytes,
    record_count: int,
    base_timestamp_ms: int,
    max_timestamp_ms: int,
    *,
    base_offset: int = 0,
    partition_leader_epoch: int = NO_PARTITION_LEADER_EPOCH,
    attributes: int = 0,
    producer_id: int = NO_PRODUCER_ID,
    producer_epoch: int = NO_PRODUCER_EPOCH,
    base_sequence: int = NO_SEQUENCE,
) -> bytes:
    """Wrap already encoded records (offset deltas 0..record_count-1) in a batch header."""
    if record_count < 1:
        raise ValueError("a batch holds at least one record")
    covered = (
        _CRC_COVERED_HEADER.pack(
            attributes,
            record_count - 1,
            base_timestamp_ms,
            max_timestamp_ms,
            producer_id,
            producer_epoch,
            base_sequence,
            record_count,
        )
        + records
    )
    crc = crc32c.crc32c(covered)
    batch_length = 4 + 1 + 4 + len(covered)
    return b"".join(
        (
            _LENGTH_PREFIX.pack(base_offset, batch_length),
            struct.pack(">iBI", partition_leader_epoch, MAGIC, crc),
            covered,
        )
    )


def encode_batch(
    records: Sequence[tuple[int, bytes | None, bytes | None, Sequence[Header]]],
    **batch_fields: int,
) -> bytes:
    """Encode ``(timestamp_ms, key, value, headers)`` tuples as one batch (tests and tools)."""
    base_timestamp = records[0][0]
    parts = [
        encode_record(i, ts - base_timestamp, key, value, headers)
        for i, (ts, key, value, headers) in enumerate(records)
    ]
    max_timestamp = max(ts for ts, _, _, _ in records)
    return build_batch(b"".join(parts), len(parts), base_timestamp, max_timestamp, **batch_fields)


def read_header(buf: bytes | memoryview, position: int = 0) -> BatchHeader:
    """Read a batch header; raises CorruptBatchError if fewer than 61 bytes remain."""
    if len(buf) - position < BATCH_HEADER_BYTES:
        raise CorruptBatchError("truncated batch header", position)
    return BatchHeader._make(BATCH_HEADER.unpack_from(buf, position))


def validate_batch(buf: bytes | memoryview, position: int = 0) -> BatchHeader:
    """Check one batch at ``position``: length, magic, CRC32C, record count and offset deltas.

    Returns its header; raises CorruptBatchError with the first problem found.
    """
    header = read_header(buf, position)
    end = position + header.size_bytes
    if header.batch_length < BATCH_HEADER_BYTES - 12:
        raise CorruptBatchError(f"batch length {header.batch_length} is below the header size", position)
    if end > len(buf):
        raise CorruptBatchError(
            f"batch length {header.batch_length} runs past the end of the data", position
        )
    if header.magic != MAGIC:
        raise CorruptBatchError(f"unsupported magic {header.magic}", position)
    actual_crc = crc32c.crc32c(memoryview(buf)[position + ATTRIBUTES_OFFSET : end])
    if actual_crc != header.crc:
        raise CorruptBatchError(
            f"CRC32C mismatch: stored {header.crc:#010x}, computed {actual_crc:#010x}", position
        )
    if header.record_count < 1 or header.last_offset_delta != header.record_count - 1:
        raise CorruptBatchError(
            f"record count {header.record_count} disagrees with last offset delta "
            f"{header.last_offset_delta}",
            position,
        )
    _check_records(buf, position + BATCH_HEADER_BYTES, end, header.record_count, position)
    return header


def _check_records(buf, pos: int, end: int, record_count: int, batch_position: int) -> None:
    if record_count >= _FAST_CHECK_MIN_RECORDS and _uniform_records_in_order(buf, pos, end, record_count):
        return  # the walk would find nothing wrong
    _walk_records(buf, pos, end, record_count, batch_position)


def uniform_record_stride(buf: bytes | memoryview, start: int, end: int, count: int) -> int:
    """``4 + length`` when ``count`` records that all carry the same length prefix exactly fill
    ``buf[start:end]`` (a producer of fixed-size values sends such batches), else 0.

    Four strided slices, one per byte of the int32 prefix, compare every record's length at C
    speed instead of a Python step per record.
    """
    if count < 1 or end - start < 4:
        return 0
    (length,) = _INT32.unpack_from(buf, start)
    stride = 4 + length
    if length < 0 or stride * count != end - start:
        return 0
    region = memoryview(buf)[start:end]
    prefix = bytes(region[:4])
    for j in range(4):
        if region[j::stride] != prefix[j : j + 1] * count:
            return 0
    return stride


def _uniform_records_in_order(buf, start: int, end: int, count: int) -> bool:
    """The fast path of ``_check_records``: records of one length (at least a record header)
    whose offset deltas are 0, 1, 2... -- each of the 4 delta bytes compared for every record at
    once, by strided slices. False only sends the caller to the walk, which names the problem."""
    stride = uniform_record_stride(buf, start, end, count)
    if stride < RECORD_HEADER_BYTES:
        return False
    deltas = memoryview(buf)[start + _OFFSET_DELTA_AT : end]
    lanes = _offset_delta_lanes(count)
    return all(deltas[j::stride] == lanes[j][:count] for j in range(4))


# Below this many records the walk is cheaper than the slices' fixed cost (~2 us).
_FAST_CHECK_MIN_RECORDS = 16
_OFFSET_DELTA_AT = 12  # in a record: after length int32 and timestamp_delta int64
# Lane j holds byte j of the big-endian int32s 0, 1, 2...; grown on demand, never shrunk (a
# count here is bounded by the bytes it covers: at least 26 a record).
_delta_lanes: list[tuple[bytes, bytes, bytes, bytes]] = [(b"", b"", b"", b"")]


def _offset_delta_lanes(count: int) -> tuple[bytes, bytes, bytes, bytes]:
    lanes = _delta_lanes[0]
    if len(lanes[0]) < count:
        size = max(count, 2 * len(lanes[0]), 1024)
        packed = struct.pack(f">{size}i", *range(size))
        lanes = _delta_lanes[0] = (packed[0::4], packed[1::4], packed[2::4], packed[3::4])
    return lanes


def _walk_records(buf, pos: int, end: int, record_count: int, batch_position: int) -> None:
    """Check record by record; raises CorruptBatchError naming the first problem."""
    unpack = RECORD_HEADER.unpack_from
    for expected_delta in range(record_count):
        if end - pos < RECORD_HEADER_BYTES:
            raise CorruptBatchError(
                f"record count {record_count} disagrees with the batch length "
                f"(record {expected_delta} is cut short)",
                batch_position,
            )
        length, _, offset_delta, _, _, _ = unpack(buf, pos)
        if offset_delta != expected_delta:
            raise CorruptBatchError(
                f"record {expected_delta} has offset delta {offset_delta}", batch_position
            )
        if length < RECORD_HEADER_BYTES - 4:
            raise CorruptBatchError(f"record {expected_delta} has length {length}", batch_position)
        pos += 4 + length
    if pos != end:
        raise CorruptBatchError(
            f"record count {record_count} disagrees with the batch length "
            f"({end - pos} bytes left over or missing)",
            batch_position,
        )


def iter_headers(buf: bytes | memoryview, position: int = 0, end: int | None = None) -> Iterator[tuple[int, BatchHeader]]:
    """Walk batch headers (no validation); yields ``(position, header)``. Stops at a partial batch."""
    end = len(buf) if end is None else end
    while end - position >= BATCH_HEADER_BYTES:
        header = BatchHeader._make(BATCH_HEADER.unpack_from(buf, position))
        if header.batch_length < 0 or position + header.size_bytes > end:
            return
        yield position, header
        position += header.size_bytes


def validate_batches(buf: bytes | memoryview) -> list[BatchHeader]:
    """Validate every batch in ``buf`` (a produce payload); raises on the first bad one."""
    headers = []
    position = 0
    if len(buf) == 0:
        raise CorruptBatchError("no record batch in the payload")
    while position < len(buf):
        header = validate_batch(buf, position)
        headers.append(header)
        position += header.size_bytes
    return headers


def set_base_offset(batch: bytearray, position: int, base_offset: int) -> None:
    """Stamp the base offset into a batch in place (outside the CRC)."""
    _INT64.pack_into(batch, position, base_offset)


def set_partition_leader_epoch(batch: bytearray, position: int, epoch: int) -> None:
    _INT32.pack_into(batch, position + LEADER_EPOCH_OFFSET, epoch)


def decode_records(buf: bytes | memoryview, position: int = 0, end: int | None = None) -> list[Record]:
    """Decode every record of every complete batch in ``buf[position:end]``."""
    out: list[Record] = []
    for batch_position, header in iter_headers(buf, position, end):
        columns = decode_batch_columns(buf, batch_position, header)
        out.extend(map(_new_record, zip(*columns)))
    return out


# tuple.__new__ through partial builds a NamedTuple without a Python-level __new__ call.
_new_record = partial(tuple.__new__, Record)


class RecordColumns(NamedTuple):
    """The records of one batch as parallel sequences (what a consumer slices into polls).

    Columns, not rows, because building them is a handful of C-level passes per batch
    instead of a Python loop per record.
    """

    offsets: range
    timestamps: list[int]
    keys: list["bytes | None"]
    values: list["bytes | None"]
    headers: list[tuple[Header, ...]]

    @property
    def record_count(self) -> int:
        return len(self.offsets)


_EMPTY_COLUMNS = RecordColumns(range(0), [], [], [], [])
# Record-header bytes that fix a record's shape: length, key_length, value_length, header_count.
_SHAPE_BYTES = (0, 1, 2, 3, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25)
_uniform_structs: dict[tuple[int, int], struct.Struct] = {}


def decode_batch_columns(
    buf: bytes | memoryview, batch_position: int, header: BatchHeader, first_offset: int | None = None
) -> RecordColumns:
    """Decode one batch's records, skipping those below ``first_offset`` (a consumer's position).

    Relies on record ``i`` having offset delta ``i``, which :func:`validate_batch` enforces on
    every append. When every record has the same shape (key and value lengths, no headers: what
    a producer of fixed-size records sends), one ``struct.iter_unpack`` decodes the whole batch.
    """
    count = header.record_count
    skip = 0 if first_offset is None else min(max(first_offset - header.base_offset, 0), count)
    if skip == count:
        return _EMPTY_COLUMNS
    start = batch_position + BATCH_HEADER_BYTES
    end = batch_position + header.size_bytes
    region = bytes(buf[start:end])
    length, _, _, key_length, value_length, header_count = RECORD_HEADER.unpack_from(region, 0)
    stride = 4 + length
    if header_count == 0 and stride * count == len(region) and _uniform_shape(region, stride, count):
        return _decode_uniform(region, header, stride, skip, key_length, value_length)
    return _decode_mixed(region, header, skip)


def _uniform_shape(region: bytes, stride: int, count: int) -> bool:
    # A strided slice picks one header byte of every record; all equal means one shape.
    for index in _SHAPE_BYTES:
        if region[index::stride].count(region[index]) != count:
            return False
    return True


def _decode_uniform(
    region: bytes, header: BatchHeader, stride: int, skip: int, key_length: int, value_length: int
) -> RecordColumns:
    count = header.record_count - skip
    shape = (key_length, value_length)
    unpacker = _uniform_structs.get(shape)
    if unpacker is None:
        # timestamp_delta, then key and value; "0s" for a null one (replaced by None below).
        unpacker = struct.Struct(f">4xq14x{max(key_length, 0)}s{max(value_length, 0)}s")
        _uniform_structs[shape] = unpacker
    rows = list(unpacker.iter_unpack(memoryview(region)[skip * stride :]))
    first = header.base_offset + skip
    if header.attributes & ATTR_TIMESTAMP_LOG_APPEND:
        timestamps = [header.max_timestamp] * count
    else:
        timestamps = list(map(add, repeat(header.base_timestamp, count), map(_FIRST, rows)))
    keys = [None] * count if key_length < 0 else list(map(_SECOND, rows))
    values = [None] * count if value_length < 0 else list(map(_THIRD, rows))
    return RecordColumns(range(first, first + count), timestamps, keys, values, [()] * count)


_FIRST = itemgetter(0)
_SECOND = itemgetter(1)
_THIRD = itemgetter(2)


def _decode_mixed(region: bytes, header: BatchHeader, skip: int) -> RecordColumns:
    unpack = RECORD_HEADER.unpack_from
    base_timestamp = header.base_timestamp
    log_append = header.attributes & ATTR_TIMESTAMP_LOG_APPEND
    timestamps: list[int] = []
    keys: list[bytes | None] = []
    values: list[bytes | None] = []
    headers_column: list[tuple[Header, ...]] = []
    pos = 0
    for index in range(header.record_count):
        length, ts_delta, _, key_length, value_length, header_count = unpack(region, pos)
        if index >= skip:
            cursor = pos + RECORD_HEADER_BYTES
            if key_length >= 0:
                keys.append(region[cursor : cursor + key_length])
                cursor += key_length
            else:
                keys.append(None)
            if value_length >= 0:
                values.append(region[cursor : cursor + value_length])
                cursor += value_length
            else:
                values.append(None)
            headers_column.append(_decode_headers(region, cursor, header_count) if header_count else ())
            timestamps.append(header.max_timestamp if log_append else base_timestamp + ts_delta)
        pos += 4 + length
    first = header.base_offset + skip
    return RecordColumns(range(first, first + len(values)), timestamps, keys, values, headers_column)


def _decode_headers(buf: bytes, cursor: int, count: int) -> tuple[Header, ...]:
    out = []
    for _ in range(count):
        (name_length,) = _HEADER_KEY.unpack_from(buf, cursor)
        cursor += 2
        name = buf[cursor : cursor + name_length].decode()
        cursor += name_length
        (value_length,) = _HEADER_VALUE.unpack_from(buf, cursor)
        cursor += 4
        if value_length < 0:
            out.append((name, None))
        else:
            out.append((name, buf[cursor : cursor + value_length]))
            cursor += value_length
    return tuple(out)
