"""Opening a partition's segments after a restart, and crash recovery (Kafka's LogLoader).

After a clean shutdown every segment is trusted: its indexes are checked (and rebuilt when
missing or corrupt) and the headers after the last index entry are walked to find its end.
After an unclean one, the segments before the one holding the recovery point are trusted the
same way (they were fsynced, indexes included, when they rolled), and every segment from there
on is scanned: each batch is validated (length, magic, CRC32C, record count, offsets
increasing and contiguous with the previous batch); the file is cut at the first invalid byte,
every later segment is deleted, and the indexes are rebuilt from the scan. A trusted segment that
fails its cheap checks (a torn tail, an offset gap) is recovered the same way.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import NamedTuple

from brokerlab.disk import Disk
from brokerlab.record_batch import (
    BATCH_HEADER_BYTES,
    BatchHeader,
    CorruptBatchError,
    read_header,
    validate_batch,
)
from node.log.segment import LOG_SUFFIX, MIN_BATCH_LENGTH, LogSegment, parse_segment_file_name

# The scan reads this much at a time (a batch larger than this is read whole).
SCAN_CHUNK_BYTES = 4 * 1024 * 1024


class ScanResult(NamedTuple):
    valid_bytes: int  # bytes before the first invalid one
    batches: list[tuple[int, BatchHeader]]
    next_offset: int
    problem: str | None  # why the scan stopped early, None if the whole file is valid


@dataclass
class LoadResult:
    segments: list[LogSegment]
    recovered: bool = False  # unclean start, or a trusted segment failed its checks
    scan_start_offset: int | None = None  # where the scan began (None: nothing scanned)
    scanned_segments: int = 0
    deleted_segments: int = 0
    truncated_bytes: int = 0
    problem: str | None = None  # the first invalid thing found
    # (epoch, base offset) where the partition leader epoch changes in the scanned batches.
    epochs: list[tuple[int, int]] = field(default_factory=list)


def scan_segment(segment: LogSegment, expected_offset: int, chunk_bytes: int = SCAN_CHUNK_BYTES) -> ScanResult:
    """Validate every batch of a segment, starting at ``expected_offset``."""
    size = segment.size
    position = 0
    batches: list[tuple[int, BatchHeader]] = []
    buf = b""
    buf_start = 0
    problem = None
    while position < size:
        at = position - buf_start
        if len(buf) - at < BATCH_HEADER_BYTES:
            buf = segment.log.read(position, min(chunk_bytes, size - position))
            buf_start, at = position, 0
            if len(buf) < BATCH_HEADER_BYTES:
                problem = f"truncated batch header at position {position}"
                break
        header = read_header(buf, at)
        if header.batch_length < MIN_BATCH_LENGTH:
            problem = f"batch length {header.batch_length} at position {position} is below the header size"
            break
        if position + header.size_bytes > size:
            problem = f"batch at position {position} runs past the end of the segment"
            break
        if at + header.size_bytes > len(buf):
            buf = segment.log.read(position, max(min(chunk_bytes, size - position), header.size_bytes))
            buf_start, at = position, 0
        try:
            validate_batch(buf, at)
        except CorruptBatchError as exc:
            problem = f"{exc.reason} (batch at position {position})"
            break
        if header.base_offset != expected_offset:
            problem = f"batch at position {position} has base offset {header.base_offset}, expected {expected_offset}"
            break
        batches.append((position, header))
        expected_offset = header.next_offset
        position += header.size_bytes
    return ScanResult(position, batches, expected_offset, problem)


def open_segments(disk: Disk, directory: str, index_interval_bytes: int) -> list[LogSegment]:
    """Every segment of a partition directory, by base offset; orphan index files are removed."""
    names = disk.listdir(directory)
    bases = set()
    others = []
    for name in names:
        parsed = parse_segment_file_name(name)
        if parsed is None:
            if name.endswith(".tmp"):
                disk.remove(f"{directory}/{name}")  # a metadata write cut short
            continue
        base_offset, suffix = parsed
        if suffix == LOG_SUFFIX:
            bases.add(base_offset)
        else:
            others.append((base_offset, name))
    for base_offset, name in others:
        if base_offset not in bases:
            disk.remove(f"{directory}/{name}")
    return [LogSegment(disk, directory, base, index_interval_bytes) for base in sorted(bases)]


def load_segments(
    disk: Disk,
    directory: str,
    index_interval_bytes: int,
    recovery_point: int,
    clean_shutdown: bool,
    now_ms: int,
) -> LoadResult:
    segments = open_segments(disk, directory, index_interval_bytes)
    # An unclean start is a recovery even when no segment survived to be scanned.
    result = LoadResult(segments, recovered=not clean_shutdown)
    if not segments:
        return result
    if clean_shutdown:
        scan_from = len(segments)
    else:
        bases = [segment.base_offset for segment in segments]
        scan_from = max(bisect.bisect_right(bases, recovery_point) - 1, 0)
    for i in range(scan_from):
        segment = segments[i]
        problem = segment.load(now_ms)
        if problem is None and i > 0 and segment.base_offset != segments[i - 1].next_offset:
            problem = f"segment {segment.base_offset} does not follow offset {segments[i - 1].next_offset}"
        if problem is not None:
            result.problem = f"segment {segment.base_offset}: {problem}"
            scan_from = i
            break
    if scan_from < len(segments):
        _recover(segments, scan_from, result, now_ms)
    return result


def _recover(segments: list[LogSegment], scan_from: int, result: LoadResult, now_ms: int) -> None:
    result.recovered = True
    expected = segments[scan_from - 1].next_offset if scan_from > 0 else segments[0].base_offset
    result.scan_start_offset = expected
    last_epoch = None
    keep = len(segments)
    for i in range(scan_from, len(segments)):
        segment = segments[i]
        if segment.base_offset != expected:
            # A gap or an overlap (a lost unflushed segment): this one and what follows go.
            result.problem = result.problem or (
                f"segment {segment.base_offset} does not follow offset {expected}"
            )
            keep = i
            break
        scan = scan_segment(segment, expected)
        result.scanned_segments += 1
        for _, header in scan.batches:
            if header.partition_leader_epoch >= 0 and header.partition_leader_epoch != last_epoch:
                last_epoch = header.partition_leader_epoch
                result.epochs.append((last_epoch, header.base_offset))
        if scan.problem is not None:
            result.problem = result.problem or f"segment {segment.base_offset}: {scan.problem}"
            result.truncated_bytes += segment.size - scan.valid_bytes
            segment.log.truncate(scan.valid_bytes)
            segment.size = scan.valid_bytes
        segment.rebuild_indexes(scan.batches)
        segment.rolling_base_ms = now_ms if segment.size else None
        # Make the scanned segment durable (a cut, and data a killed process left in the page
        # cache) before the recovery point moves past it.
        segment.log.fsync()
        segment.flush(include_indexes=True)
        expected = scan.next_offset
        if scan.problem is not None:
            keep = i + 1
            break
    for segment in segments[keep:]:
        result.truncated_bytes += segment.size
        result.deleted_segments += 1
        segment.delete()
    del segments[keep:]
