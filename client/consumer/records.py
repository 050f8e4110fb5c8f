"""What poll() returns: ConsumerRecord, built from decoded batch columns in C-level passes.

A consumer hands out a million records a second, so a record is a NamedTuple built by mapping
``tuple.__new__`` over ``zip`` (no Python-level call per record) and deserializers are mapped
over a whole column at once.
"""

from __future__ import annotations

from itertools import repeat
from typing import Any, Callable, NamedTuple

from brokerlab.ids import TopicPartition
from brokerlab.record_batch import Header, RecordColumns

Deserializer = Callable[["bytes | None"], Any]


class ConsumerRecord(NamedTuple):
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: Any
    value: Any
    headers: tuple[Header, ...]


_tuple_new = tuple.__new__


class RecordDeserializationError(ValueError):
    """A key or value the deserializer rejected; the position stays at ``offset`` (as Kafka's
    RecordDeserializationException): seek past it to go on."""

    def __init__(self, tp: TopicPartition, offset: int, field: str, cause: BaseException) -> None:
        super().__init__(f"cannot deserialize the {field} of {tp} at offset {offset}: {cause}")
        self.topic_partition = tp
        self.offset = offset
        self.field = field
        self.__cause__ = cause


def build_records(
    tp: TopicPartition,
    columns: RecordColumns,
    start: int,
    stop: int,
    key_deserializer: Deserializer | None = None,
    value_deserializer: Deserializer | None = None,
) -> tuple[list[ConsumerRecord], RecordDeserializationError | None]:
    """Records ``start:stop`` of ``columns``.

    Returns the records and, when a deserializer failed, the error for the first bad record
    (the records before it are still returned).
    """
    whole = start == 0 and stop == columns.record_count
    offsets = columns.offsets[start:stop]
    timestamps = columns.timestamps if whole else columns.timestamps[start:stop]
    keys = columns.keys if whole else columns.keys[start:stop]
    values = columns.values if whole else columns.values[start:stop]
    headers = columns.headers if whole else columns.headers[start:stop]
    try:
        if key_deserializer is not None:
            keys = list(map(key_deserializer, keys))
        if value_deserializer is not None:
            values = list(map(value_deserializer, values))
    except Exception:  # find the first bad record the slow way; it is rare
        return _build_until_bad(tp, columns, start, stop, key_deserializer, value_deserializer)
    rows = zip(repeat(tp.topic), repeat(tp.partition), offsets, timestamps, keys, values, headers)
    records = list(map(_tuple_new, repeat(ConsumerRecord), rows))
    return records, None


def _build_until_bad(tp, columns, start, stop, key_deserializer, value_deserializer):
    records = []
    for i in range(start, stop):
        key, value = columns.keys[i], columns.values[i]
        offset = columns.offsets[i]
        try:
            if key_deserializer is not None:
                key = key_deserializer(key)
        except Exception as exc:
            return records, RecordDeserializationError(tp, offset, "key", exc)
        try:
            if value_deserializer is not None:
                value = value_deserializer(value)
        except Exception as exc:
            return records, RecordDeserializationError(tp, offset, "value", exc)
        records.append(
            ConsumerRecord(tp.topic, tp.partition, offset, columns.timestamps[i], key, value, columns.headers[i])
        )
    return records, None  # the deserializer failed only once; the retry went through
