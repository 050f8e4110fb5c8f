"""Sets of TopicPartitions grouped by topic, as the group protocol carries them
(``GroupTopicPartitions``: consumer subscriptions and assignments, rebalance diffs; offset
fetches by topic). Shared by the broker's group coordinator and the client."""

from __future__ import annotations

from typing import Iterable

from brokerlab.ids import TopicPartition
from brokerlab.v1 import group_pb2


def partitions_by_topic(tps: Iterable[TopicPartition]) -> dict[str, list[int]]:
    """``{topic: [partition, ...]}``, topics and partitions in order."""
    by_topic: dict[str, list[int]] = {}
    for tp in sorted(tps):
        by_topic.setdefault(tp.topic, []).append(tp.partition)
    return by_topic


def to_group_topic_partitions(tps: Iterable[TopicPartition]) -> list[group_pb2.GroupTopicPartitions]:
    return [group_pb2.GroupTopicPartitions(topic=t, partitions=ps) for t, ps in partitions_by_topic(tps).items()]


def from_group_topic_partitions(entries: Iterable[group_pb2.GroupTopicPartitions]) -> tuple[TopicPartition, ...]:
    """The TopicPartitions in ``entries``, sorted."""
    return tuple(sorted(TopicPartition(e.topic, p) for e in entries for p in e.partitions))
