"""The group coordinator's records, their replay, and their encoding in __consumer_offsets.

ARCHITECTURE rule 3: the coordinator's commands return records and ``replay`` is the only code
that changes a group. Two kinds of records:

- durable ones, written to the group's __consumer_offsets partition and replayed again when a
  broker loads that partition: ``GroupMetadataRecord`` (the whole group after a generation's
  assignment, or after it emptied), ``OffsetCommitRecord``, and the tombstones
  ``OffsetTombstone`` / ``GroupTombstone``. Kafka's GroupMetadataValue / OffsetCommitValue.
- transient ones, replayed in memory only: the steps of a rebalance (members joining, the join
  phase completing, members syncing...). Kafka keeps these in memory too; a coordinator that
  takes over a group starts from its last GroupMetadataRecord, and members that were mid-way
  rejoin (ILLEGAL_GENERATION / UNKNOWN_MEMBER_ID).

Encoding: key = ``GroupRecordKey`` (proto), value = ``OffsetCommitValue`` or
``GroupMetadataValue`` (proto), a null value = tombstone; one record batch per write.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Iterable, Union

from brokerlab.ids import TopicPartition
from brokerlab.record_batch import decode_records, encode_batch, iter_headers
from brokerlab.topic_partitions import from_group_topic_partitions, to_group_topic_partitions
from brokerlab.v1 import group_pb2
from node.group.state import (
    CommittedOffset,
    Group,
    GroupState,
    Member,
    PartitionsDiff,
    RebalanceSummary,
    check_transition,
)

# ---------------------------------------------------------------------------- records


@dataclass(frozen=True)
class MemberSpec:
    """Everything a JoinGroup says about a member (and a snapshot adds its assignment)."""

    member_id: str
    group_instance_id: str
    client_id: str
    client_host: str
    rebalance_timeout_ms: int
    session_timeout_ms: int
    protocol_type: str
    protocols: tuple[tuple[str, bytes], ...]
    assignment: bytes = b""


@dataclass(frozen=True)
class MemberJoined:
    """A member (new, or known and rejoining) joined the rebalance in progress."""

    group_id: str
    member: MemberSpec
    is_new: bool


@dataclass(frozen=True)
class StaticMemberReplaced:
    """A static member rejoined with a new member id; the old id is fenced from now on."""

    group_id: str
    old_member_id: str
    member: MemberSpec


@dataclass(frozen=True)
class PendingMemberAdded:
    group_id: str
    member_id: str


@dataclass(frozen=True)
class PendingMemberRemoved:
    group_id: str
    member_id: str


@dataclass(frozen=True)
class MemberRemoved:
    group_id: str
    member_id: str


@dataclass(frozen=True)
class RebalancePrepared:
    """-> PREPARING_REBALANCE (an in-flight assignment is dropped)."""

    group_id: str
    cause: str
    member_id: str
    detail: str
    now_ms: int
    join_deadline_ms: int
    initial_delay_active: bool = False
    initial_delay_limit_ms: int = 0


@dataclass(frozen=True)
class JoinDeadlineExtended:
    """A new group's initial delay was extended by another joiner (or ran out)."""

    group_id: str
    join_deadline_ms: int
    initial_delay_active: bool
    initial_delay_limit_ms: int


@dataclass(frozen=True)
class JoinCompleted:
    """The join phase ended: -> COMPLETING_REBALANCE with a new generation, or -> EMPTY."""

    group_id: str
    generation_id: int
    protocol_name: str
    leader_id: str
    now_ms: int
    sync_deadline_ms: int


@dataclass(frozen=True)
class MemberSynced:
    group_id: str
    member_id: str


@dataclass(frozen=True)
class GroupMetadataRecord:
    """Durable: the group after an assignment (-> STABLE) or with no members (EMPTY)."""

    group_id: str
    protocol_type: str
    generation_id: int
    protocol_name: str
    leader_id: str
    state_timestamp_ms: int
    members: tuple[MemberSpec, ...]
    rebalances: tuple[RebalanceSummary, ...] = field(default=())


@dataclass(frozen=True)
class OffsetCommitRecord:
    group_id: str
    topic_partition: TopicPartition
    offset: CommittedOffset


@dataclass(frozen=True)
class OffsetTombstone:
    group_id: str
    topic_partition: TopicPartition


