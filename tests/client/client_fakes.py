"""In-process fake BrokerService / ControllerService on grpc.aio, for client wiring tests.

Not a broker: an in-memory table of topics and batches shared by a fake controller and fake
brokers on 127.0.0.1 ephemeral ports. Enough to prove ClusterLink, Consumer and Admin speak the
wire contract (metadata routing, NOT_LEADER_OR_FOLLOWER, out-of-range, long-poll, log dirs).
"""

from __future__ import annotations

import asyncio
import bisect
from dataclasses import dataclass, field

import grpc

from brokerlab import record_batch as rb
from brokerlab.errors import ErrorCode
from brokerlab.rpc.grpc_options import new_server
from brokerlab.v1 import broker_pb2, broker_pb2_grpc, common_pb2, controller_pb2, controller_pb2_grpc


@dataclass
class FakePartition:
    leader: int
    replicas: list[int]
    epoch: int = 0
    batches: list[tuple[int, bytes]] = field(default_factory=list)  # (base_offset, batch)
    log_start_offset: int = 0
    log_end_offset: int = 0


@dataclass
class FakeTopic:
    topic_id: str
    partitions: list[FakePartition]


class FakeClusterState:
    def __init__(self) -> None:
        self.cluster_id = "fake-cluster"
        self.brokers: dict[int, int] = {}  # broker id -> port
        self.controller_port = 0
        self.topics: dict[str, FakeTopic] = {}
        self.changed = asyncio.Event()
        self.next_topic_id = 1
        self.calls: list[tuple[str, str]] = []  # (node, rpc)
        self.fetch_delay_s = 0.0
        self.next_producer_id = 0

    def create_topic(self, name: str, partitions: int, leaders: list[int]) -> FakeTopic:
        topic = FakeTopic(
            f"id-{self.next_topic_id}",
            [FakePartition(leaders[p % len(leaders)], [leaders[p % len(leaders)]]) for p in range(partitions)],
        )
        self.next_topic_id += 1
        self.topics[name] = topic
        return topic

    def append(self, topic: str, partition: int, values: list[bytes | None], key: bytes | None = None) -> int:
        """Append one batch; returns its base offset."""
        p = self.topics[topic].partitions[partition]
        base = p.log_end_offset
        batch = rb.encode_batch([(1_000 + i, key, v, ()) for i, v in enumerate(values)], base_offset=base)
        p.batches.append((base, batch))
        p.log_end_offset += len(values)
        self.changed.set()
        self.changed = asyncio.Event()
        return base

    def move_leader(self, topic: str, partition: int, new_leader: int) -> None:
        p = self.topics[topic].partitions[partition]
        p.leader = new_leader
        p.epoch += 1
        if new_leader not in p.replicas:
            p.replicas.append(new_leader)

    def metadata(self, names: list[str]) -> broker_pb2.MetadataResponse:
        response = broker_pb2.MetadataResponse(cluster_id=self.cluster_id, controller_id=0)
        response.controller_endpoint.CopyFrom(common_pb2.Endpoint(host="127.0.0.1", port=self.controller_port))
        for broker_id, port in sorted(self.brokers.items()):
            response.brokers.add(broker_id=broker_id, endpoint=common_pb2.Endpoint(host="127.0.0.1", port=port))
        for name in names or sorted(self.topics):
            topic = self.topics.get(name)
            if topic is None:
                response.topics.add(name=name, error_code=ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)
                continue
            t = response.topics.add(name=name, topic_id=topic.topic_id)
            for index, p in enumerate(topic.partitions):
                t.partitions.add(partition=index, leader_id=p.leader, leader_epoch=p.epoch,
                                 replicas=p.replicas, isr=p.replicas)
        return response


