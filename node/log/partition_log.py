"""The log of one partition: a directory of segments, appended to at the end (Kafka's UnifiedLog).

Batches stay opaque bytes: an append validates them (``validate_batches``), copies the payload
into one bytearray, stamps base offsets and the leader epoch in place (outside the CRC) and
writes it with a single append to the active segment. Reads return whole batches sliced from
one read of the segment file. Time comes in as ``now_ms``; files go through the ``Disk`` port.

Jobs kept apart: truncation (truncation.py), retention (retention.py), the follower's batch
check (replicated_batches.py), recovery at open (recovery.py, loader.py) and idempotent
producers' state (producer_state.py, producer_snapshot.py).
"""

from __future__ import annotations

import bisect
from typing import Callable, NamedTuple

from brokerlab.disk import Disk
from brokerlab.ids import TopicPartition
from brokerlab.record_batch import (
    BatchHeader,
    CorruptBatchError,
    set_base_offset,
    set_partition_leader_epoch,
    validate_batches,
)
from brokerlab.sansio import TraceEvent
from node.log import checkpoints
from node.log.config import LogConfig
from node.log.epoch_cache import LeaderEpochCache
from node.log.errors import (
    FencedLeaderEpochError,
    InvalidOffsetError,
    OffsetOutOfRangeError,
    RecordTooLargeError,
)
from node.log.flush_job import RollFlush, SegmentFlushJob
from node.log.loader import read_partition_files, recovered_event, restore_epoch_cache
from node.log.producer_snapshot import load_producer_state, write_snapshot
from node.log.producer_state import ProducerStateManager, is_idempotent
from node.log.recovery import load_segments
from node.log.replicated_batches import check_replicated_batches
from node.log.retention import LogRetention
from node.log.segment import BatchEntry, LogSegment
from node.log.truncation import LogTruncation

__all__ = [
    "AppendInfo",
    "CorruptBatchError",
    "FencedLeaderEpochError",
    "InvalidOffsetError",
    "OffsetOutOfRangeError",
    "PartitionLog",
    "RecordTooLargeError",
]

# Relative offsets in the index must fit (Kafka rolls before they pass Int.MaxValue).
MAX_RELATIVE_OFFSET = (1 << 31) - 1


class AppendInfo(NamedTuple):
    base_offset: int
    last_offset: int
    record_count: int
    log_append_time_ms: int
    max_timestamp_ms: int


