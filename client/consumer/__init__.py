"""The consumer without groups: a sans-IO fetch core (fetcher) and its asyncio facade."""

from client.consumer.consumer import Consumer
from client.consumer.fetcher import FetchConfig, FetchCore, FetchState
from client.consumer.records import ConsumerRecord, RecordDeserializationError

__all__ = ["Consumer", "ConsumerRecord", "FetchConfig", "FetchCore", "FetchState", "RecordDeserializationError"]
