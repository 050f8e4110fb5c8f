"""brokerlab client package."""

from client.admin import Admin, ClusterDescription, NewTopic, Node, PartitionDescription, TopicDescription
from client.consumer import Consumer, ConsumerRecord, RecordDeserializationError

__all__ = [
    "Admin",
    "ClusterDescription",
    "Consumer",
    "ConsumerRecord",
    "NewTopic",
    "Node",
    "PartitionDescription",
    "RecordDeserializationError",
    "TopicDescription",
]
