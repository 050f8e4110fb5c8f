"""What every partition assignor shares: subscriptions, the rebalance protocols, the wire codec.

An assignor is pure and deterministic: ``assign(partitions_per_topic, subscriptions)`` gives
every member its partitions, the same way on every run (Kafka's ``ConsumerPartitionAssignor``).
The group leader runs it on the members' subscriptions (ConsumerProtocolSubscription in their
JoinGroup metadata) and sends the result in its SyncGroup (ConsumerProtocolAssignment).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Iterable, Mapping, Protocol

from brokerlab.ids import TopicPartition
from brokerlab.topic_partitions import from_group_topic_partitions, to_group_topic_partitions
from brokerlab.v1 import group_pb2


class RebalanceProtocol(enum.Enum):
    """EAGER: every member gives up everything before it rejoins. COOPERATIVE (KIP-429): members
    keep their partitions through the rebalance and give up only the ones that move."""

    EAGER = "eager"
    COOPERATIVE = "cooperative"


@dataclass(frozen=True)
class Subscription:
    topics: tuple[str, ...]
    user_data: bytes = b""
    owned_partitions: tuple[TopicPartition, ...] = ()
    generation_id: int = -1
    rack_id: str = ""
    group_instance_id: str = ""  # not in the bytes: from the JoinGroup member list


Assignment = dict[str, list[TopicPartition]]


class Assignor(Protocol):
    name: str
    supported_protocols: tuple[RebalanceProtocol, ...]

    def user_data(self, assigned: Iterable[TopicPartition], generation_id: int) -> bytes: ...

    def assign(self, partitions_per_topic: Mapping[str, int], subscriptions: Mapping[str, Subscription]) -> Assignment: ...


def member_order(subscriptions: Mapping[str, Subscription]) -> list[str]:
    """Kafka's MemberInfo order: static members by instance id first, then member ids."""
    return sorted(subscriptions, key=lambda m: (0, subscriptions[m].group_instance_id, m)
                  if subscriptions[m].group_instance_id else (1, "", m))


def all_partitions(partitions_per_topic: Mapping[str, int], topics: Iterable[str]) -> list[TopicPartition]:
    return [TopicPartition(t, p) for t in sorted(set(topics)) for p in range(partitions_per_topic.get(t, 0))]


# ---------------------------------------------------------------------------- wire codec


def encode_subscription(subscription: Subscription) -> bytes:
    return group_pb2.ConsumerProtocolSubscription(
        topics=sorted(subscription.topics), user_data=subscription.user_data,
        owned_partitions=to_group_topic_partitions(subscription.owned_partitions),
        generation_id=subscription.generation_id, rack_id=subscription.rack_id,
    ).SerializeToString()


def decode_subscription(data: bytes, group_instance_id: str = "") -> Subscription:
    parsed = group_pb2.ConsumerProtocolSubscription.FromString(data)
    return Subscription(tuple(sorted(parsed.topics)), parsed.user_data,
                        from_group_topic_partitions(parsed.owned_partitions),
                        parsed.generation_id, parsed.rack_id, group_instance_id)


def encode_assignment(partitions: Iterable[TopicPartition], user_data: bytes = b"") -> bytes:
    return group_pb2.ConsumerProtocolAssignment(assigned_partitions=to_group_topic_partitions(partitions),
                                                user_data=user_data).SerializeToString()


def decode_assignment(data: bytes) -> tuple[TopicPartition, ...]:
    if not data:
        return ()
    parsed = group_pb2.ConsumerProtocolAssignment.FromString(data)
    return from_group_topic_partitions(parsed.assigned_partitions)


def encode_sticky_user_data(assigned: Iterable[TopicPartition], generation_id: int) -> bytes:
    return group_pb2.StickyAssignorUserData(previous_assignment=to_group_topic_partitions(assigned),
                                            generation_id=generation_id).SerializeToString()


def decode_sticky_user_data(data: bytes) -> tuple[tuple[TopicPartition, ...], int]:
    if not data:
        return (), -1
    parsed = group_pb2.StickyAssignorUserData.FromString(data)
    return from_group_topic_partitions(parsed.previous_assignment), parsed.generation_id
