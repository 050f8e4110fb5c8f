"""Disk faults applied to a stopped broker's log directories (the nemesis kills it first, -9).

How each is emulated, exactly:

- ``torn_tail``: the active (last) segment of each chosen partition loses the last ``bytes`` bytes
  (default: half of its last batch), as when a crash interrupts a write. Recovery must cut the
  log back to its longest valid prefix.
- ``bit_flip``: one bit is inverted in the last batch of the active segment (in the records,
  past the 61-byte header, so the CRC32C no longer matches). Recovery must drop that batch and
  everything after it.
- ``lose_unflushed``: a power loss. ``kill -9`` alone keeps the OS page cache, so nothing is
  lost; this instead cuts every partition back to what the broker knows was fsynced: its
  ``recovery-point-offset-checkpoint`` (the offset below which the log was flushed). Segments
  that start at or after the recovery point are deleted, the one holding it is cut at the first
  batch at or past it, and the index files of cut segments are deleted (recovery rebuilds
  them). Checkpoints stay as they were on disk (they are written atomically and fsynced).

Each returns what it did, per partition, for the history: ``{"partition": "t-0", ...}``.
"""

from __future__ import annotations

import os
from pathlib import Path

from brokerlab.ids import TopicPartition
from brokerlab.record_batch import BATCH_HEADER_BYTES, LENGTH_OFFSET, iter_headers
from node.log.checkpoints import RECOVERY_POINT_CHECKPOINT, parse_offsets

BATCH_LENGTH_PREFIX = LENGTH_OFFSET + 4  # base offset int64 + length int32


def partition_dirs(data_dir: Path, topic: str) -> dict[int, Path]:
    out = {}
    for path in data_dir.iterdir() if data_dir.is_dir() else ():
        name, _, number = path.name.rpartition("-")
        if path.is_dir() and name == topic and number.isdigit():
            out[int(number)] = path
    return out


def _segments(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.log"))


def _batches(segment: Path) -> list[tuple[int, int, int]]:
    """(position, size, base_offset) of each whole batch in a segment file."""
    data = segment.read_bytes()
    out = []
    for position, header in iter_headers(data):
        out.append((position, BATCH_LENGTH_PREFIX + header.batch_length, header.base_offset))
    return out


def _drop_indexes(segment: Path) -> None:
    for suffix in (".index", ".timeindex"):
        segment.with_suffix(suffix).unlink(missing_ok=True)


def torn_tail(data_dir: Path, topic: str, partitions: list[int] | None = None, cut_bytes: int | None = None) -> list[dict]:
    done = []
    for partition, directory in sorted(partition_dirs(data_dir, topic).items()):
        if partitions is not None and partition not in partitions:
            continue
        segments = _segments(directory)
        if not segments or segments[-1].stat().st_size == 0:
            continue
        segment = segments[-1]
        batches = _batches(segment)
        size = segment.stat().st_size
        cut = cut_bytes if cut_bytes is not None else (max(1, batches[-1][1] // 2) if batches else 1)
        cut = min(cut, size)
        os.truncate(segment, size - cut)
        _drop_indexes(segment)
        done.append({"partition": f"{topic}-{partition}", "segment": segment.name, "bytes_cut": cut,
                     "size_before": size})
    return done


def bit_flip(data_dir: Path, topic: str, partitions: list[int] | None = None) -> list[dict]:
    done = []
    for partition, directory in sorted(partition_dirs(data_dir, topic).items()):
        if partitions is not None and partition not in partitions:
            continue
        segments = [s for s in _segments(directory) if s.stat().st_size > 0]
        if not segments:
            continue
        segment = segments[-1]
        batches = _batches(segment)
        if not batches:
            continue
        position, size, base_offset = batches[-1]
        at = position + BATCH_HEADER_BYTES + max(0, (size - BATCH_HEADER_BYTES) // 2)
        with open(segment, "r+b") as handle:
            handle.seek(at)
            byte = handle.read(1)
            handle.seek(at)
            handle.write(bytes([byte[0] ^ 0x10]))
        done.append({"partition": f"{topic}-{partition}", "segment": segment.name, "byte": at,
                     "batch_base_offset": base_offset})
    return done


def lose_unflushed(data_dir: Path, topic: str) -> list[dict]:
    checkpoint = data_dir / RECOVERY_POINT_CHECKPOINT
    try:
        recovery_points = parse_offsets(checkpoint.read_bytes(), str(checkpoint))
    except FileNotFoundError:
        recovery_points = {}
    done = []
    for partition, directory in sorted(partition_dirs(data_dir, topic).items()):
        point = recovery_points.get(TopicPartition(topic, partition), 0)
        removed_bytes = 0
        first_lost = None
        for segment in _segments(directory):
            batches = _batches(segment)
            keep = next((position for position, _, base in batches if base >= point), None)
            if keep is None:
                continue
            if first_lost is None:
                first_lost = next(base for _, _, base in batches if base >= point)
            size = segment.stat().st_size
            removed_bytes += size - keep
            if keep == 0 and segment != _segments(directory)[0]:
                segment.unlink()
                _drop_indexes(segment)
            else:
                os.truncate(segment, keep)
                _drop_indexes(segment)
        done.append({"partition": f"{topic}-{partition}", "recovery_point": point, "bytes_removed": removed_bytes,
                     "first_lost_offset": first_lost})
    return done
