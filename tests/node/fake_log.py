"""A small in-memory stand-in for node/log's LogManager/PartitionLog (the contract's surface only).

Used by the broker core tests while the real storage engine is not importable; the harness
prefers the real LogManager over MemoryDisk whenever it exists.
"""

from __future__ import annotations

from typing import NamedTuple

from brokerlab.ids import TopicPartition
from brokerlab.record_batch import iter_headers, set_base_offset, set_partition_leader_epoch, validate_batches
from node.log.config import LogConfig
from node.log.errors import OffsetOutOfRangeError, RecordTooLargeError


class AppendInfo(NamedTuple):
    base_offset: int
    last_offset: int
    record_count: int
    log_append_time_ms: int
    max_timestamp_ms: int


class FakePartitionLog:
    def __init__(self, tp: TopicPartition, config: LogConfig) -> None:
        self.topic_partition = tp
        self.config = config
        self.batches: list[tuple[int, int, bytes, int]] = []  # (base, next, bytes, max_timestamp)
        self.log_start_offset = 0
        self.log_end_offset = 0
        self._high_watermark = 0

    @property
    def high_watermark(self) -> int:
        return self._high_watermark

    @high_watermark.setter
    def high_watermark(self, value: int) -> None:
        self._high_watermark = max(self.log_start_offset, min(value, self.log_end_offset))

    @property
    def size_bytes(self) -> int:
        return sum(len(b) for _, _, b, _ in self.batches)

    segment_count = 1

    def append_as_leader(self, records: bytes, leader_epoch: int, now_ms: int) -> AppendInfo:
        headers = validate_batches(records)
        for header in headers:
            if header.size_bytes > self.config.max_message_bytes:
                raise RecordTooLargeError(header.size_bytes, self.config.max_message_bytes)
        base = self.log_end_offset
        position = 0
        for header in headers:
            data = bytearray(records[position:position + header.size_bytes])
            set_base_offset(data, 0, self.log_end_offset)
            set_partition_leader_epoch(data, 0, leader_epoch)
            self.batches.append((self.log_end_offset, self.log_end_offset + header.record_count, bytes(data), header.max_timestamp))
            self.log_end_offset += header.record_count
            position += header.size_bytes
        return AppendInfo(base, self.log_end_offset - 1, self.log_end_offset - base, -1, max(h.max_timestamp for h in headers))

    def read(self, fetch_offset: int, max_bytes: int, max_offset: int | None = None) -> bytes:
        if not self.log_start_offset <= fetch_offset <= self.log_end_offset:
            raise OffsetOutOfRangeError(fetch_offset, self.log_start_offset, self.log_end_offset)
        out = b""
        for base, nxt, data, _ in self.batches:
            if nxt <= fetch_offset:
                continue
            if max_offset is not None and base >= max_offset:
                break
            if out and len(out) + len(data) > max_bytes:
                break
            out += data
        return out

    def offset_for_timestamp(self, timestamp_ms: int):
        for _, _, data, max_ts in self.batches:
            if max_ts >= timestamp_ms:
                from brokerlab.record_batch import decode_records

                for record in decode_records(data):
                    if record.timestamp_ms >= timestamp_ms:
                        return record.offset, record.timestamp_ms
        return None


class FakeLogManager:
    def __init__(self, disk, config: LogConfig, now_ms: int) -> None:
        self.config = config
        self.logs: dict[TopicPartition, FakePartitionLog] = {}
        self.recovery_events: list = []

    def get(self, tp):
        return self.logs.get(tp)

    def get_or_create(self, tp, now_ms, topic_configs=None):
        if tp not in self.logs:
            self.logs[tp] = FakePartitionLog(tp, self.config.with_topic_overrides(topic_configs or {}))
        return self.logs[tp]

    def delete(self, tp) -> None:
        self.logs.pop(tp, None)

    def partitions(self):
        return list(self.logs)

    def tick(self, now_ms):
        return []

    def next_deadline_ms(self):
        return None

    def close(self) -> None:
        pass


__all__ = ["FakeLogManager", "FakePartitionLog", "iter_headers"]
