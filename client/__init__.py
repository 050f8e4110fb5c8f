"""brokerlab client package."""

from client.admin import (
    Admin,
    ClusterDescription,
    ElectionResult,
    NewTopic,
    Node,
    PartitionDescription,
    TopicDescription,
)
from client.consumer import Consumer, ConsumerRecord, RecordDeserializationError
from client.consumer.group import CommitFailedError, FatalGroupError, RebalanceInProgressError
from client.group_admin import GroupDescription, GroupListing, MemberDescription
from client.producer import BufferExhaustedError, Producer, RecordHandle, RecordMetadata

__all__ = [
    "Admin",
    "BufferExhaustedError",
    "ClusterDescription",
    "CommitFailedError",
    "Consumer",
    "ConsumerRecord",
    "ElectionResult",
    "FatalGroupError",
    "GroupDescription",
    "GroupListing",
    "MemberDescription",
    "NewTopic",
    "Node",
    "PartitionDescription",
    "Producer",
    "RebalanceInProgressError",
    "RecordDeserializationError",
    "RecordHandle",
    "RecordMetadata",
    "TopicDescription",
]