@dataclass(frozen=True)
class GroupTombstone:
    group_id: str


GroupRecord = Union[
    MemberJoined, StaticMemberReplaced, PendingMemberAdded, PendingMemberRemoved, MemberRemoved,
    RebalancePrepared, JoinDeadlineExtended, JoinCompleted, MemberSynced,
    GroupMetadataRecord, OffsetCommitRecord, OffsetTombstone, GroupTombstone,
]
DURABLE = (GroupMetadataRecord, OffsetCommitRecord, OffsetTombstone, GroupTombstone)


def is_durable(record: GroupRecord) -> bool:
    return isinstance(record, DURABLE)


# ---------------------------------------------------------------------------- replay


def _member(spec: MemberSpec) -> Member:
    return Member(spec.member_id, spec.group_instance_id, spec.client_id, spec.client_host,
                  spec.rebalance_timeout_ms, spec.session_timeout_ms, spec.protocol_type, spec.protocols,
                  spec.assignment)


def _group(groups: dict[str, Group], group_id: str) -> Group:
    group = groups.get(group_id)
    if group is None:
        group = groups[group_id] = Group(group_id)
    return group


def _move(group: Group, state: GroupState, now_ms: int | None = None) -> None:
    if group.state is not state:
        check_transition(group.group_id, group.state, state)
        group.state = state
        if now_ms is not None:
            group.state_timestamp_ms = now_ms


def _set_join_deadline(group: Group, join_deadline_ms: int | None, initial_delay_active: bool,
                       initial_delay_limit_ms: int) -> None:
    """When the join phase ends (None: no join phase), and whether a new group's initial delay
    (group.initial.rebalance.delay.ms, extended by each joiner up to its limit) is running."""
    group.join_deadline_ms = join_deadline_ms
    group.initial_delay_active = initial_delay_active
    group.initial_delay_limit_ms = initial_delay_limit_ms


def replay(groups: dict[str, Group], record: GroupRecord) -> None:
    """Apply one record to the groups of a __consumer_offsets partition."""
    handler = _REPLAY.get(type(record))
    if handler is None:
        raise TypeError(f"not a group record: {record!r}")
    handler(groups, record)


def _replay_member_joined(groups: dict[str, Group], rec: MemberJoined) -> None:
    group = _group(groups, rec.group_id)
    spec = rec.member
    if not group.members:
        group.protocol_type = spec.protocol_type  # the first member sets it (Kafka's Empty group)
    member = group.members.get(spec.member_id)
    if member is None:
        member = group.members[spec.member_id] = _member(spec)
    else:  # a rejoin refreshes what the member says about itself; its assignment stays
        member.client_id, member.client_host = spec.client_id, spec.client_host
        member.rebalance_timeout_ms, member.session_timeout_ms = spec.rebalance_timeout_ms, spec.session_timeout_ms
        member.protocol_type, member.protocols = spec.protocol_type, spec.protocols
    member.joined = True
    member.is_new = rec.is_new
    if spec.group_instance_id:
        group.static_members[spec.group_instance_id] = spec.member_id
    group.pending_members.discard(spec.member_id)


def _replay_static_member_replaced(groups: dict[str, Group], rec: StaticMemberReplaced) -> None:
    group = groups[rec.group_id]
    old = group.members.pop(rec.old_member_id)
    spec = rec.member
    member = _member(spec)
    member.assignment = old.assignment
    member.joined = old.joined
    group.members[spec.member_id] = member
    group.static_members[spec.group_instance_id] = spec.member_id
    if group.leader_id == rec.old_member_id:
        group.leader_id = spec.member_id
    if rec.old_member_id in group.pending_sync:
        group.pending_sync.discard(rec.old_member_id)
        group.pending_sync.add(spec.member_id)


def _replay_pending_member_added(groups: dict[str, Group], rec: PendingMemberAdded) -> None:
    _group(groups, rec.group_id).pending_members.add(rec.member_id)


def _replay_pending_member_removed(groups: dict[str, Group], rec: PendingMemberRemoved) -> None:
    group = groups.get(rec.group_id)
    if group is not None:
        group.pending_members.discard(rec.member_id)


