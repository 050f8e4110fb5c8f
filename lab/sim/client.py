"""A tiny simulated client: admin and data requests as envelopes, answered inside the simulation.

Each call puts a request on the simulated network and runs the scheduler until the answer
arrives (the network guarantees one: the reply or a transport failure at the deadline), so a
test reads like a script while the cluster keeps living in virtual time around it. Every
request and answer goes into the trace. The real client cores join the simulator later (issue 5);
this is the minimum to drive the cluster in tests.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

from brokerlab.errors import ErrorCode, KafkaError, is_retriable
from brokerlab.ids import CONTROLLER_NODE, TopicPartition, broker_id_of, broker_node
from brokerlab.record_batch import Record, decode_records, encode_batch
from brokerlab.sansio import Envelope, RequestIds
from brokerlab.v1 import broker_pb2, controller_pb2, metadata_pb2

from .network import SimNetwork, call_timeout_ms
from .scheduler import Scheduler, SimulationError
from .trace import Trace


class TransportFailed(Exception):
    """The request got no answer from its peer: ``reason`` is the gRPC-like status."""

    def __init__(self, dst: str, rpc: str, reason: str) -> None:
        super().__init__(f"{rpc} to {dst} failed: {reason}")
        self.dst, self.rpc, self.reason = dst, rpc, reason


class LeaderNotFound(Exception):
    """No live broker named a live leader for the partition in time."""


class RetriableError(Exception):
    """A retriable Kafka error code in an answer (wraps the KafkaError)."""


class SimClient:
    def __init__(self, name: str, scheduler: Scheduler, network: SimNetwork, trace: Trace,
                 on_acknowledged: Callable[[TopicPartition, int, bytes, int], None] | None = None) -> None:
        if not name.startswith("client"):
            raise ValueError("client node names start with 'client'")
        self.name = name
        self.incarnation = 1
        self.scheduler = scheduler
        self.network = network
        self.trace = trace
        self.request_timeout_ms: int | None = None
        # Told of every acks=all acknowledgement (the cluster's ledger that invariants check).
        self.on_acknowledged = on_acknowledged
        self._ids = RequestIds()
        self._answers: dict[int, Envelope] = {}
        # Leaders as last seen in metadata; dropped on any error that says they moved.
        self._leaders: dict[tuple[str, int], str] = {}
        network.register(self)

    alive = True

    def call_timeout(self, envelope: Envelope) -> int:
        """The client's request.timeout.ms (default: the network's) plus any long-poll wait."""
        base = self.request_timeout_ms or self.network.config.request_timeout_ms
        return call_timeout_ms(envelope, base)

    def deliver(self, envelope: Envelope) -> None:
        self._answers[envelope.request_id] = envelope
        self.trace.record(self.scheduler.now_ms, self.name, "ReplyReceived", {
            "src": envelope.src, "rpc": envelope.rpc, "request_id": envelope.request_id,
            "transport_error": envelope.transport_error, "message": envelope.message,
        })

    # -- raw calls --------------------------------------------------------------------------
    def send(self, dst: str, rpc: str, message: Any) -> int:
        """Send without waiting; collect the answer later with ``wait(request_id)``."""
        request_id = self._ids.next()
        self.trace.record(self.scheduler.now_ms, self.name, "RequestSent", {
            "dst": dst, "rpc": rpc, "request_id": request_id, "message": message,
        })
        self.network.send(Envelope(self.name, dst, rpc, message, request_id))
        return request_id

    def wait(self, request_id: int) -> Envelope:
        # The network answers every call by its deadline; the bound here only guards against bugs.
        limit = self.scheduler.now_ms + self.network.config.request_timeout_ms * 10 + 3_600_000
        if not self.scheduler.run_until(lambda: request_id in self._answers, limit):
            raise SimulationError(f"{self.name}: request {request_id} never answered (network bug)")
        return self._answers.pop(request_id)

    def call(self, dst: str, rpc: str, message: Any) -> Any:
        """Request and wait; the answer message, or TransportFailed."""
        answer = self.wait(self.send(dst, rpc, message))
        if answer.transport_error is not None:
            raise TransportFailed(dst, rpc, answer.transport_error)
        return answer.message

    def sleep(self, duration_ms: int) -> None:
        """Let the cluster run for a while (virtual time)."""
        self.scheduler.run_for(duration_ms)

    def wait_until(self, predicate: Callable[[], bool], timeout_ms: int, poll_ms: int = 50) -> bool:
        """Re-check ``predicate`` every ``poll_ms`` of virtual time until it holds or time is up."""
        deadline = self.scheduler.now_ms + timeout_ms
        while True:
            if predicate():
                return True
            if self.scheduler.now_ms >= deadline:
                return False
            self.scheduler.run_for(min(poll_ms, deadline - self.scheduler.now_ms))

    # -- admin (to the controller) ----------------------------------------------------------
    def create_topic(
        self, name: str, partitions: int = 1, replication_factor: int = 1, configs: dict[str, str] | None = None
    ) -> controller_pb2.CreatableTopicResult:
        topic = controller_pb2.CreatableTopic(
            name=name,
            num_partitions=partitions,
            replication_factor=replication_factor,
            configs=[metadata_pb2.TopicConfig(name=k, value=v) for k, v in sorted((configs or {}).items())],
        )
        response = self.call(CONTROLLER_NODE, "CreateTopics", controller_pb2.CreateTopicsRequest(topics=[topic]))
        return response.topics[0]

    def delete_topic(self, name: str) -> controller_pb2.DeletableTopicResult:
        response = self.call(CONTROLLER_NODE, "DeleteTopics", controller_pb2.DeleteTopicsRequest(names=[name]))
        return response.topics[0]

    def describe_cluster(self) -> controller_pb2.DescribeClusterResponse:
        return self.call(CONTROLLER_NODE, "DescribeCluster", controller_pb2.DescribeClusterRequest())

    # -- data (to brokers) ------------------------------------------------------------------
    def live_brokers(self) -> list[str]:
        return sorted(
            (name for name, ep in self.network.endpoints.items() if name.startswith("broker-") and ep.alive),
            key=broker_id_of,
        )

    def metadata(self, topics: Iterable[str] = (), broker: str | None = None) -> broker_pb2.MetadataResponse:
        """Metadata from ``broker`` or else the first live broker that answers."""
        candidates = [broker] if broker else self.live_brokers()
        failure: TransportFailed | None = None
        for node in candidates:
            try:
                return self.call(node, "Metadata", broker_pb2.MetadataRequest(topics=list(topics)))
            except TransportFailed as exc:
                failure = exc
        raise failure or TransportFailed("brokers", "Metadata", "no live broker")

    def leader_of(self, topic: str, partition: int, broker: str | None = None) -> str | None:
        """The leader's node name according to one broker's metadata (None if unknown)."""
        try:
            response = self.metadata([topic], broker)
        except TransportFailed:
            return None
        for meta in response.topics:
            if meta.name == topic and meta.error_code == ErrorCode.NONE:
                for part in meta.partitions:
                    if part.partition == partition and part.leader_id >= 0:
                        return broker_node(part.leader_id)
        return None

    def wait_for_leader(self, topic: str, partition: int, timeout_ms: int = 10_000) -> str:
        """The live leader of a partition: from the cache, else from metadata, retried until found."""
        cached = self._leaders.get((topic, partition))
        if cached is not None and self.network.endpoints[cached].alive:
            return cached
        found: list[str] = []

        def has_leader() -> bool:
            leader = self.leader_of(topic, partition)
            if leader is not None and leader in self.live_brokers():
                found.append(leader)
                return True
            return False

        if not self.wait_until(has_leader, timeout_ms):
            raise LeaderNotFound(f"no live leader for {topic}-{partition} within {timeout_ms} ms")
        self._leaders[(topic, partition)] = found[-1]
        return found[-1]

    def _forget_leader(self, topic: str, partition: int, error_code: int) -> None:
        if error_code != ErrorCode.NONE:
            self._leaders.pop((topic, partition), None)

    def _call_leader(self, topic: str, partition: int, node: str, rpc: str, message: Any) -> Any:
        try:
            return self.call(node, rpc, message)
        except TransportFailed:
            self._leaders.pop((topic, partition), None)
            raise

    def produce(
        self,
        topic: str,
        partition: int,
        values: list[bytes],
        *,
        key: bytes | None = None,
        acks: int = 1,
        broker: str | None = None,
        timeout_ms: int = 5_000,
    ) -> broker_pb2.PartitionProduceResponse:
        """One batch of ``values`` to the partition's leader (or ``broker``)."""
        node = broker or self.wait_for_leader(topic, partition)
        now = self.scheduler.now_ms
        records = encode_batch([(now, key, value, ()) for value in values])
        request = broker_pb2.ProduceRequest(
            acks=acks,
            timeout_ms=timeout_ms,
            partitions=[broker_pb2.PartitionProduceData(topic=topic, partition=partition, records=records)],
        )
        answer = self._call_leader(topic, partition, node, "Produce", request).partitions[0]
        self._forget_leader(topic, partition, answer.error_code)
        if acks == -1 and answer.error_code == ErrorCode.NONE and self.on_acknowledged is not None:
            for i, value in enumerate(values):
                self.on_acknowledged(TopicPartition(topic, partition), answer.base_offset + i, value, now)
        return answer

    def fetch(
        self,
        topic: str,
        partition: int,
        offset: int,
        *,
        max_bytes: int = 1 << 20,
        max_wait_ms: int = 0,
        broker: str | None = None,
    ) -> tuple[broker_pb2.FetchPartitionResponse, list[Record]]:
        node = broker or self.wait_for_leader(topic, partition)
        request = broker_pb2.FetchRequest(
            replica_id=-1,
            max_wait_ms=max_wait_ms,
            min_bytes=1,
            max_bytes=max_bytes,
            partitions=[
                broker_pb2.FetchPartition(
                    topic=topic, partition=partition, fetch_offset=offset,
                    partition_max_bytes=max_bytes, current_leader_epoch=-1, last_fetched_epoch=-1,
                )
            ],
        )
        answer = self._call_leader(topic, partition, node, "Fetch", request).partitions[0]
        self._forget_leader(topic, partition, answer.error_code)
        return answer, decode_records(answer.records) if answer.records else []

    def retrying(self, attempt: Callable[[], Any], timeout_ms: int = 60_000, backoff_ms: int = 100) -> Any:
        """Run ``attempt`` until it returns, retrying TransportFailed and retriable Kafka errors
        (``RetriableError``) after ``backoff_ms`` of virtual time, for up to ``timeout_ms``."""
        deadline = self.scheduler.now_ms + timeout_ms
        while True:
            try:
                return attempt()
            except (TransportFailed, RetriableError, LeaderNotFound):
                if self.scheduler.now_ms + backoff_ms > deadline:
                    raise
            self.sleep(backoff_ms)

    def fetch_all(self, topic: str, partition: int, offset: int = 0, broker: str | None = None,
                  timeout_ms: int = 60_000, backoff_ms: int = 100) -> list[Record]:
        """Every record from ``offset`` to the end of the log once it is committed, in as many
        fetches as it takes (each retried on transport failures and retriable errors, reads being
        idempotent).

        A read that reaches the high watermark while the answer's log end offset is further on asks
        again after ``backoff_ms``, until the two meet or ``timeout_ms`` has passed (then it returns
        what it read): a leader elected a moment ago serves up to its own high watermark, which
        trails the committed end until its followers fetch in the new epoch (Kafka's
        OFFSET_NOT_AVAILABLE after an election says the same), so stopping at the first high
        watermark seen cut a read-back short of acknowledged records (rolling-restart seed 561
        --faults: a preferred-leader election during the read-back).
        """

        def fetch_once(at: int) -> tuple[broker_pb2.FetchPartitionResponse, list[Record]]:
            answer, records = self.fetch(topic, partition, at, broker=broker)
            if answer.error_code != ErrorCode.NONE:
                error = KafkaError(answer.error_code, answer.error_message)
                if is_retriable(answer.error_code):
                    raise RetriableError(error)
                raise SimulationError(f"fetch {topic}-{partition}@{at}: {error}")
            return answer, records

        deadline = self.scheduler.now_ms + timeout_ms
        out: list[Record] = []
        while True:
            answer, records = self.retrying(lambda at=offset: fetch_once(at), timeout_ms)
            records = [r for r in records if r.offset >= offset]
            out.extend(records)
            if records:
                offset = out[-1].offset + 1
                if offset < answer.high_watermark:
                    continue
            if answer.high_watermark >= answer.log_end_offset or self.scheduler.now_ms + backoff_ms > deadline:
                return out
            self.sleep(backoff_ms)
