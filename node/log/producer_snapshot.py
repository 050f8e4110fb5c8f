"""Producer state snapshots: ``<offset:020d>.snapshot`` in the partition directory (Kafka's layout).

A snapshot named ``N`` holds the producer state of every batch below offset ``N``. The log
writes one when a segment rolls (``N`` = the new segment's base offset) and at a clean
shutdown (``N`` = the log end offset), so a restart loads the newest snapshot at or below the
log end and replays only the batch headers after it, never the whole log. Truncation deletes
the snapshots past the new end and rebuilds the state the same way.

File format (big-endian; CRC32C of everything after the crc field, like Kafka's snapshots)::

    version int16 (=1) | crc uint32 | producer_count int32
    per producer: producer_id int64 | producer_epoch int16 | last_timestamp_ms int64 | run_count int16
        per run: first_sequence int32 | last_sequence int32 | first_offset int64 | last_offset int64

Kafka keeps only the last batch of each producer in a snapshot; brokerlab keeps every retained
run, so the duplicates a restarted leader recognises do not depend on where a snapshot fell.
"""

from __future__ import annotations

import struct
from typing import Sequence

import crc32c

from brokerlab.disk import Disk
from node.log.producer_state import ProducerStateEntry, ProducerStateManager, Run
from node.log.segment import LogSegment

SNAPSHOT_SUFFIX = ".snapshot"
VERSION = 1
_HEAD = struct.Struct(">hIi")
_PRODUCER = struct.Struct(">qhqh")
_RUN = struct.Struct(">iiqq")


class SnapshotError(ValueError):
    """A snapshot file that does not parse (torn, bit flip): it is deleted and an older one used."""


def snapshot_file_name(offset: int) -> str:
    return f"{offset:020d}{SNAPSHOT_SUFFIX}"


def parse_snapshot_file_name(name: str) -> int | None:
    stem, suffix = name[: -len(SNAPSHOT_SUFFIX)], name[-len(SNAPSHOT_SUFFIX):]
    if suffix != SNAPSHOT_SUFFIX or len(stem) != 20 or not stem.isdigit():
        return None
    return int(stem)


def encode(state: ProducerStateManager) -> bytes:
    parts = []
    for entry in state.producers.values():
        runs = list(entry.runs)
        parts.append(_PRODUCER.pack(entry.producer_id, entry.producer_epoch, entry.last_timestamp_ms, len(runs)))
        parts.extend(_RUN.pack(*run.as_tuple()) for run in runs)
    body = struct.pack(">i", len(state.producers)) + b"".join(parts)
    return struct.pack(">hI", VERSION, crc32c.crc32c(body)) + body


def decode(data: bytes) -> ProducerStateManager:
    if len(data) < _HEAD.size:
        raise SnapshotError("shorter than its header")
    version, crc, count = _HEAD.unpack_from(data, 0)
    if version != VERSION:
        raise SnapshotError(f"unsupported version {version}")
    if crc32c.crc32c(memoryview(data)[6:]) != crc:
        raise SnapshotError("CRC32C mismatch")
    state = ProducerStateManager()
    position = _HEAD.size
    try:
        for _ in range(count):
            producer_id, epoch, last_timestamp_ms, run_count = _PRODUCER.unpack_from(data, position)
            position += _PRODUCER.size
            entry = ProducerStateEntry(producer_id, epoch, last_timestamp_ms)
            for _ in range(run_count):
                entry.runs.append(Run(*_RUN.unpack_from(data, position)))
                position += _RUN.size
            if entry.runs:
                state.producers[producer_id] = entry
    except struct.error as exc:
        raise SnapshotError(f"cut short: {exc}") from None
    if position != len(data):
        raise SnapshotError(f"{len(data) - position} bytes after the last producer")
    return state


def snapshot_offsets(disk: Disk, directory: str) -> list[int]:
    """Offsets of the snapshot files in a partition directory, ascending."""
    offsets = []
    for name in disk.listdir(directory):
        offset = parse_snapshot_file_name(name)
        if offset is not None:
            offsets.append(offset)
    return sorted(offsets)


