"""Three (or N) real BrokerCores and the real ControllerCore, wired by hand in one thread.

No sockets, no sleeps, no asyncio: ``ReplicationCluster`` keeps a FIFO of envelopes in flight
and delivers them one by one (zero latency) until nothing moves; ``advance(ms)`` moves the clock
and ticks every core whose deadline passed, in time order. Tests can hold back messages
(``hold(predicate)``) to look at them or answer them by hand, cut a broker off
(``isolate``/``heal``: its calls fail like a refused connection), and kill or restart a broker
over its own MemoryDisk.
"""

from __future__ import annotations

import random
from collections import deque
from typing import Any, Callable

from brokerlab.disk import MemoryDisk
from brokerlab.ids import CONTROLLER_NODE, TopicPartition, broker_node
from brokerlab.record_batch import decode_records, encode_batch
from brokerlab.sansio import Effects, Envelope, TraceEvent, run_blocking_inline
from brokerlab.v1 import broker_pb2, controller_pb2
from controller.config import ControllerConfig
from controller.core import ControllerCore
from controller.journal import MetadataJournal
from node.broker import BrokerCore
from node.config import BrokerConfig
from node.log.manager import LogManager

CLIENT = "client-test"


def batch(*values: bytes, timestamp_ms: int = 1_000) -> bytes:
    return encode_batch([(timestamp_ms + i, None, value, ()) for i, value in enumerate(values)])


