"""Leader elections on demand (ElectLeaders) and the automatic preferred-leader rebalance.

ElectLeaders (Kafka's kafka-leader-election), per partition:

* PREFERRED: ELECTION_NOT_NEEDED when the preferred replica (the first one) already leads;
  otherwise it becomes leader if it is eligible (unfenced, not shutting down) and in the ISR,
  else PREFERRED_LEADER_NOT_AVAILABLE. Stricter than KRaft, which may pick another ISR member
  for a leaderless partition: here a preferred election elects the preferred replica or nothing.
* UNCLEAN: ELECTION_NOT_NEEDED when the partition has a leader; otherwise an eligible ISR member
  if there is one, else the first eligible replica with ISR = {it} (whatever the topic's
  ``unclean.leader.election.enable``: the operator asked for it), else
  ELIGIBLE_LEADERS_NOT_AVAILABLE.
* No partitions named = every partition of every topic, and then (as in Kafka) the partitions
  that needed nothing are left out of the answer. A topic named without partitions means all of
  its partitions, each answered. Unknown topics or partitions: UNKNOWN_TOPIC_OR_PARTITION.

Automatic rebalance (Kafka's ``checkAndTriggerAutoLeaderRebalance``): for each broker B, the
partitions whose preferred replica is B but that B does not lead, over all partitions whose
preferred replica is B, is B's imbalance ratio; when it exceeds
``leader.imbalance.per.broker.percentage`` / 100, each of those partitions with B eligible and in
its ISR gets B back as leader.
"""

from __future__ import annotations

from typing import Collection

from brokerlab.errors import ErrorCode
from brokerlab.sansio import TraceEvent
from brokerlab.v1.controller_pb2 import (
    ELECTION_TYPE_PREFERRED,
    ELECTION_TYPE_UNCLEAN,
    ElectLeadersRequest,
    ElectLeadersResponse,
    ElectLeadersResult,
)
from controller.partition_change import PartitionChange, all_partitions, build_change, elect_leader
from controller.result import ControllerResult
from controller.state import NO_LEADER, ControllerState, PartitionState, TopicState

REASON_PREFERRED = "preferred_election"
REASON_UNCLEAN = "unclean_election"
REASON_AUTO = "auto_leader_rebalance"


def preferred_change(
    topic: TopicState, index: int, partition: PartitionState, eligible: Collection[int], reason: str
) -> tuple[int, PartitionChange | None]:
    """(error code, change) of moving the leadership to the preferred replica."""
    preferred = partition.replicas[0]
    if partition.leader_id == preferred:
        return ErrorCode.ELECTION_NOT_NEEDED, None
    if preferred not in eligible or preferred not in partition.isr:
        return ErrorCode.PREFERRED_LEADER_NOT_AVAILABLE, None
    return ErrorCode.NONE, build_change(topic, index, partition, reason, leader_id=preferred)


def unclean_change(
    topic: TopicState, index: int, partition: PartitionState, eligible: Collection[int]
) -> tuple[int, PartitionChange | None]:
    if partition.leader_id != NO_LEADER:
        return ErrorCode.ELECTION_NOT_NEEDED, None
    election = elect_leader(partition.replicas, partition.isr, eligible, unclean=True)
    if election.leader_id == NO_LEADER:
        return ErrorCode.ELIGIBLE_LEADERS_NOT_AVAILABLE, None
    change = build_change(
        topic, index, partition, REASON_UNCLEAN, leader_id=election.leader_id, isr=election.isr, unclean=election.unclean
    )
    return ErrorCode.NONE, change


_MESSAGES = {
    ErrorCode.ELECTION_NOT_NEEDED: "Leader election not needed for topic partition.",
    ErrorCode.PREFERRED_LEADER_NOT_AVAILABLE: "The preferred leader is not eligible (fenced, shutting down or out of the ISR).",
    ErrorCode.ELIGIBLE_LEADERS_NOT_AVAILABLE: "No eligible replica is available to lead the partition.",
    ErrorCode.UNKNOWN_TOPIC_OR_PARTITION: "This server does not host this topic-partition.",
}


