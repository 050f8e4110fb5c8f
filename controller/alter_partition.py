"""AlterPartition: a partition leader asks to shrink or expand its ISR (KIP-497).

Checks, in the order of Kafka's ``ReplicationControlManager.validateAlterPartitionData``:

1. request: the sender's ``broker_epoch`` is its current registration, else STALE_BROKER_EPOCH
   (for the whole request; every item carries it too);
2. per item: the topic and partition exist (UNKNOWN_TOPIC_OR_PARTITION); the sender's
   ``leader_epoch`` is the current one (older: FENCED_LEADER_EPOCH; newer than the controller
   knows: UNKNOWN_LEADER_EPOCH, where Kafka says NOT_CONTROLLER); the sender is the current leader
   (NOT_LEADER_OR_FOLLOWER, Kafka says INVALID_REQUEST); ``partition_epoch`` is the current one
   (INVALID_UPDATE_VERSION);
3. the new ISR is a non-empty set of the partition's replicas that holds the leader
   (INVALID_REQUEST, as Kafka), and every member other than the leader is registered, unfenced
   and not in controlled shutdown (INELIGIBLE_REPLICA, KIP-841).

An accepted change writes one PartitionChangeRecord (``isr_changed``, partition epoch + 1,
reason ``isr_shrink``/``isr_expand``/``isr_change``) and answers the new state; an ISR equal (as
a set) to the current one writes nothing and answers the current state. If the leader is in
controlled shutdown and the new ISR holds an eligible member, the same record also moves the
leadership there (leader epoch + 1, reason ``controlled_shutdown``) and the answer is
NEW_LEADER_ELECTED with the new state, as Kafka answers when an ISR change elects a new leader.
The record is the truth: brokers learn the change from the metadata journal.
"""

from __future__ import annotations

from typing import Collection

from brokerlab.errors import ErrorCode
from brokerlab.v1.controller_pb2 import (
    AlterPartitionItem,
    AlterPartitionRequest,
    AlterPartitionResponse,
    AlterPartitionResult,
)
from controller.partition_change import build_change
from controller.result import ControllerResult
from controller.state import ControllerState, PartitionState, TopicState