class PartitionLog(LogTruncation, LogRetention, RollFlush):
    """Open one with ``PartitionLog.open`` (existing directory) or ``PartitionLog.create``."""

    def __init__(
        self,
        disk: Disk,
        directory: str,
        topic_partition: TopicPartition,
        config: LogConfig,
        segments: list[LogSegment],
        now_ms: int,
        *,
        topic_id: str | None = None,
        overrides: dict[str, str] | None = None,
    ) -> None:
        self.disk = disk
        self.directory = directory
        self.topic_partition = topic_partition
        self.config = config
        self.topic_id = topic_id
        self.overrides = dict(overrides or {})
        self._segments = segments
        self._bases = [segment.base_offset for segment in segments]
        self._size_bytes = sum(segment.size for segment in segments)
        self._log_start_offset = segments[0].base_offset
        self._high_watermark = self._log_start_offset
        # Everything below the recovery point is fsynced; a crash recovery scans from it.
        self.recovery_point = self.log_end_offset
        # Segments from this base offset on may hold unflushed bytes or index entries.
        self._first_unflushed_base = segments[-1].base_offset
        self._roll_flush_due_ms: int | None = None
        # The roll flush running off the loop (flush_job.py), at most one; and a counter that
        # truncation and segment deletion bump, so a job that ran across one claims nothing.
        self._flush_job: SegmentFlushJob | None = None
        self._generation = 0
        self._last_flush_ms = now_ms
        self._dir_unsynced = False
        self._pending_snapshots: list[str] = []  # written at rolls without fsync (flush_job.py)
        self._events: list[TraceEvent] = []
        self.leader_epoch_cache = LeaderEpochCache(log_end_offset=lambda: self.log_end_offset)
        # Idempotent producers' sequences (producer_state.py), kept in step with every append.
        self.producer_state = ProducerStateManager()
        self.closed = False
        # next_deadline_ms() is cached and recomputed after each change; the LogManager sets
        # on_deadline_change so it rescans its logs only when one of them moved.
        self.on_deadline_change: Callable[[], None] | None = None
        # Called once a truncation is durable; the LogManager rewrites its offset checkpoints
        # then, before anything is appended past the new end (see truncate_to).
        self.on_truncated: Callable[[], None] | None = None
        self._deadline = self._compute_deadline()

    # ------------------------------------------------------------------ opening

    @classmethod
    def create(
        cls,
        disk: Disk,
        directory: str,
        topic_partition: TopicPartition,
        config: LogConfig,
        now_ms: int,
        *,
        topic_id: str | None = None,
        overrides: dict[str, str] | None = None,
    ) -> "PartitionLog":
        """A new empty log starting at offset 0 in a new directory."""
        disk.makedirs(directory)
        if topic_id is not None:
            disk.write_file_atomic(f"{directory}/{checkpoints.PARTITION_METADATA}",
                                   checkpoints.format_partition_metadata(topic_id))
        if overrides:
            disk.write_file_atomic(f"{directory}/{checkpoints.PARTITION_CONFIG}",
                                   checkpoints.format_overrides(overrides))
        segment = LogSegment.create(disk, directory, 0, config.index_interval_bytes)
        log = cls(disk, directory, topic_partition, config, [segment], now_ms,
                  topic_id=topic_id, overrides=overrides)
        log._dir_unsynced = True
        log._write_epochs(log.leader_epoch_cache.entries)
        log.leader_epoch_cache.on_change = log._write_epochs
        return log

    @classmethod
    def open(
        cls,
        disk: Disk,
        directory: str,
        topic_partition: TopicPartition,
        config: LogConfig,
        now_ms: int,
        *,
        recovery_point: int = 0,
        log_start_offset: int = 0,
        high_watermark: int = 0,
        clean_shutdown: bool = False,
    ) -> "PartitionLog":
        """Open an existing directory, recovering it if ``clean_shutdown`` is False.

        What recovery did is in ``drain_events()`` (a ``LogRecovered`` event).
        """
        config, overrides, topic_id = read_partition_files(disk, directory, config)
        load = load_segments(disk, directory, config.index_interval_bytes, recovery_point, clean_shutdown, now_ms)
        segments = load.segments
        if not segments:
            # Nothing survived (a crash before the first flush): start where the log stood.
            base = max(log_start_offset, recovery_point)
            segments.append(LogSegment.create(disk, directory, base, config.index_interval_bytes))
        log = cls(disk, directory, topic_partition, config, segments, now_ms,
                  topic_id=topic_id, overrides=overrides)
        log._log_start_offset = min(max(log_start_offset, segments[0].base_offset), log.log_end_offset)
        log._high_watermark = min(max(high_watermark, log._log_start_offset), log.log_end_offset)
        entries, rewrite = restore_epoch_cache(disk, directory, load, segments,
                                               log._log_start_offset, log.log_end_offset)
        log.leader_epoch_cache = LeaderEpochCache(entries, log_end_offset=lambda: log.log_end_offset,
                                                  on_change=log._write_epochs)
        if rewrite:
            log._write_epochs(entries)
        if load.recovered:
            log._events.append(recovered_event(topic_partition, load, recovery_point, log.log_end_offset))
        log._load_producer_state("open", now_ms)
        return log

    def _load_producer_state(self, reason: str, now_ms: int) -> None:
        """Newest snapshot at or below the log end + the batch headers after it."""
        loaded = load_producer_state(self.disk, self.directory, self._segments, self.log_end_offset, now_ms)
        self.producer_state = loaded.state
        # Kept for tests and debugging (which snapshot, how many batches replayed, why).
        self.producer_state_loaded = (reason, loaded)

    def _take_producer_snapshot(self, now_ms: int | None, sync: bool) -> None:
        """Snapshot the producer state at the log end: at a roll unsynced (the roll flush fsyncs
        it, off the loop), at a clean shutdown durably."""
        if now_ms is not None:
            self.producer_state.remove_expired(now_ms)
        path = write_snapshot(self.disk, self.directory, self.log_end_offset, self.producer_state,
                              keep_from=self._segments[0].base_offset, sync=sync)
        if not sync:
            self._snapshot_unsynced(path)

    def _write_epochs(self, entries) -> None:
        self.disk.write_file_atomic(f"{self.directory}/{checkpoints.LEADER_EPOCH_CHECKPOINT}",
                                    checkpoints.format_epochs(entries))

    def update_config(self, config: LogConfig, overrides: dict[str, str] | None = None) -> None:
        """New topic configuration (persisted, so a restart applies it before metadata arrives)."""
        self.config = config
        for segment in self._segments:
            segment.index_interval_bytes = config.index_interval_bytes
        self._refresh_deadline()
        if overrides is not None and overrides != self.overrides:
            self.overrides = dict(overrides)
            self.disk.write_file_atomic(f"{self.directory}/{checkpoints.PARTITION_CONFIG}",
                                        checkpoints.format_overrides(overrides))

    def set_topic_id(self, topic_id: str) -> None:
        self.topic_id = topic_id
        self.disk.write_file_atomic(f"{self.directory}/{checkpoints.PARTITION_METADATA}",
                                    checkpoints.format_partition_metadata(topic_id))

    # ------------------------------------------------------------------ state

    @property
    def log_end_offset(self) -> int:
        return self._segments[-1].next_offset

    @property
    def log_start_offset(self) -> int:
        return self._log_start_offset

    @property
    def high_watermark(self) -> int:
        return self._high_watermark

    @high_watermark.setter
    def high_watermark(self, offset: int) -> None:
        self._high_watermark = min(max(offset, self._log_start_offset), self.log_end_offset)

    @property
    def size_bytes(self) -> int:
        return self._size_bytes

    @property
    def segment_count(self) -> int:
        return len(self._segments)

    @property
    def segments(self) -> list[LogSegment]:
        return list(self._segments)

    @property
    def active_segment(self) -> LogSegment:
        return self._segments[-1]

    def drain_events(self) -> list[TraceEvent]:
        """Trace events since the last call (segment rolls and deletions, truncation, recovery)."""
        events, self._events = self._events, []
        return events

    def _event(self, name: str, **fields) -> None:
        self._events.append(TraceEvent(name, {
            "topic": self.topic_partition.topic, "partition": self.topic_partition.partition, **fields
        }))

    # ------------------------------------------------------------------ append

    def append_as_leader(self, records: bytes, leader_epoch: int, now_ms: int) -> AppendInfo:
        """Validate, assign offsets from the log end, stamp ``leader_epoch`` and append.

        Raises CorruptBatchError, RecordTooLargeError or FencedLeaderEpochError with nothing
        appended.
        """
        headers = validate_batches(records)
        self._check_sizes(headers)
        if leader_epoch < self.leader_epoch_cache.latest_epoch:
            raise FencedLeaderEpochError(
                f"leader epoch {leader_epoch} is older than the log's {self.leader_epoch_cache.latest_epoch}"
            )
        idempotent = is_idempotent(headers)
        if idempotent:
            # Sequence checks (raise OUT_OF_ORDER_SEQUENCE_NUMBER etc.); a retry of batches
            # already written is answered with their offsets and appends nothing.
            duplicate = self.producer_state.check_leader_append(headers)
            if duplicate is not None:
                first, last = duplicate
                self._event("DuplicateProduceAnswered", producer_id=headers[0].producer_id,
                            base_sequence=headers[0].base_sequence, base_offset=first, last_offset=last)
                return AppendInfo(first, last, last - first + 1, -1, -1)
        data = bytearray(records)
        base_offset = offset = self.log_end_offset
        entries: list[BatchEntry] = []
        position = 0
        max_timestamp = -1
        for header in headers:
            set_base_offset(data, position, offset)
            set_partition_leader_epoch(data, position, leader_epoch)
            last_offset = offset + header.last_offset_delta
            entries.append((position, offset, last_offset, header.max_timestamp, header.size_bytes))
            if header.max_timestamp > max_timestamp:
                max_timestamp = header.max_timestamp
            offset = last_offset + 1
            position += header.size_bytes
        if leader_epoch >= 0:
            self.leader_epoch_cache.assign(leader_epoch, base_offset)
        self._append(data, entries, now_ms)
        if idempotent:
            self.producer_state.append_headers(headers, [entry[1] for entry in entries], now_ms)
        return AppendInfo(base_offset, offset - 1, offset - base_offset, now_ms, max_timestamp)

    def append_as_follower(self, records: bytes, now_ms: int) -> AppendInfo:
        """Append batches that already carry their offsets and epochs (replication).

        The first batch must start at the log end and each next one where the previous ended,
        else InvalidOffsetError; CorruptBatchError for a bad batch (header or CRC32C: the leader
        checked the records themselves, ``check_replicated_batches``). Nothing appended on error.
        """
        headers = check_replicated_batches(records)
        expected = self.log_end_offset
        entries: list[BatchEntry] = []
        position = 0
        max_timestamp = -1
        for header in headers:
            if header.base_offset != expected:
                raise InvalidOffsetError(
                    f"batch at position {position} starts at offset {header.base_offset}, "
                    f"expected {expected} (the log end offset is {self.log_end_offset})"
                )
            entries.append((position, header.base_offset, header.last_offset, header.max_timestamp, header.size_bytes))
            if header.max_timestamp > max_timestamp:
                max_timestamp = header.max_timestamp
            expected = header.next_offset
            position += header.size_bytes
        # No max.message.bytes check: the leader accepted these; refusing would stall replication.
        base_offset = headers[0].base_offset
        for header in headers:
            epoch = header.partition_leader_epoch
            if epoch > self.leader_epoch_cache.latest_epoch:
                self.leader_epoch_cache.assign(epoch, header.base_offset)
        self._append(bytes(records), entries, now_ms)
        if is_idempotent(headers):
            self.producer_state.append_headers(headers, None, now_ms)
        return AppendInfo(base_offset, expected - 1, expected - base_offset, now_ms, max_timestamp)

    def _check_sizes(self, headers: list[BatchHeader]) -> None:
        for header in headers:
            if header.size_bytes > self.config.max_message_bytes:
                raise RecordTooLargeError(header.size_bytes, self.config.max_message_bytes)
            if header.size_bytes > self.config.segment_bytes:
                raise RecordTooLargeError(header.size_bytes, self.config.segment_bytes, "segment.bytes")

    def _append(self, data: bytes | bytearray, entries: list[BatchEntry], now_ms: int) -> None:
        segment = self._segments[-1]
        reason = self._roll_reason(segment, len(data), entries[-1][2], now_ms)
        if reason is not None:
            segment = self._roll(now_ms, reason)
        was_clean = not self.has_unflushed_data
        segment.append(data, entries, now_ms)
        self._size_bytes += len(data)
        if self.config.flush_policy == "batch":
            self.flush(now_ms)
        elif reason is not None or segment.size == len(data) or was_clean:
            self._refresh_deadline()  # only these appends can move the deadline

    def _roll_reason(self, segment: LogSegment, size: int, last_offset: int, now_ms: int) -> str | None:
        if segment.is_empty:
            return None
        if segment.size + size > self.config.segment_bytes:
            return "segment_bytes"
        if segment.rolling_base_ms is not None and now_ms - segment.rolling_base_ms >= self.config.segment_ms:
            return "segment_ms"
        if last_offset - segment.base_offset > MAX_RELATIVE_OFFSET:
            return "offset_overflow"
        return None

    def _roll(self, now_ms: int, reason: str) -> LogSegment:
        old = self._segments[-1]
        old.on_inactive()
        new = LogSegment.create(self.disk, self.directory, old.next_offset, self.config.index_interval_bytes)
        self._segments.append(new)
        self._bases.append(new.base_offset)
        self._dir_unsynced = True
        # Kafka flushes a rolled segment soon after the roll, off the append path: tick hands
        # a SegmentFlushJob to the driver (one at a time; a roll meanwhile waits for it).
        self._first_unflushed_base = min(self._first_unflushed_base, old.base_offset)
        if self._roll_flush_due_ms is None:
            self._roll_flush_due_ms = now_ms
        self._event("SegmentRolled", base_offset=new.base_offset, previous_base_offset=old.base_offset,
                    previous_size_bytes=old.size, reason=reason)
        # At the new segment's base (a restart replays from here); unsynced, the roll flush fsyncs it.
        self._take_producer_snapshot(now_ms, sync=False)
        return new

    def roll(self, now_ms: int) -> LogSegment:
        """Start a new segment now (if the active one holds anything)."""
        if self._segments[-1].is_empty:
            return self._segments[-1]
        segment = self._roll(now_ms, "requested")
        self._refresh_deadline()
        return segment

    # ------------------------------------------------------------------ flush

    def flush(self, now_ms: int | None = None, upto: int | None = None, include_active_indexes: bool = False) -> None:
        """fsync every segment below ``upto`` (default: the log end) and advance the recovery point."""
        target = self.log_end_offset if upto is None else min(upto, self.log_end_offset)
        active = self._segments[-1]
        start = bisect.bisect_right(self._bases, self._first_unflushed_base) - 1
        for segment in self._segments[max(start, 0):]:
            if segment.base_offset >= target and not (segment is active and include_active_indexes):
                break
            segment.flush(include_indexes=segment is not active or include_active_indexes)
        self._sync_snapshots_and_directory()
        if target >= active.base_offset:
            self._first_unflushed_base = active.base_offset
            self._roll_flush_due_ms = None
        self.recovery_point = max(self.recovery_point, target)
        if now_ms is not None:
            self._last_flush_ms = now_ms
        self._refresh_deadline()

    @property
    def has_unflushed_data(self) -> bool:
        return self.recovery_point < self.log_end_offset

    def tick(self, now_ms: int, jobs: list[SegmentFlushJob] | None = None) -> None:
        """Roll by age, flush rolled segments, and flush on the interval policy.

        The roll flush goes to ``jobs`` for the driver to run off the loop; without ``jobs``
        it runs here, synchronously."""
        active = self._segments[-1]
        if (
            not active.is_empty
            and active.rolling_base_ms is not None
            and now_ms - active.rolling_base_ms >= self.config.segment_ms
        ):
            self._roll(now_ms, "segment_ms")
            active = self._segments[-1]
        if self.config.flush_policy == "interval" and now_ms >= self._last_flush_ms + self.config.flush_interval_ms:
            if self.has_unflushed_data or self._first_unflushed_base < active.base_offset:
                self.flush(now_ms)
            else:
                self._last_flush_ms = now_ms
        if self._flush_job is None and self._roll_flush_wanted():
            job = self.start_roll_flush(active.base_offset)
            if jobs is None:  # no driver to run it off the loop: flush here, as Kafka's tests do
                job.run()
                self.on_flush_done(job, now_ms)
            else:
                jobs.append(job)
        self._refresh_deadline()

    def next_deadline_ms(self) -> int | None:
        """When ``tick`` has work for this log (roll by age, a flush), or None."""
        return self._deadline

    def _refresh_deadline(self) -> None:
        deadline = self._compute_deadline()
        if deadline != self._deadline:
            self._deadline = deadline
            if self.on_deadline_change is not None:
                self.on_deadline_change()

    def _compute_deadline(self) -> int | None:
        deadlines = []
        active = self._segments[-1]
        if not active.is_empty and active.rolling_base_ms is not None:
            deadlines.append(active.rolling_base_ms + self.config.segment_ms)
        if self._roll_flush_due_ms is not None and self._flush_job is None:
            deadlines.append(self._roll_flush_due_ms)
        if self.config.flush_policy == "interval" and self.has_unflushed_data:
            deadlines.append(self._last_flush_ms + self.config.flush_interval_ms)
        return min(deadlines) if deadlines else None

    # ------------------------------------------------------------------ read

    def read(self, fetch_offset: int, max_bytes: int, max_offset: int | None = None) -> bytes:
        """Whole batches from the one holding ``fetch_offset``: at least one (even if larger
        than ``max_bytes``, Kafka's rule), none reaching ``max_offset``; b"" at the end."""
        log_end_offset = self.log_end_offset
        if fetch_offset < self._log_start_offset or fetch_offset > log_end_offset:
            raise OffsetOutOfRangeError(fetch_offset, self._log_start_offset, log_end_offset, self.topic_partition)
        limit = log_end_offset if max_offset is None else min(max_offset, log_end_offset)
        if fetch_offset >= limit:
            return b""
        parts: list[bytes] = []
        remaining = max_bytes
        index = bisect.bisect_right(self._bases, fetch_offset) - 1
        segments = self._segments
        while index < len(segments):
            segment = segments[index]
            if fetch_offset < segment.next_offset:
                data, fetch_offset = segment.read(fetch_offset, remaining, limit, not parts)
                if not data:
                    break
                parts.append(data)
                remaining -= len(data)
                if fetch_offset < segment.next_offset or fetch_offset >= limit or remaining <= 0:
                    break
            index += 1
        if len(parts) == 1:
            return parts[0]
        return b"".join(parts)

    def offset_for_timestamp(self, timestamp_ms: int, max_offset: int | None = None) -> tuple[int, int] | None:
        """``(offset, timestamp)`` of the first record with timestamp >= ``timestamp_ms``, or None
        (also None when that record is at or past ``max_offset``)."""
        for segment in self._segments:
            if segment.next_offset <= self._log_start_offset or segment.max_timestamp_ms < timestamp_ms:
                continue
            found = segment.find_offset_by_timestamp(timestamp_ms, max(self._log_start_offset, segment.base_offset))
            if found is not None:
                if max_offset is not None and found[0] >= max_offset:
                    return None
                return found
        return None

    # ------------------------------------------------------------------ shutdown

    def close(self) -> None:
        """Flush everything (indexes included) and close the files."""
        if self.closed:
            return
        self._drop_flush_job()  # its result is dropped: flush all of it here
        self._segments[-1].on_inactive()
        self.flush(include_active_indexes=True)
        self._take_producer_snapshot(None, sync=True)  # at the log end: a clean restart replays nothing
        for segment in self._segments:
            segment.close()
        self.closed = True

    def delete_files(self) -> None:
        """Close and remove the whole partition directory."""
        self._drop_flush_job()
        for segment in self._segments:
            segment.log.close()
            segment.index.close()
            segment.time_index.close()
        self.disk.rmtree(self.directory)
        self.closed = True