def _targets(state: ControllerState, request: ElectLeadersRequest):
    """(topic name, index, topic or None, partition or None, answer ELECTION_NOT_NEEDED?).

    An unknown topic named without partitions is answered once, as partition -1.
    """
    if not request.topic_partitions:
        for topic, index, partition in all_partitions(state):
            yield topic.name, index, topic, partition, False
        return
    seen = set()
    for entry in request.topic_partitions:
        topic = state.topic_by_name(entry.topic)
        indexes = list(entry.partitions) if entry.partitions else sorted(topic.partitions) if topic else [-1]
        for index in indexes:
            if (entry.topic, index) in seen:
                continue
            seen.add((entry.topic, index))
            partition = topic.partitions.get(index) if topic is not None else None
            yield entry.topic, index, topic, partition, True


def elect_leaders(state: ControllerState, request: ElectLeadersRequest, eligible: Collection[int]) -> ControllerResult:
    result = ControllerResult(ElectLeadersResponse())
    if request.election_type not in (ELECTION_TYPE_PREFERRED, ELECTION_TYPE_UNCLEAN):
        result.response.error_code = ErrorCode.INVALID_REQUEST
        result.response.error_message = f"unknown election type {request.election_type}"
        return result
    preferred = request.election_type == ELECTION_TYPE_PREFERRED
    elected = 0
    for name, index, topic, partition, answer_not_needed in _targets(state, request):
        if topic is None or partition is None:
            code, change = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, None
        elif preferred:
            code, change = preferred_change(topic, index, partition, eligible, REASON_PREFERRED)
        else:
            code, change = unclean_change(topic, index, partition, eligible)
        if code == ErrorCode.ELECTION_NOT_NEEDED and not answer_not_needed:
            continue
        leader_id = partition.leader_id if partition is not None else NO_LEADER
        leader_epoch = partition.leader_epoch if partition is not None else -1
        if change is not None:
            result.records.append(change.record)
            result.events.extend(change.events)
            leader_id = change.record.partition_change.leader_id
            leader_epoch = change.record.partition_change.leader_epoch
            elected += 1
        result.response.results.append(
            ElectLeadersResult(
                topic=name,
                partition=index,
                error_code=int(code),
                error_message=_MESSAGES.get(code, ""),
                leader_id=leader_id,
                leader_epoch=leader_epoch,
            )
        )
    result.events.append(
        TraceEvent(
            "LeadersElected",
            {"election_type": "preferred" if preferred else "unclean", "elected": elected, "answered": len(result.response.results)},
        )
    )
    return result


def imbalance_ratios(state: ControllerState) -> dict[int, tuple[int, int]]:
    """Preferred broker -> (partitions it should lead but does not, partitions it should lead)."""
    ratios: dict[int, tuple[int, int]] = {}
    for _topic, _index, partition in all_partitions(state):
        preferred = partition.replicas[0]
        not_led, total = ratios.get(preferred, (0, 0))
        ratios[preferred] = (not_led + (partition.leader_id != preferred), total + 1)
    return ratios


def is_imbalanced(state: ControllerState) -> bool:
    """Some partition is not led by its preferred replica (the rebalance timer is armed then)."""
    return any(p.leader_id != p.replicas[0] for _t, _i, p in all_partitions(state))


def rebalance_leaders(state: ControllerState, eligible: Collection[int], imbalance_percentage: int) -> ControllerResult:
    """One automatic rebalance pass (no response; records and events only)."""
    result = ControllerResult()
    ratios = imbalance_ratios(state)
    over = {b for b, (not_led, total) in ratios.items() if not_led * 100 > imbalance_percentage * total}
    moved = 0
    for topic, index, partition in all_partitions(state):
        if partition.replicas[0] not in over:
            continue
        code, change = preferred_change(topic, index, partition, eligible, REASON_AUTO)
        if change is not None:
            result.records.append(change.record)
            result.events.extend(change.events)
            moved += 1
    if moved:
        result.events.append(
            TraceEvent(
                "LeadersRebalanced",
                {"partitions": moved, "brokers": sorted(over), "imbalance_percentage": imbalance_percentage},
            )
        )
    return result
