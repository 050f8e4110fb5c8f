"""Drive a BrokerCore purely with envelopes and ``now_ms`` (no sockets, no sleeps).

``BrokerHarness`` plays the controller and the clients: it answers the core's sends by hand and
builds the metadata records a controller would journal.
"""

from __future__ import annotations

from typing import Any

from brokerlab.disk import MemoryDisk
from brokerlab.record_batch import encode_batch
from brokerlab.sansio import Effects, Envelope, run_blocking_inline
from brokerlab.v1 import broker_pb2, common_pb2, controller_pb2, metadata_pb2
from node.broker import BrokerCore
from node.config import BrokerConfig
from node.log.config import LogConfig
from node.log.manager import LogManager

ENDPOINT = ("127.0.0.1", 9001)


def register_record(broker_id: int, epoch: int, fenced: bool = True, rack: str = "") -> metadata_pb2.MetadataRecord:
    return metadata_pb2.MetadataRecord(register_broker=metadata_pb2.RegisterBrokerRecord(
        broker_id=broker_id, broker_epoch=epoch, fenced=fenced,
        endpoint=common_pb2.Endpoint(host="127.0.0.1", port=9000 + broker_id), rack=rack))


def unfence_record(broker_id: int, epoch: int) -> metadata_pb2.MetadataRecord:
    return metadata_pb2.MetadataRecord(unfence_broker=metadata_pb2.UnfenceBrokerRecord(broker_id=broker_id, broker_epoch=epoch))


def fence_record(broker_id: int, epoch: int) -> metadata_pb2.MetadataRecord:
    return metadata_pb2.MetadataRecord(fence_broker=metadata_pb2.FenceBrokerRecord(broker_id=broker_id, broker_epoch=epoch))


def topic_record(name: str, topic_id: str, **configs: str) -> metadata_pb2.MetadataRecord:
    return metadata_pb2.MetadataRecord(topic=metadata_pb2.TopicRecord(
        name=name, topic_id=topic_id, configs=[metadata_pb2.TopicConfig(name=k, value=v) for k, v in configs.items()]))


def partition_record(topic_id: str, index: int, replicas: list[int], leader: int, isr: list[int] | None = None,
                     leader_epoch: int = 0) -> metadata_pb2.MetadataRecord:
    return metadata_pb2.MetadataRecord(partition=metadata_pb2.PartitionRecord(
        topic_id=topic_id, partition=index, replicas=replicas, isr=replicas if isr is None else isr,
        leader_id=leader, leader_epoch=leader_epoch, partition_epoch=0))


def leader_change_record(topic_id: str, index: int, leader: int, leader_epoch: int) -> metadata_pb2.MetadataRecord:
    return metadata_pb2.MetadataRecord(partition_change=metadata_pb2.PartitionChangeRecord(
        topic_id=topic_id, partition=index, leader_id=leader, leader_changed=True, leader_epoch=leader_epoch))


def remove_topic_record(topic_id: str) -> metadata_pb2.MetadataRecord:
    return metadata_pb2.MetadataRecord(remove_topic=metadata_pb2.RemoveTopicRecord(topic_id=topic_id))


def cluster_records(broker_ids=(1, 2, 3)) -> list[metadata_pb2.MetadataRecord]:
    out = []
    for broker_id in broker_ids:
        out += [register_record(broker_id, 100 + broker_id), unfence_record(broker_id, 100 + broker_id)]
    return out


def batch(*values: bytes, timestamp_ms: int = 1000) -> bytes:
    return encode_batch([(timestamp_ms + i, None, value, ()) for i, value in enumerate(values)])