class FakeBroker(broker_pb2_grpc.BrokerServiceServicer):
    def __init__(self, state: FakeClusterState, broker_id: int) -> None:
        self.state = state
        self.broker_id = broker_id

    def _partition(self, topic: str, partition: int) -> tuple[int, FakePartition | None]:
        t = self.state.topics.get(topic)
        if t is None or not 0 <= partition < len(t.partitions):
            return ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, None
        p = t.partitions[partition]
        if p.leader != self.broker_id:
            return ErrorCode.NOT_LEADER_OR_FOLLOWER, None
        return ErrorCode.NONE, p

    async def Metadata(self, request, context):
        self.state.calls.append((f"broker-{self.broker_id}", "Metadata"))
        return self.state.metadata(list(request.topics))

    async def Fetch(self, request, context):
        self.state.calls.append((f"broker-{self.broker_id}", "Fetch"))
        if self.state.fetch_delay_s:
            await asyncio.sleep(self.state.fetch_delay_s)
        response = self._fetch(request)
        if not any(p.records or p.error_code for p in response.partitions) and request.max_wait_ms > 0:
            try:  # long-poll: wait for an append, up to max_wait_ms
                await asyncio.wait_for(self.state.changed.wait(), request.max_wait_ms / 1000)
            except asyncio.TimeoutError:
                pass
            response = self._fetch(request)
        return response

    def _fetch(self, request) -> broker_pb2.FetchResponse:
        response = broker_pb2.FetchResponse()
        for fp in request.partitions:
            code, p = self._partition(fp.topic, fp.partition)
            out = response.partitions.add(topic=fp.topic, partition=fp.partition, error_code=code)
            if p is None:
                continue
            out.high_watermark = out.log_end_offset = p.log_end_offset
            out.log_start_offset = p.log_start_offset
            if not p.log_start_offset <= fp.fetch_offset <= p.log_end_offset:
                out.error_code = ErrorCode.OFFSET_OUT_OF_RANGE
                continue
            chunks, size = [], 0
            # The batch holding fetch_offset is the last one whose base offset is <= it.
            first = max(bisect.bisect_right(p.batches, fp.fetch_offset, key=lambda b: b[0]) - 1, 0)
            for base, batch in p.batches[first:]:
                if base + rb.read_header(batch).record_count <= fp.fetch_offset:
                    continue
                if chunks and size + len(batch) > fp.partition_max_bytes:
                    break
                chunks.append(batch)
                size += len(batch)
            out.records = b"".join(chunks)
        return response

    async def ListOffsets(self, request, context):
        self.state.calls.append((f"broker-{self.broker_id}", "ListOffsets"))
        response = broker_pb2.ListOffsetsResponse()
        for lp in request.partitions:
            code, p = self._partition(lp.topic, lp.partition)
            out = response.partitions.add(topic=lp.topic, partition=lp.partition, error_code=code, offset=-1)
            if p is not None:
                out.offset = p.log_start_offset if lp.timestamp_ms == -2 else p.log_end_offset
                out.leader_epoch = p.epoch
        return response

    async def DescribeLogDirs(self, request, context):
        self.state.calls.append((f"broker-{self.broker_id}", "DescribeLogDirs"))
        response = broker_pb2.DescribeLogDirsResponse(broker_id=self.broker_id, log_dir="/fake")
        for name in request.topics or sorted(self.state.topics):
            topic = self.state.topics.get(name)
            for index, p in enumerate(topic.partitions if topic else []):
                if self.broker_id in p.replicas:
                    response.replicas.add(
                        topic=name, partition=index, log_start_offset=p.log_start_offset,
                        log_end_offset=p.log_end_offset, high_watermark=p.log_end_offset,
                        is_leader=p.leader == self.broker_id, leader_epoch=p.epoch,
                        size_bytes=sum(len(b) for _, b in p.batches), segment_count=1,
                    )
        return response


    async def InitProducerId(self, request, context):
        """Idempotent producers (the default with acks=all) ask for an id before producing."""
        self.state.calls.append((f"broker-{self.broker_id}", "InitProducerId"))
        self.state.next_producer_id += 1
        return broker_pb2.InitProducerIdResponse(producer_id=self.state.next_producer_id, producer_epoch=0)


