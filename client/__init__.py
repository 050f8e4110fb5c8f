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
from client.producer import BufferExhaustedError, Producer, RecordHandle, RecordMetadata

__all__ = [
    "Admin",
    "BufferExhaustedError",
    "ClusterDescription",
    "Consumer",
    "ConsumerRecord",
    "ElectionResult",
    "NewTopic",
    "Node",
    "PartitionDescription",
    "Producer",
    "RecordDeserializationError",
    "RecordHandle",
    "RecordMetadata",
    "TopicDescription",
]