def _replay_member_removed(groups: dict[str, Group], rec: MemberRemoved) -> None:
    group = groups[rec.group_id]
    member = group.members.pop(rec.member_id)
    if member.group_instance_id and group.static_members.get(member.group_instance_id) == rec.member_id:
        del group.static_members[member.group_instance_id]
    group.pending_sync.discard(rec.member_id)
    if group.leader_id == rec.member_id:
        # Kafka hands leadership to another member at once (the join phase re-elects anyway).
        group.leader_id = next(iter(group.members), "")


def _replay_rebalance_prepared(groups: dict[str, Group], rec: RebalancePrepared) -> None:
    group = _group(groups, rec.group_id)
    if group.state is GroupState.COMPLETING_REBALANCE:
        for member in group.members.values():  # the assignment being built is void
            member.assignment = b""
    _move(group, GroupState.PREPARING_REBALANCE, rec.now_ms)
    group.pending_sync.clear()
    group.sync_deadline_ms = None
    _set_join_deadline(group, rec.join_deadline_ms, rec.initial_delay_active, rec.initial_delay_limit_ms)
    group.current_rebalance = RebalanceSummary(group.generation_id + 1, rec.cause, rec.member_id, rec.detail,
                                               rec.now_ms)


def _replay_join_deadline_extended(groups: dict[str, Group], rec: JoinDeadlineExtended) -> None:
    group = groups[rec.group_id]
    _set_join_deadline(group, rec.join_deadline_ms, rec.initial_delay_active, rec.initial_delay_limit_ms)


def _replay_join_completed(groups: dict[str, Group], rec: JoinCompleted) -> None:
    group = groups[rec.group_id]
    group.generation_id = rec.generation_id
    _set_join_deadline(group, None, False, 0)
    if group.current_rebalance is not None:
        group.current_rebalance = replace(group.current_rebalance, generation_id=rec.generation_id)
    if not group.members:
        group.protocol_name = ""
        group.leader_id = ""  # the protocol type stays, as in Kafka (shown by ListGroups)
        _move(group, GroupState.EMPTY, rec.now_ms)
        return
    group.protocol_name = rec.protocol_name
    group.leader_id = rec.leader_id
    for member in group.members.values():
        member.joined = False
        member.is_new = False
    group.pending_sync = set(group.members)
    group.sync_deadline_ms = rec.sync_deadline_ms
    _move(group, GroupState.COMPLETING_REBALANCE, rec.now_ms)


def _replay_member_synced(groups: dict[str, Group], rec: MemberSynced) -> None:
    groups[rec.group_id].pending_sync.discard(rec.member_id)


def _replay_group_metadata(groups: dict[str, Group], rec: GroupMetadataRecord) -> None:
    """Install a snapshot. Live it is written only in COMPLETING_REBALANCE (-> STABLE, members
    that have not synced yet stay pending) and when a group empties; while loading a partition,
    later snapshots simply replace earlier ones."""
    group = _group(groups, rec.group_id)
    target = GroupState.STABLE if rec.members else GroupState.EMPTY
    live = group.state is GroupState.COMPLETING_REBALANCE
    if live:
        _move(group, target)
    else:
        group.state = target
        group.pending_sync = set()
        group.sync_deadline_ms = None
    group.state_timestamp_ms = rec.state_timestamp_ms
    group.protocol_type = rec.protocol_type
    group.generation_id = rec.generation_id
    group.protocol_name = rec.protocol_name
    group.leader_id = rec.leader_id
    group.members = {spec.member_id: _member(spec) for spec in rec.members}
    group.static_members = {m.group_instance_id: m.member_id for m in rec.members if m.group_instance_id}
    _set_join_deadline(group, None, False, 0)
    group.current_rebalance = None
    group.rebalances = list(rec.rebalances)
    group.owners = owners_of(rec.protocol_type, {m.member_id: m.assignment for m in rec.members})


def assigned_partitions(assignment: bytes) -> tuple[TopicPartition, ...]:
    """The partitions in a consumer protocol assignment (empty if it does not parse)."""
    if not assignment:
        return ()
    try:
        parsed = group_pb2.ConsumerProtocolAssignment.FromString(assignment)
    except Exception:  # protobuf's DecodeError: not ours to interpret
        return ()
    return from_group_topic_partitions(parsed.assigned_partitions)


def owners_of(protocol_type: str, assignments: dict[str, bytes]) -> dict[TopicPartition, str]:
    if protocol_type != "consumer":
        return {}
    return {tp: member_id for member_id, data in assignments.items() for tp in assigned_partitions(data)}


