"""A ControllerCore on a MemoryDisk, driven by hand: requests in, replies and events out."""

from __future__ import annotations

import random
from typing import Any

from brokerlab.disk import MemoryDisk
from brokerlab.sansio import Effects, Envelope
from brokerlab.v1 import controller_pb2 as pb
from brokerlab.v1.common_pb2 import Endpoint
from brokerlab.v1.metadata_pb2 import TopicConfig
from controller.config import ControllerConfig
from controller.core import ControllerCore
from controller.journal import MetadataJournal


class Harness:
    def __init__(self, config: ControllerConfig | None = None, seed: int = 0, disk: MemoryDisk | None = None) -> None:
        self.disk = disk or MemoryDisk()
        self.config = config or ControllerConfig()
        self.seed = seed
        self.now_ms = 0
        self._request_id = 0
        self.events: list = []
        self.core = self.build()

    def build(self) -> ControllerCore:
        return ControllerCore(self.config, MetadataJournal(self.disk), random.Random(self.seed), "test-cluster")

    def restart(self, crash: bool = False) -> ControllerCore:
        """A new core over the same disk (after a power loss if ``crash``)."""
        self.core.journal.close()
        if crash:
            self.disk.crash()
        self.core = self.build()
        return self.core

    # ---- driving ----
    def send(self, rpc: str, message: Any, now_ms: int | None = None, src: str = "client") -> Effects:
        if now_ms is not None:
            self.now_ms = now_ms
        self._request_id += 1
        effects = self.core.step(Envelope(src, "controller", rpc, message, self._request_id), self.now_ms)
        self.events.extend(effects.events)
        return effects

    def call(self, rpc: str, message: Any, now_ms: int | None = None) -> Any:
        """Send and return the reply to this very request (AssertionError if it was parked)."""
        effects = self.send(rpc, message, now_ms)
        mine = [r for r in effects.replies if r.request_id == self._request_id]
        assert mine, f"{rpc} got no immediate reply"
        return mine[0].message

    def tick(self, now_ms: int) -> Effects:
        self.now_ms = now_ms
        effects = self.core.tick(now_ms)
        self.events.extend(effects.events)
        return effects

    def event_names(self) -> list[str]:
        return [e.name for e in self.events]

    # ---- brokers ----
    def register(self, broker_id: int, incarnation: str | None = None, rack: str = "", now_ms: int | None = None):
        return self.call(
            "RegisterBroker",
            pb.RegisterBrokerRequest(
                broker_id=broker_id,
                endpoint=Endpoint(host="127.0.0.1", port=9000 + broker_id),
                rack=rack,
                incarnation_id=incarnation or f"incarnation-{broker_id}",
            ),
            now_ms,
        )

    def heartbeat(self, broker_id: int, broker_epoch: int, offset: int | None = None, now_ms: int | None = None, **flags):
        """``offset`` defaults to "applied everything in the journal"."""
        if offset is None:
            offset = self.core.journal.end_offset - 1
        request = pb.BrokerHeartbeatRequest(broker_id=broker_id, broker_epoch=broker_epoch, current_metadata_offset=offset, **flags)
        return self.call("BrokerHeartbeat", request, now_ms)

    def start_brokers(self, broker_ids, racks: dict[int, str] | None = None) -> dict[int, int]:
        """Register and unfence brokers; returns their epochs."""
        epochs = {}
        for broker_id in broker_ids:
            response = self.register(broker_id, rack=(racks or {}).get(broker_id, ""))
            assert response.error_code == 0, response
            epochs[broker_id] = response.broker_epoch
        for broker_id in broker_ids:
            assert not self.heartbeat(broker_id, epochs[broker_id]).is_fenced
        return epochs

    # ---- topics ----
    def create_topics(self, *topics: pb.CreatableTopic, validate_only: bool = False) -> list:
        response = self.call("CreateTopics", pb.CreateTopicsRequest(topics=list(topics), validate_only=validate_only))
        return list(response.topics)

    def create_topic(self, name: str, partitions: int = -1, replication_factor: int = -1, **kwargs):
        (result,) = self.create_topics(pb.CreatableTopic(name=name, num_partitions=partitions, replication_factor=replication_factor, **kwargs))
        return result

    def create_assigned(self, name: str, assignment: list[list[int]], configs: dict[str, str] | None = None):
        """A topic with a manual assignment (replica lists; the first replica is the preferred leader)."""
        result = self.create_topic(
            name,
            assignments=[pb.ReplicaAssignment(partition=i, broker_ids=r) for i, r in enumerate(assignment)],
            configs=[TopicConfig(name=k, value=v) for k, v in (configs or {}).items()],
        )
        assert result.error_code == 0, result
        return result

    def partitions(self, name: str):
        topic = self.core.state.topic_by_name(name)
        assert topic is not None, name
        return [topic.partitions[i] for i in sorted(topic.partitions)]

    def partition(self, name: str, index: int = 0):
        return self.partitions(name)[index]

    # ---- replication (issue 3) ----
    def alter_partition(self, broker_id: int, broker_epoch: int, items: list[pb.AlterPartitionItem], now_ms: int | None = None):
        request = pb.AlterPartitionRequest(broker_id=broker_id, broker_epoch=broker_epoch, partitions=items)
        return self.call("AlterPartition", request, now_ms)

    def alter_isr(self, broker_id: int, broker_epoch: int, topic: str, index: int, new_isr: list[int], **overrides):
        """AlterPartition for one partition, with its current epochs unless overridden; returns the item result."""
        p = self.partition(topic, index)
        item = pb.AlterPartitionItem(
            topic=topic,
            partition=index,
            leader_epoch=overrides.pop("leader_epoch", p.leader_epoch),
            new_isr=new_isr,
            partition_epoch=overrides.pop("partition_epoch", p.partition_epoch),
        )
        response = self.alter_partition(broker_id, broker_epoch, [item], **overrides)
        assert len(response.partitions) == 1, response
        return response.partitions[0]

    def elect(self, election_type: int, partitions: dict[str, list[int]] | None = None):
        request = pb.ElectLeadersRequest(election_type=election_type)
        for topic, indexes in (partitions or {}).items():
            request.topic_partitions.add(topic=topic, partitions=indexes)
        return self.call("ElectLeaders", request)

    def records_since(self, offset: int) -> list:
        return self.core.journal.read(offset, 10_000)
