"""``BrokerPort`` over the real BrokerCore: the few things the group coordinator asks its broker.

Kept apart from ``node/broker.py`` so the coordinator touches the broker through one narrow,
documented surface: the metadata image (who leads __consumer_offsets, who is alive), the local
partition logs (loading) and the broker's own Produce path (writes with acks=all).
"""

from __future__ import annotations

from typing import Any

from brokerlab.ids import TopicPartition
from brokerlab.sansio import Effects, Envelope
from node.group.config import OFFSETS_TOPIC


class BrokerGroupPort:
    def __init__(self, core: Any) -> None:
        # ``core`` is a node.broker.BrokerCore (typed loosely: it builds us in its __init__).
        self._core = core
        self.broker_id: int = core.broker_id
        self.node: str = core.node

    def is_ready(self) -> bool:
        return self._core.lifecycle.initial_catch_up_done

    def metadata_offset(self) -> int:
        return self._core.image.last_applied_offset

    def offsets_partition_count(self) -> int | None:
        topic = self._core.image.topic(OFFSETS_TOPIC)
        return len(topic.partitions) if topic is not None and topic.partitions else None

    def coordinator_endpoint(self, partition: int) -> tuple[int, str, int] | None:
        image = self._core.image
        info = image.partition(TopicPartition(OFFSETS_TOPIC, partition))
        if info is None or info.leader_id < 0:
            return None
        broker = image.broker(info.leader_id)
        if broker is None or broker.fenced:
            return None
        return broker.broker_id, broker.host, broker.port

    def live_broker_count(self) -> int:
        return len(self._core.image.live_brokers())

    def min_insync_replicas(self) -> int:
        return self._core.config.min_insync_replicas

    def led_offsets_partitions(self) -> dict[int, int]:
        """__consumer_offsets partitions this broker leads and has a log for -> leader epoch."""
        topic = self._core.image.topic(OFFSETS_TOPIC)
        if topic is None or not self.is_ready():
            return {}
        out = {}
        for partition, info in topic.partitions.items():
            if info.leader_id == self.broker_id and self._log(partition) is not None:
                out[partition] = info.leader_epoch
        return out

    def _log(self, partition: int):
        return self._core.log_manager.get(TopicPartition(OFFSETS_TOPIC, partition))

    def log_start_offset(self, partition: int) -> int:
        log = self._log(partition)
        return log.log_start_offset if log is not None else 0

    def log_end_offset(self, partition: int) -> int:
        log = self._log(partition)
        return log.log_end_offset if log is not None else 0

    def read(self, partition: int, offset: int, max_bytes: int) -> bytes:
        log = self._log(partition)
        return log.read(offset, max_bytes) if log is not None else b""

    def produce(self, envelope: Envelope, now_ms: int, fx: Effects) -> None:
        self._core.handle_produce(envelope, now_ms, fx)
