"""Kafka's RangeAssignor and RoundRobinAssignor (eager only)."""

from __future__ import annotations

from typing import Iterable, Mapping

from brokerlab.ids import TopicPartition
from client.consumer.assignors.base import (
    Assignment,
    RebalanceProtocol,
    Subscription,
    all_partitions,
    member_order,
)


class RangeAssignor:
    """Per topic: the subscribed members in order each take a contiguous range; the first
    ``partitions % members`` take one more. Co-partitioned topics line up member by member."""

    name = "range"
    supported_protocols = (RebalanceProtocol.EAGER,)

    def user_data(self, assigned: Iterable[TopicPartition], generation_id: int) -> bytes:
        return b""

    def assign(self, partitions_per_topic: Mapping[str, int], subscriptions: Mapping[str, Subscription]) -> Assignment:
        order = member_order(subscriptions)
        out: Assignment = {m: [] for m in order}
        topics = sorted({t for s in subscriptions.values() for t in s.topics})
        for topic in topics:
            count = partitions_per_topic.get(topic, 0)
            members = [m for m in order if topic in subscriptions[m].topics]
            if not members or count <= 0:
                continue
            per_member, extra = divmod(count, len(members))
            for i, member in enumerate(members):
                start = per_member * i + min(i, extra)
                length = per_member + (1 if i < extra else 0)
                out[member].extend(TopicPartition(topic, p) for p in range(start, start + length))
        return out


class RoundRobinAssignor:
    """Every partition of every subscribed topic (sorted), dealt to the members in turn, skipping
    members not subscribed to the partition's topic."""

    name = "roundrobin"
    supported_protocols = (RebalanceProtocol.EAGER,)

    def user_data(self, assigned: Iterable[TopicPartition], generation_id: int) -> bytes:
        return b""

    def assign(self, partitions_per_topic: Mapping[str, int], subscriptions: Mapping[str, Subscription]) -> Assignment:
        order = member_order(subscriptions)
        out: Assignment = {m: [] for m in order}
        if not order:
            return out
        partitions = all_partitions(partitions_per_topic, (t for s in subscriptions.values() for t in s.topics))
        cursor = 0
        for tp in partitions:
            for step in range(len(order)):
                member = order[(cursor + step) % len(order)]
                if tp.topic in subscriptions[member].topics:
                    out[member].append(tp)
                    cursor = (cursor + step + 1) % len(order)
                    break
        return out
