"""brokerlab client package."""

from client.admin import Admin, ClusterDescription, NewTopic, Node, PartitionDescription, TopicDescription
from client.consumer import Consumer, ConsumerRecord, RecordDeserializationError
from client.producer import BufferExhaustedError, Producer, RecordHandle, RecordMetadata

__all__ = [
    "Admin",
    "BufferExhaustedError",
    "ClusterDescription",
    "Consumer",
    "ConsumerRecord",
    "NewTopic",
    "Node",
    "PartitionDescription",
    "Producer",
    "RecordDeserializationError",
    "RecordHandle",
    "RecordMetadata",
    "TopicDescription",
]