def _replay_offset_commit(groups: dict[str, Group], rec: OffsetCommitRecord) -> None:
    _group(groups, rec.group_id).offsets[rec.topic_partition] = rec.offset


def _replay_offset_tombstone(groups: dict[str, Group], rec: OffsetTombstone) -> None:
    group = groups.get(rec.group_id)
    if group is not None:
        group.offsets.pop(rec.topic_partition, None)


def _replay_group_tombstone(groups: dict[str, Group], rec: GroupTombstone) -> None:
    # Live, only an Empty group is deleted (offsets.delete_group); while loading, the tombstone
    # simply ends whatever the log said before.
    group = groups.pop(rec.group_id, None)
    if group is not None:
        group.state = GroupState.DEAD


_REPLAY = {
    MemberJoined: _replay_member_joined,
    StaticMemberReplaced: _replay_static_member_replaced,
    PendingMemberAdded: _replay_pending_member_added,
    PendingMemberRemoved: _replay_pending_member_removed,
    MemberRemoved: _replay_member_removed,
    RebalancePrepared: _replay_rebalance_prepared,
    JoinDeadlineExtended: _replay_join_deadline_extended,
    JoinCompleted: _replay_join_completed,
    MemberSynced: _replay_member_synced,
    GroupMetadataRecord: _replay_group_metadata,
    OffsetCommitRecord: _replay_offset_commit,
    OffsetTombstone: _replay_offset_tombstone,
    GroupTombstone: _replay_group_tombstone,
}


def snapshot(group: Group, now_ms: int, rebalances: Iterable[RebalanceSummary] | None = None,
             assignments: dict[str, bytes] | None = None) -> GroupMetadataRecord:
    """The GroupMetadataRecord for ``group`` as it is (with ``assignments`` installed)."""
    assignments = assignments or {}
    members = tuple(
        MemberSpec(m.member_id, m.group_instance_id, m.client_id, m.client_host, m.rebalance_timeout_ms,
                   m.session_timeout_ms, m.protocol_type, m.protocols, assignments.get(m.member_id, m.assignment))
        for m in group.members.values()
    )
    return GroupMetadataRecord(group.group_id, group.protocol_type, group.generation_id, group.protocol_name,
                               group.leader_id, now_ms, members,
                               tuple(group.rebalances if rebalances is None else rebalances))


# ---------------------------------------------------------------------------- placement


def java_string_hash(text: str) -> int:
    """Java's ``String.hashCode`` (over UTF-16 code units), as a signed 32-bit int."""
    h = 0
    data = text.encode("utf-16-be")
    for i in range(0, len(data), 2):
        h = (31 * h + ((data[i] << 8) | data[i + 1])) & 0xFFFFFFFF
    return h - (1 << 32) if h & 0x80000000 else h


def partition_for(group_id: str, num_partitions: int) -> int:
    """Kafka's ``Utils.abs(groupId.hashCode) % offsets.topic.num.partitions``."""
    h = java_string_hash(group_id)
    return (0 if h == -(1 << 31) else abs(h)) % num_partitions


# ---------------------------------------------------------------------------- encoding


def summary_to_proto(summary: RebalanceSummary) -> group_pb2.RebalanceSummary:
    return group_pb2.RebalanceSummary(
        generation_id=summary.generation_id, cause=summary.cause, member_id=summary.member_id,
        detail=summary.detail, started_ms=summary.started_ms, completed_ms=summary.completed_ms,
        diffs=[group_pb2.MemberPartitionsDiff(member_id=d.member_id,
                                              assigned=to_group_topic_partitions(d.assigned),
                                              revoked=to_group_topic_partitions(d.revoked))
               for d in summary.diffs],
    )


def summary_from_proto(proto: group_pb2.RebalanceSummary) -> RebalanceSummary:
    return RebalanceSummary(
        proto.generation_id, proto.cause, proto.member_id, proto.detail, proto.started_ms, proto.completed_ms,
        tuple(PartitionsDiff(d.member_id, from_group_topic_partitions(d.assigned),
                             from_group_topic_partitions(d.revoked)) for d in proto.diffs),
    )