class BrokerHarness:
    def __init__(self, broker_id: int = 1, now_ms: int = 1_000, log_config: LogConfig | None = None,
                 disk: MemoryDisk | None = None, **config: Any) -> None:
        self.now_ms = now_ms
        self.disk = disk if disk is not None else MemoryDisk()
        self.log_config = log_config or LogConfig()
        self.log_manager = LogManager(self.disk, self.log_config, now_ms)
        self.config = BrokerConfig(broker_id=broker_id, controller_endpoint=("127.0.0.1", 9093),
                                   log_config=self.log_config, **config)
        self.core = BrokerCore(self.config, self.log_manager, ENDPOINT, "rack-a", "incarnation-1")
        self.journal: list[metadata_pb2.MetadataRecord] = []
        self.events: list[Any] = []
        self._client_ids = 0

    # -- plumbing
    def _record(self, fx: Effects) -> Effects:
        run_blocking_inline(self.core, fx, self.now_ms)  # roll flushes: no threads here
        self.events.extend(fx.events)
        return fx

    def tick(self, advance_ms: int = 0) -> Effects:
        self.now_ms += advance_ms
        return self._record(self.core.tick(self.now_ms))

    def answer(self, request: Envelope, message: Any) -> Effects:
        return self._record(self.core.step(request.reply(message), self.now_ms))

    def fail(self, request: Envelope, reason: str = "UNAVAILABLE: connection refused") -> Effects:
        return self._record(self.core.step(request.failed(reason), self.now_ms))

    def request(self, rpc: str, message: Any) -> tuple[Envelope, Effects]:
        self._client_ids += 1
        envelope = Envelope("client-test", self.core.node, rpc, message, self._client_ids)
        return envelope, self._record(self.core.step(envelope, self.now_ms))

    def call(self, rpc: str, message: Any) -> Any:
        """A request that must be answered at once; returns the response message."""
        envelope, fx = self.request(rpc, message)
        [reply] = [r for r in fx.replies if r.request_id == envelope.request_id]
        return reply.message

    @staticmethod
    def sent(fx: Effects, rpc: str) -> list[Envelope]:
        return [e for e in fx.sends if e.rpc == rpc]

    def event_names(self) -> list[str]:
        return [e.name for e in self.events]

    # -- the controller's side
    def fetch_answer(self, request: Envelope, records: list[metadata_pb2.MetadataRecord]) -> Effects:
        """Journal ``records`` and answer a FetchMetadataRecords with everything from its offset."""
        self.journal.extend(records)
        start = request.message.fetch_offset
        return self.answer(request, controller_pb2.FetchMetadataRecordsResponse(
            base_offset=start, records=self.journal[start:], end_offset=len(self.journal)))

    def start(self, records: list[metadata_pb2.MetadataRecord] | None = None) -> Envelope:
        """Register, get unfenced and catch up; returns the next outstanding metadata fetch."""
        fx = self.tick()
        [register] = self.sent(fx, "RegisterBroker")
        [fetch] = self.sent(fx, "FetchMetadataRecords")
        fx = self.answer(register, controller_pb2.RegisterBrokerResponse(broker_epoch=7))
        [heartbeat] = self.sent(fx, "BrokerHeartbeat")
        [describe] = self.sent(fx, "DescribeCluster")
        self.answer(describe, controller_pb2.DescribeClusterResponse(cluster_id="cluster-x", controller_id=0))
        fx = self.fetch_answer(fetch, cluster_records() + (records or []))
        [fetch] = self.sent(fx, "FetchMetadataRecords")
        self.answer(heartbeat, controller_pb2.BrokerHeartbeatResponse(is_caught_up=True, is_fenced=False))
        assert self.core.is_ready
        self.pending_fetch = fetch
        return fetch

    def apply(self, records: list[metadata_pb2.MetadataRecord]) -> Effects:
        """Answer the outstanding metadata long-poll with new records."""
        fx = self.fetch_answer(self.pending_fetch, records)
        [self.pending_fetch] = self.sent(fx, "FetchMetadataRecords")
        return fx

    # -- the clients' side
    def produce(self, topic: str, partition: int, records: bytes, acks: int = 1) -> broker_pb2.PartitionProduceResponse:
        response = self.call("Produce", broker_pb2.ProduceRequest(acks=acks, timeout_ms=1000, partitions=[
            broker_pb2.PartitionProduceData(topic=topic, partition=partition, records=records)]))
        [out] = response.partitions
        return out

    def fetch(self, topic: str, partition: int, offset: int, **fields: Any) -> broker_pb2.FetchPartitionResponse:
        fields.setdefault("max_bytes", 1024 * 1024)
        response = self.call("Fetch", broker_pb2.FetchRequest(replica_id=-1, partitions=[
            broker_pb2.FetchPartition(topic=topic, partition=partition, fetch_offset=offset,
                                      partition_max_bytes=1024 * 1024)], **fields))
        [out] = response.partitions
        return out
