"""The broker's group coordinator: one ``GroupShard`` per __consumer_offsets partition it leads.

Sans-IO glue between the broker core and the shards (Kafka's ``CoordinatorRuntime``):

- **Placement.** A group lives in partition ``abs(java_hash(group_id)) % partitions`` of
  __consumer_offsets; its coordinator is that partition's leader. ``FindCoordinator`` answers from
  the metadata image. The first ``FindCoordinator`` that finds no __consumer_offsets makes this
  broker ask the controller to create it (CreateTopics: ``offsets.topic.num.partitions``,
  ``offsets.topic.replication.factor``, retention forever), as Kafka does; until it exists, and
  while fewer brokers than the replication factor are alive, the answer is
  COORDINATOR_NOT_AVAILABLE with the reason.
- **Loading.** On becoming leader of a partition (a new leader epoch) the broker replays it from
  its log, ``offsets.load.buffer.size`` bytes per step; requests for its groups get
  COORDINATOR_LOAD_IN_PROGRESS until the end. On losing leadership the shard is dropped: parked
  and deferred requests get NOT_COORDINATOR, and clients find the new coordinator.
- **Writes.** Durable records go to the partition through the broker's own Produce path with
  acks=all (an internal request; its answer comes when the high watermark passes the batch, or
  with an error). Every answer a shard produces waits until all writes of its partition made so
  far are committed, so no client ever sees state that could still be lost (Kafka's deferred
  event queue). A failed write fails the waiting answers (COORDINATOR_NOT_AVAILABLE /
  NOT_COORDINATOR, Kafka's mapping) and reloads the partition from its log.
"""

from __future__ import annotations

import enum
import itertools
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from brokerlab.errors import ErrorCode, error_name
from brokerlab.ids import CONTROLLER_NODE
from brokerlab.sansio import Effects, Envelope
from brokerlab.v1 import broker_pb2, common_pb2, controller_pb2, group_pb2, metadata_pb2
from node.group.config import OFFSETS_TOPIC, GroupConfig
from node.group.coordinator import GroupResult, GroupShard, ParkKey, member_ids
from node.group.offsets import commit_offsets, delete_group, describe_group, fetch_offsets, list_groups
from node.group.records import decode_log_bytes, encode_batch_of, is_durable, partition_for
from node.group.responses import GROUP_RPCS, error_response, write_error

# Request ids of our own sends live far above the broker lifecycle's.
_FIRST_REQUEST_ID = 1 << 48
CREATE_RETRY_MS = 1000


class BrokerPort(Protocol):
    """What the coordinator needs from its broker (``node.group.broker_port`` wraps BrokerCore)."""

    broker_id: int
    node: str

    def is_ready(self) -> bool: ...
    def metadata_offset(self) -> int: ...
    def offsets_partition_count(self) -> int | None: ...
    def coordinator_endpoint(self, partition: int) -> tuple[int, str, int] | None: ...
    def live_broker_count(self) -> int: ...
    def min_insync_replicas(self) -> int: ...
    def led_offsets_partitions(self) -> dict[int, int]: ...
    def log_start_offset(self, partition: int) -> int: ...
    def log_end_offset(self, partition: int) -> int: ...
    def read(self, partition: int, offset: int, max_bytes: int) -> bytes: ...
    def produce(self, envelope: Envelope, now_ms: int, fx: Effects) -> None: ...


class SlotState(enum.Enum):
    LOADING = "loading"
    ACTIVE = "active"


@dataclass
class Slot:
    partition: int
    leader_epoch: int
    generation: int  # one per load: late answers for an older load are ignored
    shard: GroupShard
    state: SlotState = SlotState.LOADING
    load_offset: int = 0
    load_started_ms: int = 0
    loaded_records: int = 0
    append_seq: int = 0  # writes sent
    committed_seq: int = 0  # writes acknowledged (acks=all)
    parked: dict[ParkKey, Envelope] = field(default_factory=dict)

    @property
    def pending(self) -> bool:
        return self.committed_seq < self.append_seq


@dataclass
class Deferred:
    envelope: Envelope
    response: Any
    waits: tuple[tuple[int, int, int], ...]  # (partition, slot generation, append seq)


