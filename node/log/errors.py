"""Errors the storage engine raises, each carrying the Kafka error code a broker answers with.

``CorruptBatchError`` comes from the batch codec (``brokerlab.record_batch``) and is re-exported
here so callers import every storage error from one place.
"""

from __future__ import annotations

from brokerlab.errors import ErrorCode
from brokerlab.record_batch import CorruptBatchError

__all__ = [
    "CorruptBatchError",
    "FencedLeaderEpochError",
    "InvalidOffsetError",
    "LogError",
    "OffsetOutOfRangeError",
    "RecordTooLargeError",
    "error_code_for",
]


class LogError(Exception):
    """Base of the storage errors; ``error_code`` is what goes into the partition response."""

    error_code: ErrorCode = ErrorCode.UNKNOWN_SERVER_ERROR


class OffsetOutOfRangeError(LogError):
    """A fetch (or truncation) offset outside ``[log_start_offset, log_end_offset]``."""

    error_code = ErrorCode.OFFSET_OUT_OF_RANGE

    def __init__(self, offset: int, log_start_offset: int, log_end_offset: int, topic_partition=None) -> None:
        where = f" of {topic_partition}" if topic_partition is not None else ""
        super().__init__(
            f"offset {offset} is outside [{log_start_offset}, {log_end_offset}]{where}"
        )
        self.offset = offset
        self.log_start_offset = log_start_offset
        self.log_end_offset = log_end_offset


class RecordTooLargeError(LogError):
    """A batch bigger than ``max.message.bytes`` (or than a whole segment); nothing was appended."""

    error_code = ErrorCode.MESSAGE_TOO_LARGE

    def __init__(self, batch_bytes: int, limit_bytes: int, what: str = "max.message.bytes") -> None:
        super().__init__(f"batch of {batch_bytes} bytes is larger than {what}={limit_bytes}")
        self.batch_bytes = batch_bytes
        self.limit_bytes = limit_bytes


class InvalidOffsetError(LogError):
    """A replicated append whose offsets do not continue the log (Kafka's
    UnexpectedAppendOffsetException): the follower must truncate or refetch. Nothing appended."""

    error_code = ErrorCode.UNKNOWN_SERVER_ERROR


class FencedLeaderEpochError(LogError):
    """An append as leader with an epoch older than the latest one in the log (a stale leader)."""

    error_code = ErrorCode.FENCED_LEADER_EPOCH


def error_code_for(exc: BaseException) -> ErrorCode:
    """The per-partition error code for an exception raised by the storage engine."""
    if isinstance(exc, LogError):
        return exc.error_code
    if isinstance(exc, CorruptBatchError):
        return ErrorCode.CORRUPT_MESSAGE
    if isinstance(exc, OSError):
        return ErrorCode.KAFKA_STORAGE_ERROR
    return ErrorCode.UNKNOWN_SERVER_ERROR