class ReplicationCluster:
    def __init__(self, brokers: int = 3, broker_config: dict[str, Any] | None = None,
                 controller_config: dict[str, Any] | None = None, now_ms: int = 1_000) -> None:
        self.now_ms = now_ms
        self.broker_ids = list(range(1, brokers + 1))
        self.broker_raw = dict(broker_config or {})
        self.controller_disk = MemoryDisk()
        self.controller_config = ControllerConfig.from_values(dict(controller_config or {}), node_id=0,
                                                              endpoint=("controller", 9093))
        self.controller = ControllerCore(self.controller_config, MetadataJournal(self.controller_disk),
                                         random.Random(7), "replication-test")
        self.disks = {b: MemoryDisk() for b in self.broker_ids}
        self.cores: dict[int, BrokerCore | None] = {}
        self.incarnations = {b: 0 for b in self.broker_ids}
        self.queue: deque[Envelope] = deque()
        self.events: list[tuple[str, TraceEvent]] = []
        self.replies: dict[int, Envelope] = {}  # client request id -> reply
        self.held: list[Envelope] = []
        self._holds: list[Callable[[Envelope], bool]] = []
        self.isolated: set[str] = set()
        self._client_ids = 0
        self.delivered = 0
        for broker_id in self.broker_ids:
            self.start(broker_id)

    # ------------------------------------------------------------------ nodes

    def config(self, broker_id: int) -> BrokerConfig:
        raw = {"broker.id": broker_id, "controller.quorum.bootstrap.servers": "controller:9093",
               "log.dirs": f"/data/{broker_id}", **self.broker_raw}
        return BrokerConfig.from_values(raw)

    def start(self, broker_id: int) -> BrokerCore:
        config = self.config(broker_id)
        self.incarnations[broker_id] += 1
        log_manager = LogManager(self.disks[broker_id], config.log_config, self.now_ms)
        core = BrokerCore(config, log_manager, (broker_node(broker_id), 9092), "",
                          f"inc-{broker_id}-{self.incarnations[broker_id]}")
        self.cores[broker_id] = core
        self._run(broker_node(broker_id), core.tick(self.now_ms))
        return core

    def kill(self, broker_id: int) -> None:
        """kill -9: the core is gone; its calls in flight fail, its unflushed bytes stay (page cache)."""
        self.cores[broker_id] = None

    def stop(self, broker_id: int) -> None:
        core = self.cores[broker_id]
        assert core is not None
        core.log_manager.close()
        self.cores[broker_id] = None

    def begin_controlled_shutdown(self, broker_id: int) -> None:
        """SIGTERM as ``python -m node`` handles it: start the controlled shutdown."""
        self._run(broker_node(broker_id), self.core(broker_id).begin_controlled_shutdown(self.now_ms))
        self.run()

    def core(self, broker_id: int) -> BrokerCore:
        core = self.cores[broker_id]
        assert core is not None, f"broker {broker_id} is down"
        return core

    def log(self, broker_id: int, topic: str, partition: int = 0):
        return self.core(broker_id).log_manager.get(TopicPartition(topic, partition))

    def isolate(self, broker_id: int) -> None:
        """Cut a broker off from the controller and the other brokers (clients still reach it:
        a zombie leader keeps taking acks=1 writes)."""
        self.isolated.add(broker_node(broker_id))

    def heal(self) -> None:
        self.isolated.clear()

    # ------------------------------------------------------------------ delivery

    def hold(self, predicate: Callable[[Envelope], bool]) -> Callable[[Envelope], bool]:
        """Keep matching envelopes in ``held`` instead of delivering them."""
        self._holds.append(predicate)
        return predicate

    def take(self, predicate: Callable[[Envelope], bool]) -> list[Envelope]:
        """Remove and return the held envelopes that match."""
        taken = [e for e in self.held if predicate(e)]
        self.held = [e for e in self.held if not predicate(e)]
        return taken

    def unhold(self, predicate: Callable[[Envelope], bool]) -> None:
        """Stop holding what ``predicate`` matched and deliver what it held back."""
        self._holds.remove(predicate)
        self.deliver(self.take(predicate))

    def deliver(self, envelopes: list[Envelope]) -> None:
        """Deliver these now (past any hold), then whatever they cause."""
        for envelope in envelopes:
            self._deliver(envelope)
        self.run()

    def release_holds(self) -> None:
        self._holds.clear()
        held, self.held = self.held, []
        self.queue.extend(held)
        self.run()

    def _node_core(self, node: str):
        if node == CONTROLLER_NODE:
            return self.controller
        if node.startswith("broker-"):
            return self.cores.get(int(node.split("-")[1]))
        return None

    def _run(self, node: str, fx: Effects) -> None:
        if fx.blocking:  # roll flushes: run at once, on the spot (no threads here)
            run_blocking_inline(self._node_core(node), fx, self.now_ms)
        self.events.extend((node, e) for e in fx.events)
        self.queue.extend(fx.sends)
        self.queue.extend(fx.replies)

    def _cut(self, envelope: Envelope) -> bool:
        if envelope.src.startswith("client-") or envelope.dst.startswith("client-"):
            return False
        return envelope.src in self.isolated or envelope.dst in self.isolated

    def run(self, max_messages: int = 100_000) -> int:
        """Deliver everything in flight (and what that causes) until nothing moves."""
        count = 0
        while self.queue:
            envelope = self.queue.popleft()
            if any(hold(envelope) for hold in self._holds):
                self.held.append(envelope)
                continue
            count += 1
            if count > max_messages:
                raise AssertionError("the cluster does not settle (message storm)")
            self._deliver(envelope)
        self.delivered += count
        return count

    def _deliver(self, envelope: Envelope) -> None:
        if envelope.dst.startswith("client-"):
            self.replies[envelope.request_id] = envelope
            return
        core = self._node_core(envelope.dst)
        if envelope.is_response:
            if core is None:
                return
            if self._cut(envelope) and envelope.transport_error is None:
                # The answer is lost: the caller's deadline passes (at once, here).
                envelope = Envelope(envelope.src, envelope.dst, envelope.rpc, None, envelope.request_id, True,
                                    "DEADLINE_EXCEEDED: the answer was lost")
            self._run(envelope.dst, core.step(envelope, self.now_ms))
            return
        if core is None or self._cut(envelope):
            # A refused connection: the caller learns at once.
            self._deliver(envelope.failed(f"UNAVAILABLE: {envelope.dst} is down or cut off"))
            return
        self._run(envelope.dst, core.step(envelope, self.now_ms))

    def _cores(self) -> list[tuple[str, Any]]:
        out: list[tuple[str, Any]] = [(CONTROLLER_NODE, self.controller)]
        out += [(broker_node(b), c) for b, c in self.cores.items() if c is not None]
        return out

    def advance(self, ms: int) -> None:
        """Move the clock by ``ms``, firing every timer due on the way, in time order."""
        target = self.now_ms + ms
        self.run()
        while True:
            due = [(core.next_deadline_ms(), name, core) for name, core in self._cores()]
            due = [(d, name, core) for d, name, core in due if d is not None and d <= target]
            if not due:
                break
            when, name, core = min(due, key=lambda item: (item[0], item[1]))
            self.now_ms = max(self.now_ms, when)
            self._run(name, core.tick(self.now_ms))
            self.run()
        self.now_ms = target

    def settle(self, ms: int = 2_000, step_ms: int = 10) -> None:
        for _ in range(ms // step_ms):
            self.advance(step_ms)

    # ------------------------------------------------------------------ clients

    def request(self, dst: str, rpc: str, message: Any) -> int:
        self._client_ids += 1
        self.queue.append(Envelope(CLIENT, dst, rpc, message, self._client_ids))
        self.run()
        return self._client_ids

    def call(self, dst: str, rpc: str, message: Any) -> Any:
        request_id = self.request(dst, rpc, message)
        assert request_id in self.replies, f"{rpc} to {dst} was not answered at once"
        return self.replies.pop(request_id).message

    def wait_ready(self, timeout_ms: int = 5_000) -> None:
        waited = 0
        while not all(c is None or c.is_ready for c in self.cores.values()):
            assert waited < timeout_ms, "brokers not ready"
            self.advance(10)
            waited += 10

    def create_topic(self, name: str, partitions: int = 1, replication_factor: int = 3,
                     assignment: list[list[int]] | None = None, **configs: str) -> None:
        topic = controller_pb2.CreatableTopic(name=name, num_partitions=partitions,
                                              replication_factor=replication_factor,
                                              configs=[{"name": k, "value": v} for k, v in configs.items()])
        if assignment is not None:
            topic.num_partitions, topic.replication_factor = -1, -1
            for index, brokers in enumerate(assignment):
                topic.assignments.add(partition=index, broker_ids=brokers)
        [result] = self.call(CONTROLLER_NODE, "CreateTopics", controller_pb2.CreateTopicsRequest(topics=[topic])).topics
        assert result.error_code == 0, result.error_message
        self.run()

    def partition(self, topic: str, partition: int = 0, broker_id: int | None = None):
        """The partition as a broker's metadata image has it (default: the controller's state)."""
        if broker_id is not None:
            return self.core(broker_id).image.partition(TopicPartition(topic, partition))
        state = self.controller.state
        return state.topics[state.topic_ids[topic]].partitions[partition]

    def leader(self, topic: str, partition: int = 0) -> int:
        return self.partition(topic, partition).leader_id

    def produce(self, topic: str, partition: int, records: bytes, acks: int = -1, timeout_ms: int = 5_000,
                broker_id: int | None = None) -> int:
        """Send a produce; returns its request id (the answer may be parked: see ``answer``)."""
        broker_id = self.leader(topic, partition) if broker_id is None else broker_id
        return self.request(broker_node(broker_id), "Produce", broker_pb2.ProduceRequest(
            acks=acks, timeout_ms=timeout_ms,
            partitions=[broker_pb2.PartitionProduceData(topic=topic, partition=partition, records=records)]))

    def answer(self, request_id: int) -> broker_pb2.PartitionProduceResponse | None:
        reply = self.replies.pop(request_id, None)
        return reply.message.partitions[0] if reply is not None else None

    def consume(self, topic: str, partition: int = 0, offset: int = 0, broker_id: int | None = None,
                current_leader_epoch: int = -1) -> broker_pb2.FetchPartitionResponse:
        broker_id = self.leader(topic, partition) if broker_id is None else broker_id
        response = self.call(broker_node(broker_id), "Fetch", broker_pb2.FetchRequest(
            replica_id=-1, max_wait_ms=0, min_bytes=1, max_bytes=1 << 20, partitions=[
                broker_pb2.FetchPartition(topic=topic, partition=partition, fetch_offset=offset,
                                          partition_max_bytes=1 << 20, current_leader_epoch=current_leader_epoch)]))
        return response.partitions[0]

    def values(self, topic: str, partition: int = 0, broker_id: int | None = None) -> list[bytes]:
        """What a consumer reads from the leader (up to the high watermark)."""
        out = self.consume(topic, partition, broker_id=broker_id)
        assert out.error_code == 0, out.error_message
        return [r.value for r in decode_records(out.records)] if out.records else []

    def log_values(self, broker_id: int, topic: str, partition: int = 0) -> list[bytes]:
        """Every record in a replica's log (up to its log end)."""
        log = self.log(broker_id, topic, partition)
        data = log.read(log.log_start_offset, 1 << 30)
        return [r.value for r in decode_records(data)] if data else []

    # ------------------------------------------------------------------ trace

    def named(self, name: str, node: str | None = None) -> list[TraceEvent]:
        return [e for n, e in self.events if e.name == name and (node is None or n == node)]
