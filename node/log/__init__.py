"""The broker's storage engine: segmented partition logs with indexes, retention and recovery.

Sans-IO: files go through ``brokerlab.disk.Disk``, time comes in as ``now_ms``.
"""

from node.log.config import LogConfig
from node.log.epoch_cache import EpochEntry, LeaderEpochCache
from node.log.errors import (
    CorruptBatchError,
    FencedLeaderEpochError,
    InvalidOffsetError,
    LogError,
    OffsetOutOfRangeError,
    RecordTooLargeError,
    error_code_for,
)
from node.log.manager import LogManager
from node.log.partition_log import AppendInfo, PartitionLog

__all__ = [
    "AppendInfo",
    "CorruptBatchError",
    "EpochEntry",
    "FencedLeaderEpochError",
    "InvalidOffsetError",
    "LeaderEpochCache",
    "LogConfig",
    "LogError",
    "LogManager",
    "OffsetOutOfRangeError",
    "PartitionLog",
    "RecordTooLargeError",
    "error_code_for",
]
