"""Committed offsets and the admin view of one shard's groups (sans-IO).

OffsetCommit writes one ``OffsetCommitRecord`` per partition; the host answers once they are
committed in __consumer_offsets (acks=all), so an acknowledged commit survives the loss of any
single broker. OffsetFetch reads the replayed offsets (the host holds the answer until writes in
flight are committed, so it never shows an offset that could still be lost). DescribeGroups,
ListGroups and DeleteGroups (Empty groups only: NON_EMPTY_GROUP otherwise) live here too.
"""

from __future__ import annotations

from brokerlab.errors import ErrorCode
from brokerlab.ids import TopicPartition
from brokerlab.topic_partitions import partitions_by_topic
from brokerlab.v1 import group_pb2
from node.group import records as rec
from node.group.coordinator import GroupResult, GroupShard
from node.group.state import CommittedOffset, Group, GroupState

# Kafka's offset.metadata.max.bytes.
OFFSET_METADATA_MAX_BYTES = 4096


def commit_offsets(shard: GroupShard, request: group_pb2.OffsetCommitRequest, now_ms: int) -> GroupResult:
    """Kafka's ``handleCommitOffsets``: members commit in their generation; a commit with
    generation -1 and no member id (an admin or a consumer without a group) needs an Empty group."""
    result = shard._begin()
    group = shard.groups.get(request.group_id)
    code, message = _check_commit(shard, group, request)
    if code == ErrorCode.NONE and group is not None and request.member_id in group.members:
        shard._touch(group.group_id, group.members[request.member_id], now_ms)
    response = group_pb2.OffsetCommitResponse()
    for topic in request.topics:
        out = response.topics.add(name=topic.name)
        for p in topic.partitions:
            part_code, part_message = code, message
            if part_code == ErrorCode.NONE and len(p.committed_metadata.encode()) > OFFSET_METADATA_MAX_BYTES:
                part_code = ErrorCode.OFFSET_METADATA_TOO_LARGE
                part_message = f"metadata is longer than {OFFSET_METADATA_MAX_BYTES} bytes"
            elif part_code == ErrorCode.NONE and p.committed_offset < 0:
                part_code, part_message = ErrorCode.INVALID_REQUEST, f"offset {p.committed_offset} is negative"
            if part_code == ErrorCode.NONE:
                offset = CommittedOffset(p.committed_offset, p.committed_leader_epoch, p.committed_metadata, now_ms)
                shard._emit(rec.OffsetCommitRecord(request.group_id, TopicPartition(topic.name, p.partition_index),
                                                   offset))
            out.partitions.add(partition_index=p.partition_index, error_code=part_code, error_message=part_message)
    result.response = response
    return result


def _check_commit(shard: GroupShard, group: Group | None, request) -> tuple[int, str]:
    if not request.group_id:
        return ErrorCode.INVALID_GROUP_ID, "the group id must not be empty"
    simple = request.generation_id < 0 and not request.member_id
    if group is None or group.is_(GroupState.EMPTY):
        if simple:
            return ErrorCode.NONE, ""
        if group is None:
            return ErrorCode.ILLEGAL_GENERATION, f"group {request.group_id!r} has no generation {request.generation_id}"
        return ErrorCode.UNKNOWN_MEMBER_ID, (
            f"member {request.member_id!r} is not in group {request.group_id!r} (it is Empty): the member was "
            "removed, e.g. after missing its session timeout or max.poll.interval.ms")
    if simple:
        return ErrorCode.UNKNOWN_MEMBER_ID, (
            f"group {request.group_id!r} has active members ({group.state.value}): only they may commit")
    problem = shard._validate_member(group, request.member_id, request.group_instance_id)
    if problem is not None:
        return problem
    if request.generation_id != group.generation_id:
        return ErrorCode.ILLEGAL_GENERATION, (
            f"generation {request.generation_id} is not the group's current {group.generation_id}: "
            "the group rebalanced and the partitions may have moved")
    if group.is_(GroupState.COMPLETING_REBALANCE):
        return ErrorCode.REBALANCE_IN_PROGRESS, "the group is completing a rebalance: commit after SyncGroup"
    return ErrorCode.NONE, ""


def fetch_offsets(shard: GroupShard, request: group_pb2.OffsetFetchRequest) -> GroupResult:
    result = shard._begin()
    group = shard.groups.get(request.group_id)
    offsets = group.offsets if group is not None else {}
    response = group_pb2.OffsetFetchResponse()
    if request.topics:
        wanted = [(t.name, list(t.partition_indexes)) for t in request.topics]
    else:
        wanted = list(partitions_by_topic(offsets).items())
    for topic, partitions in wanted:
        out = response.topics.add(name=topic)
        for partition in partitions:
            committed = offsets.get(TopicPartition(topic, partition))
            if committed is None:
                out.partitions.add(partition_index=partition, committed_offset=-1, committed_leader_epoch=-1)
            else:
                out.partitions.add(partition_index=partition, committed_offset=committed.offset,
                                   committed_leader_epoch=committed.leader_epoch, metadata=committed.metadata)
    result.response = response
    return result


def describe_group(shard: GroupShard, group_id: str, coordinator_id: int) -> group_pb2.DescribedGroup:
    group = shard.groups.get(group_id)
    if group is None:
        # Kafka answers a group it does not know as Dead with no members.
        return group_pb2.DescribedGroup(group_id=group_id, group_state=GroupState.DEAD.value,
                                        coordinator_id=coordinator_id)
    out = group_pb2.DescribedGroup(
        group_id=group_id, group_state=group.state.value, protocol_type=group.protocol_type,
        protocol_data=group.protocol_name if group.is_(GroupState.STABLE, GroupState.COMPLETING_REBALANCE) else "",
        coordinator_id=coordinator_id, generation_id=group.generation_id, leader=group.leader_id,
    )
    for member in group.members.values():
        metadata = b""
        if group.protocol_name and group.protocol_name in member.protocol_names():
            metadata = member.metadata_for(group.protocol_name)
        out.members.add(member_id=member.member_id, group_instance_id=member.group_instance_id,
                        client_id=member.client_id, client_host=member.client_host,
                        member_metadata=metadata, member_assignment=member.assignment)
    history = list(group.rebalances)
    if group.current_rebalance is not None:
        history.append(group.current_rebalance)
    out.rebalances.extend(rec.summary_to_proto(s) for s in history)
    return out


def list_groups(shard: GroupShard, states: set[str]) -> list[group_pb2.ListedGroup]:
    return [
        group_pb2.ListedGroup(group_id=g.group_id, protocol_type=g.protocol_type, group_state=g.state.value)
        for g in shard.groups.values()
        if not states or g.state.value in states or g.state.value.lower() in states
    ]


def delete_group(shard: GroupShard, group_id: str) -> tuple[GroupResult, int, str]:
    """Tombstones for the group's offsets and metadata; only for an Empty group."""
    result = shard._begin()
    group = shard.groups.get(group_id)
    if group is None:
        return result, ErrorCode.GROUP_ID_NOT_FOUND, f"group {group_id!r} does not exist"
    if not group.is_(GroupState.EMPTY):
        return result, ErrorCode.NON_EMPTY_GROUP, (
            f"group {group_id!r} is {group.state.value} with {len(group.members)} member(s): stop them first")
    for tp in sorted(group.offsets):
        shard._emit(rec.OffsetTombstone(group_id, tp))
    shard._emit(rec.GroupTombstone(group_id))
    result.event("GroupDeleted", group=group_id)
    return result, ErrorCode.NONE, ""