def _offset_commit_key(group_id: str, tp: TopicPartition) -> group_pb2.GroupRecordKey:
    return group_pb2.GroupRecordKey(offset_commit=group_pb2.OffsetCommitKey(
        group_id=group_id, topic=tp.topic, partition=tp.partition))


def encode_key_value(record: GroupRecord) -> tuple[bytes, bytes | None]:
    """The (key, value) of a durable record; value None is a tombstone."""
    if isinstance(record, OffsetCommitRecord):
        key = _offset_commit_key(record.group_id, record.topic_partition)
        offset = record.offset
        value = group_pb2.OffsetCommitValue(committed_offset=offset.offset, committed_leader_epoch=offset.leader_epoch,
                                            metadata=offset.metadata, commit_timestamp_ms=offset.commit_timestamp_ms)
        return key.SerializeToString(), value.SerializeToString()
    if isinstance(record, OffsetTombstone):
        return _offset_commit_key(record.group_id, record.topic_partition).SerializeToString(), None
    key = group_pb2.GroupRecordKey(group_metadata=group_pb2.GroupMetadataKey(group_id=record.group_id))
    if isinstance(record, GroupTombstone):
        return key.SerializeToString(), None
    if not isinstance(record, GroupMetadataRecord):
        raise TypeError(f"not a durable group record: {record!r}")
    value = group_pb2.GroupMetadataValue(
        protocol_type=record.protocol_type, generation_id=record.generation_id,
        protocol_name=record.protocol_name, leader=record.leader_id,
        current_state_timestamp_ms=record.state_timestamp_ms,
        members=[group_pb2.GroupMemberValue(
            member_id=m.member_id, group_instance_id=m.group_instance_id, client_id=m.client_id,
            client_host=m.client_host, rebalance_timeout_ms=m.rebalance_timeout_ms,
            session_timeout_ms=m.session_timeout_ms,
            protocols=[group_pb2.JoinGroupProtocol(name=n, metadata=md) for n, md in m.protocols],
            assignment=m.assignment) for m in record.members],
        rebalances=[summary_to_proto(s) for s in record.rebalances],
    )
    return key.SerializeToString(), value.SerializeToString()


def decode_key_value(key: bytes, value: bytes | None) -> GroupRecord:
    parsed = group_pb2.GroupRecordKey.FromString(key)
    kind = parsed.WhichOneof("key")
    if kind == "offset_commit":
        k = parsed.offset_commit
        tp = TopicPartition(k.topic, k.partition)
        if value is None:
            return OffsetTombstone(k.group_id, tp)
        v = group_pb2.OffsetCommitValue.FromString(value)
        return OffsetCommitRecord(k.group_id, tp, CommittedOffset(v.committed_offset, v.committed_leader_epoch,
                                                                  v.metadata, v.commit_timestamp_ms))
    if kind == "group_metadata":
        group_id = parsed.group_metadata.group_id
        if value is None:
            return GroupTombstone(group_id)
        v = group_pb2.GroupMetadataValue.FromString(value)
        members = tuple(
            MemberSpec(m.member_id, m.group_instance_id, m.client_id, m.client_host, m.rebalance_timeout_ms,
                       m.session_timeout_ms, v.protocol_type, tuple((p.name, p.metadata) for p in m.protocols),
                       m.assignment)
            for m in v.members
        )
        return GroupMetadataRecord(group_id, v.protocol_type, v.generation_id, v.protocol_name, v.leader,
                                   v.current_state_timestamp_ms, members,
                                   tuple(summary_from_proto(s) for s in v.rebalances))
    raise ValueError("a __consumer_offsets record with an empty key")


def encode_batch_of(records: Iterable[GroupRecord], now_ms: int) -> tuple[bytes, int]:
    """One record batch holding the durable ``records``; returns (batch, record count)."""
    rows = [(now_ms, *encode_key_value(r), ()) for r in records if is_durable(r)]
    if not rows:
        return b"", 0
    return encode_batch(rows), len(rows)


def decode_log_bytes(data: bytes) -> tuple[list[GroupRecord], int]:
    """Records in ``data`` (whole batches read from the log) and the offset after the last one."""
    out: list[GroupRecord] = []
    next_offset = -1
    for position, header in iter_headers(data):
        for record in decode_records(data, position, position + header.size_bytes):
            out.append(decode_key_value(bytes(record.key), None if record.value is None else bytes(record.value)))
        next_offset = header.next_offset
    return out, next_offset
