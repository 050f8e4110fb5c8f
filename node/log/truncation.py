"""Truncating a partition log at its end (a follower by leader epoch, KIP-101) or wholly.

``LogTruncation`` is mixed into ``PartitionLog`` (partition_log.py) and works on its segment
list, offsets, leader epoch cache and producer state; it holds no state of its own.
"""

from __future__ import annotations

import bisect

from node.log.errors import InvalidOffsetError
from node.log.producer_snapshot import delete_all_snapshots
from node.log.producer_state import ProducerStateManager
from node.log.segment import LogSegment


class LogTruncation:
    """``truncate_to`` and ``truncate_fully_and_start_at`` of ``PartitionLog``."""

    def truncate_to(self, offset: int) -> int:
        """Remove every batch at or after ``offset`` (a batch holding it goes whole); returns the
        number of records removed. Issue 3's followers use it (by leader epoch, KIP-101)."""
        if offset < 0:
            raise InvalidOffsetError(f"cannot truncate to negative offset {offset}")
        old_end = self.log_end_offset
        if offset >= old_end:
            return 0
        if offset < self._log_start_offset or offset <= self._segments[0].base_offset:
            self.truncate_fully_and_start_at(offset if offset < self._log_start_offset else self._segments[0].base_offset)
            return old_end - self.log_end_offset
        keep = bisect.bisect_right(self._bases, offset) - 1
        removed_bytes = 0
        for segment in self._segments[keep + 1:]:
            removed_bytes += segment.size
            segment.delete()
        deleted = len(self._segments) - keep - 1
        del self._segments[keep + 1:]
        del self._bases[keep + 1:]
        segment = self._segments[keep]
        removed_bytes += segment.truncate_to(offset)
        self._size_bytes -= removed_bytes
        self._after_truncation(segment)
        # Snapshots past the new end go; the newest one left and the log after it rebuild the state.
        self._load_producer_state("truncation", self.producer_state.clock_ms)
        # Truncation is rare: make the whole shorter log durable, so a power loss can neither
        # resurrect removed batches nor leave a gap below the new end.
        self.flush()
        self._event("LogTruncated", offset=self.log_end_offset, records_removed=old_end - self.log_end_offset,
                    bytes_removed=removed_bytes, deleted_segments=deleted)
        self._refresh_deadline()
        self._truncated()
        return old_end - self.log_end_offset

    def truncate_fully_and_start_at(self, offset: int) -> None:
        """Drop every segment and restart the log empty at ``offset`` (a follower far behind)."""
        old_end = self.log_end_offset
        removed_bytes = self._size_bytes
        for segment in self._segments:
            segment.delete()
        segment = LogSegment.create(self.disk, self.directory, offset, self.config.index_interval_bytes)
        self._segments = [segment]
        self._bases = [offset]
        self._size_bytes = 0
        self._log_start_offset = offset
        self.recovery_point = offset
        self._first_unflushed_base = offset
        self._roll_flush_due_ms = None
        self._after_truncation(segment)
        self.leader_epoch_cache.clear()
        delete_all_snapshots(self.disk, self.directory)
        self.producer_state = ProducerStateManager(self.producer_state.clock_ms)
        # The empty segment's name records where the log restarts: make it survive a power loss.
        segment.log.fsync()
        self.disk.fsync_dir(self.directory)
        self._refresh_deadline()
        self._event("LogTruncated", offset=offset, records_removed=max(old_end - offset, 0),
                    bytes_removed=removed_bytes, deleted_segments=None)
        self._truncated()

    def _truncated(self) -> None:
        """The recovery point went down (and the log start may have): the checkpoint on disk
        must follow at once, as Kafka's LogManager.truncateTo checkpoints the recovery offsets.
        A stale, higher recovery point would make the next unclean start trust (and not scan)
        segments that the appends after this truncation wrote and never fsynced; the start then
        claims them durable, and a power loss loses records below the recovery point."""
        if self.on_truncated is not None:
            self.on_truncated()

    def _after_truncation(self, segment: LogSegment) -> None:
        end = self.log_end_offset
        self._segments_changed()
        self._first_unflushed_base = min(self._first_unflushed_base, segment.base_offset)
        self.recovery_point = min(self.recovery_point, end)
        self._high_watermark = min(max(self._high_watermark, self._log_start_offset), end)
        self.leader_epoch_cache.truncate_from_end(end)