class GroupCoordinatorHost:
    def __init__(self, config: GroupConfig, broker: BrokerPort, incarnation_id: str = "") -> None:
        self.config = config
        self.broker = broker
        self.node = f"{broker.node}/groups"  # src of our internal Produce requests
        self.slots: dict[int, Slot] = {}
        self._member_ids = member_ids(f"{broker.broker_id}:{incarnation_id}")
        self._generations = itertools.count(1)
        self._ids = itertools.count(_FIRST_REQUEST_ID)
        self._appends: dict[int, tuple[int, int, int]] = {}  # request id -> (partition, generation, seq)
        self._outbox: list[Envelope] = []
        self._deferred: list[Deferred] = []
        self._seen_metadata: tuple[int, bool] | None = None
        self._create_inflight: int | None = None
        self._create_retry_ms = 0
        self._create_problem = ""
        self._handlers: dict[str, Callable[[Envelope, int, Effects], None]] = {
            rpc: self.handle for rpc in GROUP_RPCS
        }

    def handlers(self) -> dict[str, Callable[[Envelope, int, Effects], None]]:
        return dict(self._handlers)

    # ------------------------------------------------------------------ driving

    def owns(self, envelope: Envelope) -> bool:
        """True for answers to our own sends (CreateTopics to the controller)."""
        return envelope.is_response and envelope.request_id == self._create_inflight and envelope.rpc == "CreateTopics"

    def after(self, now_ms: int, fx: Effects) -> None:
        """Run at the end of every broker step and tick: follow leadership, route internal writes."""
        seen = (self.broker.metadata_offset(), self.broker.is_ready())
        if seen != self._seen_metadata:
            self._seen_metadata = seen
            self._sync_leadership(now_ms, fx)
        while True:
            internal = [r for r in fx.replies if r.dst == self.node]
            if internal:
                fx.replies = [r for r in fx.replies if r.dst != self.node]
            outbox, self._outbox = self._outbox, []
            if not internal and not outbox:
                return
            for reply in internal:
                self._on_append_response(reply, now_ms, fx)
            for envelope in outbox:
                self.broker.produce(envelope, now_ms, fx)

    def tick(self, now_ms: int, fx: Effects) -> None:
        for slot in list(self.slots.values()):
            if slot.state is SlotState.LOADING:
                self._load_step(slot, now_ms, fx)
            else:
                due = slot.shard.next_deadline_ms()
                if due is not None and due <= now_ms:
                    self._apply(slot, slot.shard.expire(now_ms), None, now_ms, fx)
        self.after(now_ms, fx)

    def next_deadline_ms(self) -> int | None:
        due = []
        for slot in self.slots.values():
            if slot.state is SlotState.LOADING:
                return 0  # keep loading at the next turn of the loop
            deadline = slot.shard.next_deadline_ms()
            if deadline is not None:
                due.append(deadline)
        return min(due) if due else None

    # ------------------------------------------------------------------ requests

    def handle(self, envelope: Envelope, now_ms: int, fx: Effects) -> None:
        rpc, request = envelope.rpc, envelope.message
        if rpc == "FindCoordinator":
            fx.reply(envelope.reply(self._find_coordinator(request, now_ms, fx)))
        elif rpc == "ListGroups":
            fx.reply(envelope.reply(self._list_groups(request)))
        elif rpc == "DescribeGroups":
            fx.reply(envelope.reply(self._describe_groups(request)))
        elif rpc == "DeleteGroups":
            self._delete_groups(envelope, now_ms, fx)
        else:
            slot, code, message = self._slot_for(request.group_id)
            if slot is None:
                fx.reply(envelope.reply(error_response(rpc, request, code, message)))
            else:
                shard = slot.shard
                commands = {
                    "JoinGroup": shard.join_group, "SyncGroup": shard.sync_group, "Heartbeat": shard.heartbeat,
                    "LeaveGroup": shard.leave_group,
                    "OffsetCommit": lambda r, t: commit_offsets(shard, r, t),
                    "OffsetFetch": lambda r, t: fetch_offsets(shard, r),
                }
                self._apply(slot, commands[rpc](request, now_ms), envelope, now_ms, fx)
        self.after(now_ms, fx)

    def _slot_for(self, group_id: str) -> tuple[Slot | None, int, str]:
        count = self.broker.offsets_partition_count() if self.broker.is_ready() else None
        if count is None:
            return None, ErrorCode.NOT_COORDINATOR, f"broker {self.broker.broker_id} coordinates no group yet"
        partition = partition_for(group_id, count)
        slot = self.slots.get(partition)
        if slot is None:
            return None, ErrorCode.NOT_COORDINATOR, (
                f"broker {self.broker.broker_id} is not the coordinator of group {group_id!r} "
                f"({OFFSETS_TOPIC}-{partition})")
        if slot.state is SlotState.LOADING:
            return None, ErrorCode.COORDINATOR_LOAD_IN_PROGRESS, (
                f"{OFFSETS_TOPIC}-{partition} is loading ({slot.loaded_records} records so far)")
        return slot, ErrorCode.NONE, ""

    def _apply(self, slot: Slot, result: GroupResult, envelope: Envelope | None, now_ms: int, fx: Effects) -> None:
        durable = [r for r in result.records if is_durable(r)]
        if durable:
            self._append(slot, durable, now_ms)
        parked_now = envelope is not None and result.response is None and result.park_key is not None
        if parked_now:
            old = slot.parked.pop(result.park_key, None)
            if old is not None:
                self._respond(slot, old, error_response(old.rpc, old.message, ErrorCode.REBALANCE_IN_PROGRESS,
                                                        "superseded by a newer request of the same member"), fx)
            slot.parked[result.park_key] = envelope
        for key, response in result.completions:
            parked = slot.parked.pop(key, None)
            if parked is not None:
                self._respond(slot, parked, response, fx)
        if envelope is not None and not parked_now:
            self._respond(slot, envelope, result.response, fx)
        for event in result.events:
            event.fields.setdefault("coordinator_partition", slot.partition)
            fx.events.append(event)

    def _respond(self, slot: Slot, envelope: Envelope, response: Any, fx: Effects) -> None:
        if slot.pending:
            self._deferred.append(Deferred(envelope, response, ((slot.partition, slot.generation, slot.append_seq),)))
        else:
            fx.reply(envelope.reply(response))

    # ------------------------------------------------------------------ FindCoordinator, admin

    def _find_coordinator(self, request: group_pb2.FindCoordinatorRequest, now_ms: int, fx: Effects):
        response = group_pb2.FindCoordinatorResponse()
        for group_id in request.group_ids:
            out = response.coordinators.add(group_id=group_id, node_id=-1)
            count = self.broker.offsets_partition_count() if self.broker.is_ready() else None
            if not self.broker.is_ready():
                out.error_code, out.error_message = ErrorCode.COORDINATOR_NOT_AVAILABLE, "the broker is starting"
            elif not group_id:
                out.error_code, out.error_message = ErrorCode.INVALID_GROUP_ID, "the group id must not be empty"
            elif count is None:
                out.error_code = ErrorCode.COORDINATOR_NOT_AVAILABLE
                out.error_message = self._maybe_create_offsets_topic(now_ms, fx)
            else:
                partition = partition_for(group_id, count)
                found = self.broker.coordinator_endpoint(partition)
                if found is None:
                    out.error_code = ErrorCode.COORDINATOR_NOT_AVAILABLE
                    out.error_message = f"{OFFSETS_TOPIC}-{partition} has no live leader"
                else:
                    out.node_id = found[0]
                    out.endpoint.CopyFrom(common_pb2.Endpoint(host=found[1], port=found[2]))
        return response

    def _maybe_create_offsets_topic(self, now_ms: int, fx: Effects) -> str:
        if self._create_inflight is not None:
            return f"{OFFSETS_TOPIC} is being created"
        if now_ms < self._create_retry_ms:
            return self._create_problem or f"{OFFSETS_TOPIC} does not exist yet"
        replication = self.config.offsets_topic_replication_factor
        live = self.broker.live_broker_count()
        if live < replication:
            problem = (f"{OFFSETS_TOPIC} needs offsets.topic.replication.factor={replication} live brokers, "
                       f"{live} alive")
            if problem != self._create_problem:
                fx.event("OffsetsTopicCreationDeferred", reason=problem)
            self._create_problem, self._create_retry_ms = problem, now_ms + CREATE_RETRY_MS
            return problem
        min_isr = min(self.broker.min_insync_replicas(), replication)
        request = controller_pb2.CreateTopicsRequest(topics=[controller_pb2.CreatableTopic(
            name=OFFSETS_TOPIC, num_partitions=self.config.offsets_topic_num_partitions,
            replication_factor=replication,
            configs=[metadata_pb2.TopicConfig(name="retention.ms", value="-1"),
                     metadata_pb2.TopicConfig(name="min.insync.replicas", value=str(min_isr))])])
        self._create_inflight = next(self._ids)
        fx.send(Envelope(self.broker.node, CONTROLLER_NODE, "CreateTopics", request, self._create_inflight))
        fx.event("OffsetsTopicCreationRequested", partitions=self.config.offsets_topic_num_partitions,
                 replication_factor=replication, min_insync_replicas=min_isr)
        return f"{OFFSETS_TOPIC} is being created"

    def on_response(self, envelope: Envelope, now_ms: int, fx: Effects) -> None:
        self._create_inflight = None
        result = None if envelope.message is None else next(iter(envelope.message.topics), None)
        if result is not None and result.error_code in (ErrorCode.NONE, ErrorCode.TOPIC_ALREADY_EXISTS):
            self._create_problem = ""
            fx.event("OffsetsTopicCreated", topic=OFFSETS_TOPIC, error=error_name(result.error_code))
        else:
            reason = envelope.transport_error or (
                f"{error_name(result.error_code)}: {result.error_message}" if result is not None else "no answer")
            self._create_problem = f"creating {OFFSETS_TOPIC} failed ({reason}); retrying"
            self._create_retry_ms = now_ms + CREATE_RETRY_MS
            fx.event("OffsetsTopicCreationFailed", reason=reason)
        self.after(now_ms, fx)

    def _list_groups(self, request: group_pb2.ListGroupsRequest) -> group_pb2.ListGroupsResponse:
        response = group_pb2.ListGroupsResponse()
        states = set(request.states_filter)
        for slot in sorted(self.slots.values(), key=lambda s: s.partition):
            if slot.state is SlotState.LOADING:
                response.error_code = ErrorCode.COORDINATOR_LOAD_IN_PROGRESS
                response.error_message = f"{OFFSETS_TOPIC}-{slot.partition} is still loading"
                continue
            response.groups.extend(list_groups(slot.shard, states))
        return response

    def _describe_groups(self, request: group_pb2.DescribeGroupsRequest) -> group_pb2.DescribeGroupsResponse:
        response = group_pb2.DescribeGroupsResponse()
        for group_id in request.groups:
            slot, code, message = self._slot_for(group_id)
            if slot is None:
                response.groups.add(group_id=group_id, error_code=code, error_message=message)
            else:
                response.groups.append(describe_group(slot.shard, group_id, self.broker.broker_id))
        return response

    def _delete_groups(self, envelope: Envelope, now_ms: int, fx: Effects) -> None:
        response = group_pb2.DeleteGroupsResponse()
        waits = []
        for group_id in envelope.message.groups_names:
            slot, code, message = self._slot_for(group_id)
            if slot is not None:
                result, code, message = delete_group(slot.shard, group_id)
                self._apply(slot, result, None, now_ms, fx)
                if slot.pending:
                    waits.append((slot.partition, slot.generation, slot.append_seq))
            response.results.add(group_id=group_id, error_code=code, error_message=message)
        if waits:
            self._deferred.append(Deferred(envelope, response, tuple(waits)))
        else:
            fx.reply(envelope.reply(response))

    # ------------------------------------------------------------------ writes

    def _append(self, slot: Slot, records: list, now_ms: int) -> None:
        batch, _ = encode_batch_of(records, now_ms)
        slot.append_seq += 1
        request_id = next(self._ids)
        self._appends[request_id] = (slot.partition, slot.generation, slot.append_seq)
        request = broker_pb2.ProduceRequest(acks=-1, timeout_ms=self.config.offsets_commit_timeout_ms, partitions=[
            broker_pb2.PartitionProduceData(topic=OFFSETS_TOPIC, partition=slot.partition, records=batch)])
        self._outbox.append(Envelope(self.node, self.broker.node, "Produce", request, request_id))

    def _on_append_response(self, reply: Envelope, now_ms: int, fx: Effects) -> None:
        sent = self._appends.pop(reply.request_id, None)
        if sent is None:
            return
        partition, generation, seq = sent
        slot = self.slots.get(partition)
        if slot is None or slot.generation != generation:
            return  # written for a load that is gone
        part = reply.message.partitions[0] if reply.message is not None and reply.message.partitions else None
        code = part.error_code if part is not None else ErrorCode.REQUEST_TIMED_OUT
        if code == ErrorCode.NONE:
            slot.committed_seq = max(slot.committed_seq, seq)
            self._release(fx)
            return
        reason = reply.transport_error or (part.error_message if part is not None else "") or error_name(code)
        fx.event("GroupWriteFailed", coordinator_partition=partition, error=error_name(code), reason=reason)
        self._drop_slot(slot, write_error(code), f"writing to {OFFSETS_TOPIC}-{partition} failed: {reason}", fx)
        self._start_loading(partition, slot.leader_epoch, now_ms, fx)  # the log is the truth: reload

    def _release(self, fx: Effects) -> None:
        kept = []
        for deferred in self._deferred:
            if all(self._committed(*wait) for wait in deferred.waits):
                fx.reply(deferred.envelope.reply(deferred.response))
            else:
                kept.append(deferred)
        self._deferred = kept

    def _committed(self, partition: int, generation: int, seq: int) -> bool:
        slot = self.slots.get(partition)
        return slot is not None and slot.generation == generation and slot.committed_seq >= seq

    # ------------------------------------------------------------------ loading

    def _sync_leadership(self, now_ms: int, fx: Effects) -> None:
        led = self.broker.led_offsets_partitions()
        for partition, slot in list(self.slots.items()):
            epoch = led.get(partition)
            if epoch != slot.leader_epoch:
                self._drop_slot(slot, ErrorCode.NOT_COORDINATOR,
                                f"broker {self.broker.broker_id} is no longer the coordinator of "
                                f"{OFFSETS_TOPIC}-{partition}", fx)
                fx.event("GroupsUnloaded", coordinator_partition=partition, leader_epoch=slot.leader_epoch,
                         new_leader_epoch=-1 if epoch is None else epoch)
        for partition, epoch in sorted(led.items()):
            if partition not in self.slots:
                self._start_loading(partition, epoch, now_ms, fx)

    def _start_loading(self, partition: int, epoch: int, now_ms: int, fx: Effects) -> None:
        slot = Slot(partition, epoch, next(self._generations),
                    GroupShard(partition, self.config, self._member_ids),
                    load_offset=self.broker.log_start_offset(partition), load_started_ms=now_ms)
        self.slots[partition] = slot
        fx.event("GroupsLoadStarted", coordinator_partition=partition, leader_epoch=epoch,
                 log_end_offset=self.broker.log_end_offset(partition))
        self._load_step(slot, now_ms, fx)

    def _load_step(self, slot: Slot, now_ms: int, fx: Effects) -> None:
        end = self.broker.log_end_offset(slot.partition)
        if slot.load_offset < end:
            data = self.broker.read(slot.partition, slot.load_offset, self.config.offsets_load_buffer_size)
            records, next_offset = decode_log_bytes(data)
            for record in records:
                slot.shard.replay(record)
            slot.loaded_records += len(records)
            if next_offset <= slot.load_offset:  # nothing readable: the log moved under us
                next_offset = end
            slot.load_offset = next_offset
        if slot.load_offset >= end:
            slot.state = SlotState.ACTIVE
            slot.shard.loaded(now_ms)
            fx.event("GroupsLoaded", coordinator_partition=slot.partition, leader_epoch=slot.leader_epoch,
                     groups=len(slot.shard.groups), records=slot.loaded_records,
                     duration_ms=now_ms - slot.load_started_ms)

    def _drop_slot(self, slot: Slot, code: int, message: str, fx: Effects) -> None:
        """Forget a shard; everything waiting on it gets ``code``."""
        if self.slots.get(slot.partition) is slot:
            del self.slots[slot.partition]
        for envelope in slot.parked.values():
            fx.reply(envelope.reply(error_response(envelope.rpc, envelope.message, code, message)))
        slot.parked.clear()
        kept = []
        for deferred in self._deferred:
            if any(p == slot.partition and g == slot.generation for p, g, _ in deferred.waits):
                env = deferred.envelope
                fx.reply(env.reply(error_response(env.rpc, env.message, code, message)))
            else:
                kept.append(deferred)
        self._deferred = kept
