"""The producer: partitioner, accumulator and sender cores (sans-IO) and the asyncio facade."""

from client.producer.accumulator import BufferExhaustedError
from client.producer.batch import RecordMetadata
from client.producer.producer import Producer, RecordHandle

__all__ = ["BufferExhaustedError", "Producer", "RecordHandle", "RecordMetadata"]