def write_snapshot(disk: Disk, directory: str, offset: int, state: ProducerStateManager,
                   keep_from: int, sync: bool = True) -> str:
    """Write the snapshot at ``offset``; delete those below ``keep_from`` (the first segment's base).

    ``sync=False`` (a roll, Kafka's ``takeSnapshot(sync = false)``) skips the fsync, which would
    queue behind other fsyncs on the event loop; the caller fsyncs the returned path later. Lost
    or torn in a power loss meanwhile, it fails its CRC or is missing, and the loader falls back."""
    path = f"{directory}/{snapshot_file_name(offset)}"
    if sync:
        disk.write_file_atomic(path, encode(state))
    else:
        disk.write_file(path, encode(state))
    for old in snapshot_offsets(disk, directory):
        if old < keep_from and old != offset:
            disk.remove(f"{directory}/{snapshot_file_name(old)}")
    return path


def fsync_snapshots(disk: Disk, paths: Sequence[str]) -> list[str]:
    """fsync snapshots written with ``sync=False``; returns those gone. A snapshot the log deleted
    meanwhile (``keep_from``, a truncation) is no failure: nothing needs it. Other errors raise."""
    gone = []
    for path in paths:
        try:
            disk.fsync_path(path)
        except FileNotFoundError:
            gone.append(path)
    return gone


def delete_snapshots_after(disk: Disk, directory: str, offset: int) -> int:
    """Delete every snapshot past ``offset`` (a truncation below it); returns how many."""
    deleted = 0
    for found in snapshot_offsets(disk, directory):
        if found > offset:
            disk.remove(f"{directory}/{snapshot_file_name(found)}")
            deleted += 1
    return deleted


def delete_all_snapshots(disk: Disk, directory: str) -> None:
    for found in snapshot_offsets(disk, directory):
        disk.remove(f"{directory}/{snapshot_file_name(found)}")


class LoadedState:
    """What ``load_producer_state`` did (for the LogRecovered-style event and tests)."""

    __slots__ = ("state", "snapshot_offset", "replayed_batches", "dropped_snapshots", "problem")

    def __init__(self, state: ProducerStateManager, snapshot_offset: int | None, replayed_batches: int,
                 dropped_snapshots: int, problem: str | None) -> None:
        self.state = state
        self.snapshot_offset = snapshot_offset
        self.replayed_batches = replayed_batches
        self.dropped_snapshots = dropped_snapshots
        self.problem = problem


def load_producer_state(disk: Disk, directory: str, segments: Sequence[LogSegment],
                        log_end_offset: int, now_ms: int) -> LoadedState:
    """The producer state for a log ending at ``log_end_offset``: the newest readable snapshot
    at or below it, then every batch header after it (snapshots past the end are deleted)."""
    dropped = delete_snapshots_after(disk, directory, log_end_offset)
    first_base = segments[0].base_offset if segments else log_end_offset
    problem = None
    state = None
    snapshot_offset = None
    for offset in reversed(snapshot_offsets(disk, directory)):
        if offset < first_base:
            break  # the batches between it and the first segment are gone: it cannot be continued
        path = f"{directory}/{snapshot_file_name(offset)}"
        try:
            state = decode(disk.read_file(path))
        except (SnapshotError, FileNotFoundError) as exc:
            problem = problem or f"{snapshot_file_name(offset)}: {exc}"
            disk.remove(path)
            dropped += 1
            continue
        snapshot_offset = offset
        break
    if state is None:
        state = ProducerStateManager()
    state.clock_ms = now_ms  # replayed batches count as seen now
    start = snapshot_offset if snapshot_offset is not None else first_base
    replayed = replay(state, segments, start, log_end_offset)
    return LoadedState(state, snapshot_offset, replayed, dropped, problem)


def replay(state: ProducerStateManager, segments: Sequence[LogSegment], from_offset: int, to_offset: int) -> int:
    """Apply the headers of the batches in ``[from_offset, to_offset)``; returns how many."""
    applied = 0
    for segment in segments:
        if segment.next_offset <= from_offset or segment.base_offset >= to_offset:
            continue
        position = segment.index.lookup(from_offset) if segment.base_offset < from_offset else 0
        for _, header in segment.walk_headers(position):
            if header.base_offset >= to_offset:
                break
            if header.base_offset < from_offset or header.producer_id < 0:
                continue
            state.append_batch(header.producer_id, header.producer_epoch, header.base_sequence,
                               header.last_sequence, header.base_offset, header.last_offset, state.clock_ms)
            applied += 1
    return applied
