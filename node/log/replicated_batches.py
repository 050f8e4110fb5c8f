"""The follower's check of batches a leader already validated (``append_as_follower``).

A leader unpacks every record (``validate_batches``); a follower trusts the records and checks
each batch's header, CRC32C and that its records fill its length, at a fraction of the cost.
"""

from __future__ import annotations

import struct

import crc32c

from brokerlab.record_batch import (
    ATTRIBUTES_OFFSET,
    BATCH_HEADER_BYTES,
    MAGIC,
    BatchHeader,
    CorruptBatchError,
    read_header,
    uniform_record_stride,
)


def check_replicated_batches(buf: bytes | memoryview) -> list[BatchHeader]:
    """Batches a leader already validated record by record: check each one's header, length,
    magic, CRC32C (which covers every record byte) and that its record count agrees with its
    length, without unpacking every record again (that walk is the costliest part of
    ``validate_batches``). Raises CorruptBatchError like it."""
    headers = []
    position = 0
    size = len(buf)
    if size == 0:
        raise CorruptBatchError("no record batch in the payload")
    view = memoryview(buf)
    while position < size:
        header = read_header(buf, position)
        end = position + header.size_bytes
        if header.batch_length < BATCH_HEADER_BYTES - 12 or end > size:
            raise CorruptBatchError(f"batch length {header.batch_length} does not fit the data", position)
        if header.magic != MAGIC:
            raise CorruptBatchError(f"unsupported magic {header.magic}", position)
        if crc32c.crc32c(view[position + ATTRIBUTES_OFFSET:end]) != header.crc:
            raise CorruptBatchError("CRC32C mismatch", position)
        if header.record_count < 1 or header.last_offset_delta != header.record_count - 1:
            raise CorruptBatchError(f"record count {header.record_count} disagrees with last offset delta "
                                    f"{header.last_offset_delta}", position)
        if not _record_lengths_fit(view, position + BATCH_HEADER_BYTES, end, header.record_count):
            raise CorruptBatchError(f"record count {header.record_count} disagrees with the batch length", position)
        headers.append(header)
        position = end
    return headers


def _record_lengths_fit(view: memoryview, start: int, end: int, count: int) -> bool:
    """Do ``count`` length-prefixed records exactly fill ``view[start:end]``?

    Equal-sized records (the common case) are checked at C speed (``uniform_record_stride``);
    others by walking the length prefixes.
    """
    if end - start < 4:
        return False
    if uniform_record_stride(view, start, end, count):
        return True
    position = start
    unpack = _RECORD_LENGTH.unpack_from
    for _ in range(count):
        if end - position < 4:
            return False
        (length,) = unpack(view, position)
        if length < 0:
            return False
        position += 4 + length
    return position == end


_RECORD_LENGTH = struct.Struct(">i")