class FakeController(controller_pb2_grpc.ControllerServiceServicer):
    def __init__(self, state: FakeClusterState) -> None:
        self.state = state

    async def CreateTopics(self, request, context):
        self.state.calls.append(("controller", "CreateTopics"))
        response = controller_pb2.CreateTopicsResponse()
        for t in request.topics:
            if t.name in self.state.topics:
                response.topics.add(name=t.name, error_code=ErrorCode.TOPIC_ALREADY_EXISTS,
                                    error_message=f"Topic '{t.name}' already exists.")
                continue
            if t.replication_factor > len(self.state.brokers):
                response.topics.add(name=t.name, error_code=ErrorCode.INVALID_REPLICATION_FACTOR,
                                    error_message="replication factor larger than the number of brokers")
                continue
            partitions = t.num_partitions if t.num_partitions > 0 else 1
            if not request.validate_only:
                topic = self.state.create_topic(t.name, partitions, sorted(self.state.brokers))
                response.topics.add(name=t.name, topic_id=topic.topic_id, num_partitions=partitions,
                                    replication_factor=1)
            else:
                response.topics.add(name=t.name, num_partitions=partitions, replication_factor=1)
        return response

    async def DeleteTopics(self, request, context):
        self.state.calls.append(("controller", "DeleteTopics"))
        response = controller_pb2.DeleteTopicsResponse()
        for name in request.names:
            if self.state.topics.pop(name, None) is None:
                response.topics.add(name=name, error_code=ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
                                    error_message="This server does not host this topic-partition.")
            else:
                response.topics.add(name=name)
        return response

    async def DescribeCluster(self, request, context):
        self.state.calls.append(("controller", "DescribeCluster"))
        response = controller_pb2.DescribeClusterResponse(
            cluster_id=self.state.cluster_id, controller_id=0, metadata_end_offset=7
        )
        response.controller_endpoint.CopyFrom(common_pb2.Endpoint(host="127.0.0.1", port=self.state.controller_port))
        for broker_id, port in sorted(self.state.brokers.items()):
            response.brokers.add(broker_id=broker_id, endpoint=common_pb2.Endpoint(host="127.0.0.1", port=port),
                                 broker_epoch=10 + broker_id)
        return response


class FakeCluster:
    """A fake controller and ``broker_count`` fake brokers; use inside a running event loop."""

    def __init__(self, broker_count: int = 2) -> None:
        self.broker_count = broker_count
        self.state = FakeClusterState()
        self.servers: dict[str, grpc.aio.Server] = {}

    async def start(self) -> "FakeCluster":
        server = new_server()
        controller_pb2_grpc.add_ControllerServiceServicer_to_server(FakeController(self.state), server)
        self.state.controller_port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        self.servers["controller"] = server
        for broker_id in range(1, self.broker_count + 1):
            await self.start_broker(broker_id)
        return self

    async def start_broker(self, broker_id: int) -> None:
        server = new_server()
        broker_pb2_grpc.add_BrokerServiceServicer_to_server(FakeBroker(self.state, broker_id), server)
        port = self.state.brokers.get(broker_id, 0)
        self.state.brokers[broker_id] = server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        self.servers[f"broker-{broker_id}"] = server

    async def stop_broker(self, broker_id: int) -> None:
        await self.servers.pop(f"broker-{broker_id}").stop(grace=None)

    def address(self, broker_id: int) -> str:
        return f"127.0.0.1:{self.state.brokers[broker_id]}"

    @property
    def bootstrap(self) -> list[str]:
        return [self.address(b) for b in sorted(self.state.brokers)]

    async def stop(self) -> None:
        await asyncio.gather(*(s.stop(grace=None) for s in self.servers.values()))
        self.servers.clear()
