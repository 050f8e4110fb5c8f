"""Which old segments retention may delete (Kafka's UnifiedLog.deletableSegments).

Each rule deletes a prefix of the segments: it walks from the oldest and stops at the first
segment the rule keeps. A segment goes only if it is not the active one and the next segment
starts at or below the high watermark (nothing uncommitted is ever deleted).
"""

from __future__ import annotations

from typing import Sequence

from node.log.config import LogConfig
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
