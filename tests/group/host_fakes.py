"""A fake broker for the group coordinator host (its BrokerPort) and a harness driving the host.

``FakeBroker`` implements the host's BrokerPort over a real LogManager on a MemoryDisk. Its
Produce appends and, like acks=all, answers only when ``release()`` is called (or at once with
``auto_commit``), or fails with a chosen error.
"""

from __future__ import annotations

from brokerlab.disk import MemoryDisk
from brokerlab.ids import TopicPartition
from brokerlab.sansio import Effects, Envelope
from brokerlab.v1 import broker_pb2, group_pb2
from node.group.config import OFFSETS_TOPIC, GroupConfig
from node.group.host import GroupCoordinatorHost
from node.log.config import LogConfig
from node.log.manager import LogManager


class FakeBroker:
    def __init__(self, broker_id: int = 1, disk: MemoryDisk | None = None, partitions: int = 4) -> None:
        self.broker_id = broker_id
        self.node = f"broker-{broker_id}"
        self.disk = disk or MemoryDisk()
        self.logs = LogManager(self.disk, LogConfig(), 0)
        self.partitions = partitions
        self.topic_exists = True
        self.led: dict[int, int] = {p: 0 for p in range(partitions)}
        self.offset = 0
        self.auto_commit = True
        self.fail_with: int | None = None
        self.held: list[Envelope] = []  # internal produces waiting for "the ISR"
        self.live = 3

    # BrokerPort
    def is_ready(self) -> bool:
        return True

    def metadata_offset(self) -> int:
        return self.offset

    def offsets_partition_count(self) -> int | None:
        return self.partitions if self.topic_exists else None

    def coordinator_endpoint(self, partition: int):
        return (self.broker_id, "127.0.0.1", 9000 + self.broker_id) if partition in self.led else (2, "127.0.0.1", 9002)

    def live_broker_count(self) -> int:
        return self.live

    def min_insync_replicas(self) -> int:
        return 2

    def led_offsets_partitions(self) -> dict[int, int]:
        for p in self.led:
            self.logs.get_or_create(TopicPartition(OFFSETS_TOPIC, p), 0)
        return dict(self.led)

    def _log(self, partition):
        return self.logs.get_or_create(TopicPartition(OFFSETS_TOPIC, partition), 0)

    def log_start_offset(self, partition: int) -> int:
        return self._log(partition).log_start_offset

    def log_end_offset(self, partition: int) -> int:
        return self._log(partition).log_end_offset

    def read(self, partition: int, offset: int, max_bytes: int) -> bytes:
        return self._log(partition).read(offset, max_bytes)

    def produce(self, envelope: Envelope, now_ms: int, fx: Effects) -> None:
        [data] = envelope.message.partitions
        if self.fail_with is not None:
            fx.reply(envelope.reply(broker_pb2.ProduceResponse(partitions=[broker_pb2.PartitionProduceResponse(
                topic=data.topic, partition=data.partition, error_code=self.fail_with)])))
            return
        info = self._log(data.partition).append_as_leader(data.records, 0, now_ms)
        envelope.message.partitions[0].records = b""  # keep the info small
        self.held.append(envelope.reply(broker_pb2.ProduceResponse(partitions=[
            broker_pb2.PartitionProduceResponse(topic=data.topic, partition=data.partition,
                                                base_offset=info.base_offset)])))
        if self.auto_commit:
            self.release(fx)

    def release(self, fx: Effects) -> None:
        held, self.held = self.held, []
        fx.replies.extend(held)


class HostHarness:
    def __init__(self, broker: FakeBroker | None = None, **config) -> None:
        config.setdefault("initial_rebalance_delay_ms", 0)
        config.setdefault("offsets_topic_num_partitions", 4)
        self.broker = broker or FakeBroker()
        self.host = GroupCoordinatorHost(GroupConfig(**config), self.broker, "inc")
        self.now_ms = 1000
        self.ids = 0
        self.replies: dict[int, object] = {}
        self.events: list = []
        self.sends: list = []
        self.step_after()

    def _run(self, fx: Effects) -> Effects:
        self.host.after(self.now_ms, fx)
        for reply in fx.replies:
            self.replies[reply.request_id] = reply.message
        self.events += fx.events
        self.sends += fx.sends
        return fx

    def step_after(self) -> None:
        self._run(Effects())

    def call(self, rpc: str, message) -> int:
        self.ids += 1
        fx = Effects()
        self.host.handle(Envelope("client-1", self.broker.node, rpc, message, self.ids), self.now_ms, fx)
        self._run(fx)
        return self.ids

    def commit_writes(self) -> None:
        fx = Effects()
        self.broker.release(fx)
        self._run(fx)

    def tick(self, advance_ms: int = 0) -> None:
        self.now_ms += advance_ms
        fx = Effects()
        self.host.tick(self.now_ms, fx)
        self._run(fx)

    def join_and_sync(self, group: str = "g") -> tuple[str, int]:
        join = group_pb2.JoinGroupRequest(group_id=group, session_timeout_ms=5000, rebalance_timeout_ms=5000,
                                          protocol_type="consumer", client_id="c",
                                          protocols=[group_pb2.JoinGroupProtocol(name="range")])
        first = self.replies[self.call("JoinGroup", join)]
        join.member_id = first.member_id
        answer = self.replies[self.call("JoinGroup", join)]
        assert answer.error_code == 0, answer
        sync = group_pb2.SyncGroupRequest(group_id=group, member_id=answer.member_id, generation_id=answer.generation_id,
                                          assignments=[group_pb2.SyncGroupAssignment(member_id=answer.member_id,
                                                                                     assignment=b"")])
        rid = self.call("SyncGroup", sync)
        return answer.member_id, rid