class Rejected(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def alter_partition(state: ControllerState, request: AlterPartitionRequest, shutting_down: Collection[int]) -> ControllerResult:
    result = ControllerResult(AlterPartitionResponse())
    broker = state.brokers.get(request.broker_id)
    if broker is None or broker.broker_epoch != request.broker_epoch:
        message = (
            f"broker {request.broker_id} is not registered"
            if broker is None
            else f"broker {request.broker_id} has epoch {broker.broker_epoch}, not {request.broker_epoch}"
        )
        result.response.error_code = ErrorCode.STALE_BROKER_EPOCH
        result.response.error_message = message
        for item in request.partitions:
            result.response.partitions.append(_error(item, ErrorCode.STALE_BROKER_EPOCH, message))
        return result
    seen: set[tuple[str, int]] = set()
    for item in request.partitions:
        key = (item.topic, item.partition)
        if key in seen:
            result.response.partitions.append(_error(item, ErrorCode.INVALID_REQUEST, "partition named twice in one request"))
            continue
        seen.add(key)
        try:
            topic, partition = _validate(state, request.broker_id, item, shutting_down)
        except Rejected as rejected:
            result.response.partitions.append(_error(item, rejected.code, rejected.message))
            continue
        result.response.partitions.append(_apply(result, topic, item, partition, request.broker_id, shutting_down))
    return result


def _validate(
    state: ControllerState, sender: int, item: AlterPartitionItem, shutting_down: Collection[int]
) -> tuple[TopicState, PartitionState]:
    topic = state.topic_by_name(item.topic)
    partition = topic.partitions.get(item.partition) if topic is not None else None
    if topic is None or partition is None:
        raise Rejected(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, "This server does not host this topic-partition.")
    if item.leader_epoch < partition.leader_epoch:
        raise Rejected(ErrorCode.FENCED_LEADER_EPOCH, f"leader epoch {item.leader_epoch} is older than {partition.leader_epoch}")
    if item.leader_epoch > partition.leader_epoch:
        raise Rejected(ErrorCode.UNKNOWN_LEADER_EPOCH, f"leader epoch {item.leader_epoch} is newer than {partition.leader_epoch}")
    if sender != partition.leader_id:
        raise Rejected(ErrorCode.NOT_LEADER_OR_FOLLOWER, f"broker {sender} is not the leader (the leader is {partition.leader_id})")
    if item.partition_epoch != partition.partition_epoch:
        raise Rejected(
            ErrorCode.INVALID_UPDATE_VERSION, f"partition epoch {item.partition_epoch} is not the current {partition.partition_epoch}"
        )
    new_isr = list(item.new_isr)
    if not new_isr or len(set(new_isr)) != len(new_isr) or not set(new_isr) <= set(partition.replicas):
        raise Rejected(ErrorCode.INVALID_REQUEST, f"ISR {new_isr} is not a set of the replicas {partition.replicas}")
    if sender not in new_isr:
        raise Rejected(ErrorCode.INVALID_REQUEST, f"ISR {new_isr} does not hold the leader {sender}")
    for broker_id in new_isr:
        if broker_id == sender:
            continue
        broker = state.brokers.get(broker_id)
        why = (
            "not registered" if broker is None
            else "fenced" if broker.fenced
            else "shutting down" if broker_id in shutting_down
            else None
        )
        if why is not None:
            raise Rejected(ErrorCode.INELIGIBLE_REPLICA, f"replica {broker_id} is {why}")
    return topic, partition


def _apply(
    result: ControllerResult,
    topic: TopicState,
    item: AlterPartitionItem,
    partition: PartitionState,
    sender: int,
    shutting_down: Collection[int],
) -> AlterPartitionResult:
    new_isr = list(item.new_isr)
    if set(new_isr) == set(partition.isr):
        return _state(item, partition.leader_id, partition.leader_epoch, partition.isr, partition.partition_epoch)
    code = ErrorCode.NONE
    if sender in shutting_down and len(new_isr) > 1:
        # The leader is leaving and someone caught up: hand the leadership over in the same record.
        remaining = [b for b in new_isr if b != sender]
        leader_id = next(b for b in partition.replicas if b in remaining)
        change = build_change(topic, item.partition, partition, "controlled_shutdown", leader_id=leader_id, isr=remaining)
        code = ErrorCode.NEW_LEADER_ELECTED
    else:
        removed = set(partition.isr) - set(new_isr)
        added = set(new_isr) - set(partition.isr)
        reason = "isr_shrink" if removed and not added else "isr_expand" if added and not removed else "isr_change"
        change = build_change(topic, item.partition, partition, reason, isr=new_isr)
    assert change is not None
    result.records.append(change.record)
    result.events.extend(change.events)
    record = change.record.partition_change
    isr = list(record.isr) if record.isr_changed else partition.isr
    return _state(item, record.leader_id, record.leader_epoch, isr, record.partition_epoch, code)


def _state(item, leader_id: int, leader_epoch: int, isr, partition_epoch: int, code: int = ErrorCode.NONE) -> AlterPartitionResult:
    return AlterPartitionResult(
        topic=item.topic,
        partition=item.partition,
        error_code=int(code),
        leader_id=leader_id,
        leader_epoch=leader_epoch,
        isr=list(isr),
        partition_epoch=partition_epoch,
    )


def _error(item: AlterPartitionItem, code: int, message: str) -> AlterPartitionResult:
    return AlterPartitionResult(
        topic=item.topic, partition=item.partition, error_code=int(code), error_message=message, leader_id=-1, leader_epoch=-1, partition_epoch=-1
    )
