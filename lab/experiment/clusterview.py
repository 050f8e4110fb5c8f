"""The cluster as the lab sees it during a run: leaders, replicas and ISRs of the experiment's
topic, and the group coordinator, asked of a broker that is neither down nor paused (a paused
node would hang the call until its deadline)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Callable

from brokerlab.errors import ErrorCode, KafkaError
from brokerlab.v1 import broker_pb2, group_pb2

CALL_TIMEOUT_MS = 1500


@dataclass(frozen=True)
class PartitionState:
    partition: int
    leader: int  # -1: none
    leader_epoch: int
    replicas: tuple[int, ...]
    isr: tuple[int, ...]


class ClusterView:
    def __init__(self, link, addresses: dict[str, str], topic: str) -> None:
        self.link = link  # client.rpc.cluster_link.ClusterLink
        self.addresses = addresses  # broker name -> host:port
        self.topic = topic
        self.unavailable: set[str] = set()  # nodes the nemesis took down or paused

    def _candidates(self) -> list[str]:
        return [name for name in self.addresses if name not in self.unavailable]

    async def partitions(self) -> dict[int, PartitionState] | None:
        for name in self._candidates():
            try:
                response = await self.link.call_broker_at(
                    self.addresses[name], "Metadata", broker_pb2.MetadataRequest(topics=[self.topic]),
                    timeout_ms=CALL_TIMEOUT_MS)
            except KafkaError:
                continue
            for topic in response.topics:
                if topic.name == self.topic and topic.error_code == ErrorCode.NONE:
                    return {p.partition: PartitionState(p.partition, p.leader_id, p.leader_epoch, tuple(p.replicas),
                                                        tuple(p.isr)) for p in topic.partitions}
        return None

    async def partition(self, partition: int) -> PartitionState:
        states = await self.partitions()
        if not states or partition not in states:
            raise KafkaError(ErrorCode.LEADER_NOT_AVAILABLE, f"no metadata for {self.topic}-{partition}")
        return states[partition]

    async def coordinator(self, group: str) -> int:
        for name in self._candidates():
            try:
                response = await self.link.call_group_at(
                    self.addresses[name], "FindCoordinator", group_pb2.FindCoordinatorRequest(group_ids=[group]),
                    timeout_ms=CALL_TIMEOUT_MS)
            except KafkaError:
                continue
            for found in response.coordinators:
                if found.group_id == group and found.error_code == ErrorCode.NONE and found.node_id >= 0:
                    return found.node_id
        raise KafkaError(ErrorCode.COORDINATOR_NOT_AVAILABLE, f"no coordinator found for group {group}")

    async def wait(self, condition: Callable[[dict[int, PartitionState]], bool], timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while True:
            states = await self.partitions()
            if states and condition(states):
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.1)

    async def wait_fully_replicated(self, timeout_s: float) -> bool:
        return await self.wait(lambda states: all(s.leader >= 0 and set(s.isr) == set(s.replicas)
                                                  for s in states.values()), timeout_s)
