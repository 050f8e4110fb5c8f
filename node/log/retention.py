"""Retention: which old segments may go (Kafka's UnifiedLog.deletableSegments) and deleting
them, or moving the log start offset up (DeleteRecords, a leader's log start).

Each rule deletes a prefix of the segments: it walks from the oldest and stops at the first
segment the rule keeps. A segment goes only if it is not the active one and the next segment
starts at or below the high watermark (nothing uncommitted is ever deleted).

``LogRetention`` is mixed into ``PartitionLog`` (partition_log.py) and works on its segment
list and offsets; it holds no state of its own.
"""

from __future__ import annotations

from typing import Sequence

from node.log.config import LogConfig
from node.log.errors import OffsetOutOfRangeError
from node.log.segment import LogSegment


def segment_time_ms(segment: LogSegment) -> int | None:
    """The time a segment ages from: its largest record timestamp (Kafka), else its first append."""
    if segment.max_timestamp_ms >= 0:
        return segment.max_timestamp_ms
    return segment.rolling_base_ms


def deletable_prefix(
    segments: Sequence[LogSegment],
    reason: str,
    config: LogConfig,
    now_ms: int,
    size_bytes: int,
    high_watermark: int,
    log_start_offset: int,
) -> int:
    """How many of the oldest segments ``reason`` deletes: ``retention_ms``, ``retention_bytes``
    or ``log_start_offset`` (segments wholly below the log start offset)."""
    if reason == "retention_ms" and config.retention_ms < 0:
        return 0
    if reason == "retention_bytes" and config.retention_bytes < 0:
        return 0
    excess = size_bytes - config.retention_bytes
    count = 0
    for segment, following in zip(segments, segments[1:]):
        if following.base_offset > high_watermark:
            break
        if reason == "retention_ms":
            aged_from = segment_time_ms(segment)
            if aged_from is None or now_ms - aged_from <= config.retention_ms:
                break
        elif reason == "retention_bytes":
            if excess - segment.size < 0:
                break
            excess -= segment.size
        elif reason == "log_start_offset":
            if following.base_offset > log_start_offset:
                break
        else:
            raise ValueError(f"unknown retention rule {reason!r}")
        count += 1
    return count


class LogRetention:
    """``maybe_increment_log_start_offset`` and ``delete_old_segments`` of ``PartitionLog``."""

    def maybe_increment_log_start_offset(self, offset: int) -> bool:
        """Move the log start up (a leader's log start seen by a follower, or DeleteRecords);
        segments wholly below it go at the next retention pass."""
        if offset > self._high_watermark:
            raise OffsetOutOfRangeError(offset, self._log_start_offset, self._high_watermark, self.topic_partition)
        if offset <= self._log_start_offset:
            return False
        self._log_start_offset = offset
        self.recovery_point = max(self.recovery_point, offset)
        self.leader_epoch_cache.truncate_from_start(offset)
        return True

    def delete_old_segments(self, now_ms: int) -> int:
        """Retention (Kafka's order: time, size, log start offset); returns segments deleted.

        Only whole segments below the high watermark go, never the active one.
        """
        deleted = 0
        for reason in ("retention_ms", "retention_bytes", "log_start_offset"):
            count = deletable_prefix(self._segments, reason, self.config, now_ms,
                                     self._size_bytes, self._high_watermark, self._log_start_offset)
            for _ in range(count):
                self._delete_first_segment(reason)
            deleted += count
        if deleted:
            self._refresh_deadline()
        return deleted

    def _delete_first_segment(self, reason: str) -> None:
        segment = self._segments.pop(0)
        self._bases.pop(0)
        self._segments_changed()
        self._size_bytes -= segment.size
        segment.delete()
        self._log_start_offset = max(self._log_start_offset, self._segments[0].base_offset)
        self.recovery_point = max(self.recovery_point, self._log_start_offset)
        self._first_unflushed_base = max(self._first_unflushed_base, self._segments[0].base_offset)
        self.leader_epoch_cache.truncate_from_start(self._log_start_offset)
        self._event("SegmentDeleted", base_offset=segment.base_offset, size_bytes=segment.size,
                    next_offset=segment.next_offset, reason=reason, log_start_offset=self._log_start_offset)

