"""The group coordinator of one __consumer_offsets partition (sans-IO): Kafka's classic protocol.

``GroupShard`` holds the groups that hash to its partition. Its commands (``join_group``,
``sync_group``, ``heartbeat``, ``leave_group``, ``expire`` and the offset commands in
``node.group.offsets``) return a ``GroupResult``: the records that happened (replayed on the
spot through ``node.group.records.replay``, the only code that changes a group), the answer to
the request, or a key under which the host parks it, and the answers for requests parked before
(a join phase that completed answers every joiner). The host writes the durable records to the
partition and releases the answers once they are committed.

Liveness deadlines (a member's session timeout, a MEMBER_ID_REQUIRED member's first join) are
timers, not group state: Kafka keeps them in its timer wheel, and a loaded group gets fresh ones.
The join and sync deadlines of a rebalance are group state (they come with its records).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from typing import Any, Callable

from brokerlab.errors import ErrorCode
from brokerlab.ids import TopicPartition
from brokerlab.sansio import TraceEvent
from brokerlab.v1 import group_pb2
from node.group import records as rec
from node.group.config import GroupConfig
from node.group.records import GroupRecord, MemberSpec, replay, snapshot
from node.group.responses import error_response
from node.group.state import (
    MEMBER_JOINED,
    MEMBER_LEFT,
    MEMBER_REJOINED,
    POLL_INTERVAL_EXCEEDED,
    SESSION_TIMEOUT,
    STATIC_MEMBER_REPLACED,
    SUBSCRIPTION_CHANGE,
    Group,
    GroupState,
    Member,
    PartitionsDiff,
    cause_of,
)

ParkKey = tuple[str, str, str]  # ("join" | "sync", group_id, member_id)


@dataclass
class GroupResult:
    records: list[GroupRecord] = field(default_factory=list)
    response: Any = None  # the answer now, unless park_key says to hold the request
    park_key: ParkKey | None = None
    completions: list[tuple[ParkKey, Any]] = field(default_factory=list)
    events: list[TraceEvent] = field(default_factory=list)

    def event(self, name: str, **fields: Any) -> None:
        self.events.append(TraceEvent(name, fields))


def member_ids(seed: str) -> Callable[[str], str]:
    """Kafka's ``prefix-<uuid>`` member ids, made from ``seed`` (the broker incarnation) and a
    counter so they are unique across coordinators and the same in every replayed simulation."""
    counter = 0

    def next_id(prefix: str) -> str:
        nonlocal counter
        counter += 1
        digest = hashlib.blake2b(f"{seed}:{counter}".encode(), digest_size=16).hexdigest()
        return f"{prefix}-{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:32]}"

    return next_id


def _protocols(request) -> tuple[tuple[str, bytes], ...]:
    return tuple((p.name, bytes(p.metadata)) for p in request.protocols)


class GroupShard:
    def __init__(self, partition: int, config: GroupConfig, new_member_id: Callable[[str], str]) -> None:
        self.partition = partition
        self.config = config
        self.new_member_id = new_member_id
        self.groups: dict[str, Group] = {}
        # (group_id, member_id) -> when the member's session ends without a heartbeat.
        self.session_deadlines: dict[tuple[str, str], int] = {}
        # (group_id, member_id) -> when a MEMBER_ID_REQUIRED member must have joined.
        self.pending_deadlines: dict[tuple[str, str], int] = {}
        self._result = GroupResult()

    # ------------------------------------------------------------------ plumbing

    def replay(self, record: GroupRecord) -> None:
        replay(self.groups, record)

    def _begin(self) -> GroupResult:
        self._result = GroupResult()
        return self._result

    def _emit(self, record: GroupRecord) -> None:
        self.replay(record)
        self._result.records.append(record)

    def _touch(self, group_id: str, member: Member, now_ms: int) -> None:
        self.session_deadlines[(group_id, member.member_id)] = now_ms + member.session_timeout_ms

    def _complete(self, key: ParkKey, response: Any) -> None:
        self._result.completions.append((key, response))

    def _error(self, rpc: str, request, code: int, message: str) -> GroupResult:
        self._result.response = error_response(rpc, request, code, message)
        return self._result

    def loaded(self, now_ms: int) -> None:
        """After loading: every member gets a fresh session (Kafka schedules them on load)."""
        for group in self.groups.values():
            for member in group.members.values():
                self._touch(group.group_id, member, now_ms)

    def _validate_member(self, group: Group, member_id: str, instance_id: str) -> tuple[int, str] | None:
        """Kafka's ``validateMember``: static members are checked by instance id first."""
        if instance_id:
            known = group.static_members.get(instance_id)
            if known is None:
                return ErrorCode.UNKNOWN_MEMBER_ID, f"unknown group.instance.id {instance_id!r}"
            if known != member_id:
                return ErrorCode.FENCED_INSTANCE_ID, (
                    f"group.instance.id {instance_id!r} now belongs to member {known}: this member ({member_id}) "
                    "was replaced by a newer one with the same instance id")
        elif member_id not in group.members:
            return ErrorCode.UNKNOWN_MEMBER_ID, f"member {member_id!r} is not in group {group.group_id!r}"
        return None

    # ------------------------------------------------------------------ JoinGroup

    def join_group(self, request: group_pb2.JoinGroupRequest, now_ms: int) -> GroupResult:
        self._begin()
        group_id, member_id = request.group_id, request.member_id
        if not group_id:
            return self._error("JoinGroup", request, ErrorCode.INVALID_GROUP_ID, "the group id must not be empty")
        session = request.session_timeout_ms
        if not self.config.min_session_timeout_ms <= session <= self.config.max_session_timeout_ms:
            return self._error("JoinGroup", request, ErrorCode.INVALID_SESSION_TIMEOUT, (
                f"session.timeout.ms={session} is outside [group.min.session.timeout.ms="
                f"{self.config.min_session_timeout_ms}, group.max.session.timeout.ms="
                f"{self.config.max_session_timeout_ms}]"))
        group = self.groups.get(group_id)
        if member_id and group is None:
            return self._error("JoinGroup", request, ErrorCode.UNKNOWN_MEMBER_ID,
                               f"group {group_id!r} does not exist here (any more)")
        names = [p.name for p in request.protocols]
        if not request.protocol_type or not names or (
            group is not None and not group.supports_protocols(request.protocol_type, names)
        ):
            return self._error("JoinGroup", request, ErrorCode.INCONSISTENT_GROUP_PROTOCOL, (
                f"protocol type {request.protocol_type!r} with {names} shares no protocol with the group's members"
                + (f" (type {group.protocol_type!r}, common {sorted(group.candidate_protocols())})" if group else "")))
        if not member_id:
            return self._join_unknown_member(group, request, now_ms)
        return self._join_known_member(group, request, now_ms)

    def _spec(self, request, member_id: str, assignment: bytes = b"") -> MemberSpec:
        rebalance_timeout = request.rebalance_timeout_ms if request.rebalance_timeout_ms > 0 else request.session_timeout_ms
        return MemberSpec(member_id, request.group_instance_id, request.client_id, request.client_host,
                          rebalance_timeout, request.session_timeout_ms, request.protocol_type,
                          _protocols(request), assignment)

    def _join_unknown_member(self, group: Group | None, request, now_ms: int) -> GroupResult:
        group_id, instance_id = request.group_id, request.group_instance_id
        known_static = group.static_members.get(instance_id) if group is not None and instance_id else None
        size = 0 if group is None else len(group.members) + len(group.pending_members)
        if known_static is None and size >= self.config.max_size:
            return self._error("JoinGroup", request, ErrorCode.GROUP_MAX_SIZE_REACHED,
                               f"group {group_id!r} has reached group.max.size={self.config.max_size}")
        new_id = self.new_member_id(instance_id or request.client_id or "member")
        if instance_id:
            if known_static is None:
                return self._add_member_and_rebalance(group_id, self._spec(request, new_id), request, now_ms)
            return self._replace_static_member(self.groups[group_id], known_static, new_id, request, now_ms)
        # KIP-394: a dynamic member first gets its id, and must come back with it.
        self._emit(rec.PendingMemberAdded(group_id, new_id))
        self.pending_deadlines[(group_id, new_id)] = now_ms + request.session_timeout_ms
        self._result.response = group_pb2.JoinGroupResponse(
            error_code=ErrorCode.MEMBER_ID_REQUIRED, error_message="join again with this member id",
            generation_id=-1, member_id=new_id)
        return self._result

    def _join_known_member(self, group: Group, request, now_ms: int) -> GroupResult:
        group_id, member_id = request.group_id, request.member_id
        if member_id in group.pending_members:
            self.pending_deadlines.pop((group_id, member_id), None)
            return self._add_member_and_rebalance(group_id, self._spec(request, member_id), request, now_ms)
        problem = self._validate_member(group, member_id, request.group_instance_id)
        if problem is not None:
            return self._error("JoinGroup", request, *problem)
        member = group.members[member_id]
        same_protocols = _protocols(request) == member.protocols
        cause, detail = cause_of(request.reason, MEMBER_REJOINED if same_protocols else SUBSCRIPTION_CHANGE)
        if group.is_(GroupState.PREPARING_REBALANCE):
            return self._update_member_and_rebalance(group, request, now_ms, cause, detail)
        if group.is_(GroupState.COMPLETING_REBALANCE):
            if same_protocols:  # a repeated join: give it this generation's answer again
                self._touch(group_id, member, now_ms)
                self._result.response = self._join_response(group, member_id)
                return self._result
            return self._update_member_and_rebalance(group, request, now_ms, cause, detail)
        if group.is_(GroupState.STABLE):
            if group.is_leader(member_id) or not same_protocols:
                return self._update_member_and_rebalance(group, request, now_ms, cause, detail)
            self._touch(group_id, member, now_ms)
            self._result.response = self._join_response(group, member_id)
            return self._result
        return self._error("JoinGroup", request, ErrorCode.UNKNOWN_MEMBER_ID,
                           f"group {group_id!r} is {group.state.value}")

    def _join_response(self, group: Group, member_id: str, skip_assignment: bool = False) -> group_pb2.JoinGroupResponse:
        response = group_pb2.JoinGroupResponse(
            generation_id=group.generation_id, protocol_type=group.protocol_type,
            protocol_name=group.protocol_name, leader=group.leader_id, member_id=member_id,
            skip_assignment=skip_assignment)
        if group.is_leader(member_id):
            for member in group.members.values():
                response.members.add(member_id=member.member_id, group_instance_id=member.group_instance_id,
                                     metadata=member.metadata_for(group.protocol_name))
        return response

    def _add_member_and_rebalance(self, group_id: str, spec: MemberSpec, request, now_ms: int) -> GroupResult:
        self._emit(rec.MemberJoined(group_id, spec, is_new=True))
        group = self.groups[group_id]
        member = group.members[spec.member_id]
        self._result.park_key = ("join", group_id, spec.member_id)
        self._touch(group_id, member, now_ms)
        self._result.event("GroupMemberJoined", group=group_id, member_id=spec.member_id,
                           group_instance_id=spec.group_instance_id, client_id=spec.client_id,
                           client_host=spec.client_host)
        if group.is_(GroupState.EMPTY, GroupState.STABLE, GroupState.COMPLETING_REBALANCE):
            self._prepare_rebalance(group, MEMBER_JOINED, spec.member_id, request.reason or "new member", now_ms)
        elif group.initial_delay_active:
            deadline = min(now_ms + self.config.initial_rebalance_delay_ms, group.initial_delay_limit_ms)
            if deadline > (group.join_deadline_ms or 0):
                self._emit(rec.JoinDeadlineExtended(group_id, deadline, True, group.initial_delay_limit_ms))
        self._maybe_complete_join(group, now_ms)
        return self._result

    def _update_member_and_rebalance(self, group: Group, request, now_ms: int, cause: str, detail: str) -> GroupResult:
        member = group.members[request.member_id]
        self._emit(rec.MemberJoined(group.group_id, self._spec(request, member.member_id, member.assignment),
                                    is_new=False))
        self._result.park_key = ("join", group.group_id, member.member_id)
        self._touch(group.group_id, member, now_ms)
        if group.is_(GroupState.STABLE, GroupState.COMPLETING_REBALANCE):
            self._prepare_rebalance(group, cause, member.member_id, detail, now_ms)
        self._maybe_complete_join(group, now_ms)
        return self._result

    def _replace_static_member(self, group: Group, old_id: str, new_id: str, request, now_ms: int) -> GroupResult:
        """KIP-345: a static member came back (a restart) with a new member id; the old one is fenced."""
        group_id = group.group_id
        old = group.members[old_id]
        spec = self._spec(request, new_id, old.assignment)
        fenced = f"group.instance.id {request.group_instance_id!r} rejoined as {new_id}"
        self._complete(("join", group_id, old_id), group_pb2.JoinGroupResponse(
            error_code=ErrorCode.FENCED_INSTANCE_ID, error_message=fenced, generation_id=-1, member_id=old_id))
        self._complete(("sync", group_id, old_id), group_pb2.SyncGroupResponse(
            error_code=ErrorCode.FENCED_INSTANCE_ID, error_message=fenced))
        self._emit(rec.StaticMemberReplaced(group_id, old_id, spec))
        self.session_deadlines.pop((group_id, old_id), None)
        member = group.members[new_id]
        self._touch(group_id, member, now_ms)
        self._result.event("GroupStaticMemberReplaced", group=group_id, group_instance_id=request.group_instance_id,
                           old_member_id=old_id, member_id=new_id, state=group.state.value)
        if group.is_(GroupState.STABLE) and group.select_protocol() == group.protocol_name:
            # No rebalance: persist the new member id and hand back the current generation. The
            # old leader stays leader in name so it does not reassign a stable group (KIP-814).
            self._emit(snapshot(group, now_ms))
            was_leader = group.is_leader(new_id)
            self._result.response = self._join_response(group, new_id, skip_assignment=was_leader)
            return self._result
        self._emit(rec.MemberJoined(group_id, spec, is_new=False))
        self._result.park_key = ("join", group_id, new_id)
        if group.is_(GroupState.STABLE, GroupState.COMPLETING_REBALANCE):
            self._prepare_rebalance(group, STATIC_MEMBER_REPLACED, new_id, fenced, now_ms)
        self._maybe_complete_join(group, now_ms)
        return self._result

    # ------------------------------------------------------------------ rebalance phases

    def _prepare_rebalance(self, group: Group, cause: str, member_id: str, detail: str, now_ms: int) -> None:
        if group.is_(GroupState.COMPLETING_REBALANCE):
            for mid, member in group.members.items():
                self._complete(("sync", group.group_id, mid), group_pb2.SyncGroupResponse(
                    error_code=ErrorCode.REBALANCE_IN_PROGRESS, error_message=f"rebalance ({cause})"))
                self._touch(group.group_id, member, now_ms)
        timeout = group.max_rebalance_timeout_ms()
        delay = self.config.initial_rebalance_delay_ms
        if group.is_(GroupState.EMPTY) and delay > 0:
            limit = now_ms + max(timeout, delay)
            record = rec.RebalancePrepared(group.group_id, cause, member_id, detail, now_ms,
                                           min(now_ms + delay, limit), True, limit)
        else:
            record = rec.RebalancePrepared(group.group_id, cause, member_id, detail, now_ms, now_ms + timeout)
        self._emit(record)
        self._result.event("GroupRebalanceStarted", group=group.group_id, generation_id=group.generation_id + 1,
                           cause=cause, member_id=member_id, detail=detail, members=len(group.members))

    def _maybe_complete_join(self, group: Group, now_ms: int) -> None:
        if group.is_(GroupState.PREPARING_REBALANCE) and not group.initial_delay_active and group.all_joined():
            self._complete_join(group, now_ms)

    def _complete_join(self, group: Group, now_ms: int) -> None:
        """Kafka's ``onCompleteJoin``: drop dynamic members that did not rejoin, elect a leader
        among the joined, bump the generation and answer every parked JoinGroup."""
        group_id = group.group_id
        for member in [m for m in group.not_joined() if not m.is_static]:
            self._remove_member(group, member.member_id, "did not rejoin within rebalance.timeout.ms")
        joined = [m for m in group.members.values() if m.joined]
        if group.members and not joined:
            # Only static members that have not come back: wait for them (or their session).
            deadline = now_ms + group.max_rebalance_timeout_ms()
            self._emit(rec.JoinDeadlineExtended(group_id, deadline, False, 0))
            return
        leader = group.leader_id if group.leader_id in group.members and group.members[group.leader_id].joined else (
            joined[0].member_id if joined else "")
        protocol = group.select_protocol() if group.members else ""
        self._emit(rec.JoinCompleted(group_id, group.generation_id + 1, protocol, leader, now_ms,
                                     now_ms + group.max_rebalance_timeout_ms()))
        if not group.members:
            summary = group.current_rebalance
            history = list(group.rebalances)
            if summary is not None:
                history.append(replace(summary, completed_ms=now_ms, diffs=self._diffs(group, {})))
            self._emit(snapshot(group, now_ms, history[-self.config.rebalance_history:]))
            self._result.event("GroupEmptied", group=group_id, generation_id=group.generation_id)
            return
        for member in group.members.values():
            self._complete(("join", group_id, member.member_id), self._join_response(group, member.member_id))
            self._touch(group_id, member, now_ms)
        self._result.event("GroupJoinCompleted", group=group_id, generation_id=group.generation_id,
                           protocol=protocol, leader=leader, members=len(group.members))

    def _diffs(self, group: Group, new_owners: dict[TopicPartition, str]) -> tuple[PartitionsDiff, ...]:
        old_owners = group.owners
        by_member: dict[str, tuple[list, list]] = {}
        for tp in sorted(set(old_owners) | set(new_owners)):
            old, new = old_owners.get(tp), new_owners.get(tp)
            if old == new:
                continue
            if old is not None:
                by_member.setdefault(old, ([], []))[1].append(tp)
            if new is not None:
                by_member.setdefault(new, ([], []))[0].append(tp)
        return tuple(PartitionsDiff(m, tuple(a), tuple(r)) for m, (a, r) in sorted(by_member.items()))

    # ------------------------------------------------------------------ SyncGroup

    def sync_group(self, request: group_pb2.SyncGroupRequest, now_ms: int) -> GroupResult:
        self._begin()
        group_id, member_id = request.group_id, request.member_id
        group = self.groups.get(group_id)
        if group is None:
            return self._error("SyncGroup", request, ErrorCode.UNKNOWN_MEMBER_ID, f"group {group_id!r} does not exist")
        problem = self._validate_member(group, member_id, request.group_instance_id)
        if problem is not None:
            return self._error("SyncGroup", request, *problem)
        if request.generation_id != group.generation_id:
            return self._error("SyncGroup", request, ErrorCode.ILLEGAL_GENERATION,
                               f"generation {request.generation_id} is not the group's {group.generation_id}")
        if (request.protocol_type and request.protocol_type != group.protocol_type) or (
            request.protocol_name and request.protocol_name != group.protocol_name
        ):
            return self._error("SyncGroup", request, ErrorCode.INCONSISTENT_GROUP_PROTOCOL,
                               f"the group uses {group.protocol_type}/{group.protocol_name}")
        member = group.members[member_id]
        if group.is_(GroupState.EMPTY):
            return self._error("SyncGroup", request, ErrorCode.UNKNOWN_MEMBER_ID, f"group {group_id!r} is Empty")
        if group.is_(GroupState.PREPARING_REBALANCE):
            return self._error("SyncGroup", request, ErrorCode.REBALANCE_IN_PROGRESS, "the group is rebalancing")
        if member_id in group.pending_sync:
            self._emit(rec.MemberSynced(group_id, member_id))
        self._touch(group_id, member, now_ms)
        if group.is_(GroupState.STABLE):
            self._result.response = group_pb2.SyncGroupResponse(
                protocol_type=group.protocol_type, protocol_name=group.protocol_name, assignment=member.assignment)
            return self._result
        # COMPLETING_REBALANCE: wait for the leader's assignment.
        self._result.park_key = ("sync", group_id, member_id)
        if group.is_leader(member_id):
            self._install_assignment(group, {a.member_id: bytes(a.assignment) for a in request.assignments}, now_ms)
        return self._result

    def _install_assignment(self, group: Group, assignments: dict[str, bytes], now_ms: int) -> None:
        group_id = group.group_id
        assignments = {mid: assignments.get(mid, b"") for mid in group.members}
        new_owners = rec.owners_of(group.protocol_type, assignments)
        summary = group.current_rebalance or rec.RebalanceSummary(group.generation_id, MEMBER_REJOINED, "", "", now_ms)
        summary = replace(summary, generation_id=group.generation_id, completed_ms=now_ms,
                          diffs=self._diffs(group, new_owners))
        history = (group.rebalances + [summary])[-self.config.rebalance_history:]
        self._emit(snapshot(group, now_ms, history, assignments))
        for mid, member in group.members.items():
            if mid in group.pending_sync:
                continue  # its SyncGroup has not come yet: it gets the assignment when it does
            self._complete(("sync", group_id, mid), group_pb2.SyncGroupResponse(
                protocol_type=group.protocol_type, protocol_name=group.protocol_name, assignment=member.assignment))
            self._touch(group_id, member, now_ms)
        self._result.event(
            "GroupRebalanced", group=group_id, generation_id=group.generation_id, protocol=group.protocol_name,
            cause=summary.cause, member_id=summary.member_id, detail=summary.detail,
            duration_ms=now_ms - summary.started_ms, members=len(group.members),
            moved=sum(len(d.assigned) for d in summary.diffs),
            revoked=sum(len(d.revoked) for d in summary.diffs),
            diffs=" ".join(f"{d.member_id}:+{len(d.assigned)}/-{len(d.revoked)}" for d in summary.diffs))

    # ------------------------------------------------------------------ Heartbeat, LeaveGroup

    def heartbeat(self, request: group_pb2.HeartbeatRequest, now_ms: int) -> GroupResult:
        self._begin()
        group = self.groups.get(request.group_id)
        if group is None:
            return self._error("Heartbeat", request, ErrorCode.UNKNOWN_MEMBER_ID,
                               f"group {request.group_id!r} does not exist")
        problem = self._validate_member(group, request.member_id, request.group_instance_id)
        if problem is not None:
            return self._error("Heartbeat", request, *problem)
        if request.generation_id != group.generation_id:
            return self._error("Heartbeat", request, ErrorCode.ILLEGAL_GENERATION,
                               f"generation {request.generation_id} is not the group's {group.generation_id}")
        if group.is_(GroupState.EMPTY):
            return self._error("Heartbeat", request, ErrorCode.UNKNOWN_MEMBER_ID, "the group is Empty")
        self._touch(group.group_id, group.members[request.member_id], now_ms)
        if group.is_(GroupState.PREPARING_REBALANCE):
            return self._error("Heartbeat", request, ErrorCode.REBALANCE_IN_PROGRESS, "the group is rebalancing")
        self._result.response = group_pb2.HeartbeatResponse()
        return self._result

    def leave_group(self, request: group_pb2.LeaveGroupRequest, now_ms: int) -> GroupResult:
        self._begin()
        group = self.groups.get(request.group_id)
        if group is None:
            return self._error("LeaveGroup", request, ErrorCode.UNKNOWN_MEMBER_ID,
                               f"group {request.group_id!r} does not exist")
        response = group_pb2.LeaveGroupResponse()
        for identity in request.members:
            member_id, instance_id = identity.member_id, identity.group_instance_id
            code, message = ErrorCode.NONE, ""
            if instance_id and not member_id:  # admin removal of a static member
                member_id = group.static_members.get(instance_id, "")
                if not member_id:
                    code, message = ErrorCode.UNKNOWN_MEMBER_ID, f"unknown group.instance.id {instance_id!r}"
            elif not instance_id and member_id in group.pending_members:
                self._emit(rec.PendingMemberRemoved(group.group_id, member_id))
                self.pending_deadlines.pop((group.group_id, member_id), None)
                self._maybe_complete_join(group, now_ms)
                member_id = ""
            else:
                problem = self._validate_member(group, member_id, instance_id)
                if problem is not None:
                    code, message = problem
            if code == ErrorCode.NONE and member_id:
                cause, detail = cause_of(identity.reason, MEMBER_LEFT)
                self._remove_member_and_rebalance(group, member_id, cause, detail or "LeaveGroup", now_ms)
            response.members.add(member_id=identity.member_id, group_instance_id=instance_id,
                                 error_code=code, error_message=message)
        self._result.response = response
        return self._result

    def _remove_member(self, group: Group, member_id: str, why: str) -> None:
        key_join, key_sync = ("join", group.group_id, member_id), ("sync", group.group_id, member_id)
        gone = f"member {member_id} was removed from the group: {why}"
        self._complete(key_join, group_pb2.JoinGroupResponse(error_code=ErrorCode.UNKNOWN_MEMBER_ID,
                                                             error_message=gone, generation_id=-1,
                                                             member_id=member_id))
        self._complete(key_sync, group_pb2.SyncGroupResponse(error_code=ErrorCode.UNKNOWN_MEMBER_ID,
                                                             error_message=gone))
        self._emit(rec.MemberRemoved(group.group_id, member_id))
        self.session_deadlines.pop((group.group_id, member_id), None)
        self._result.event("GroupMemberRemoved", group=group.group_id, member_id=member_id, reason=why)

    def _remove_member_and_rebalance(self, group: Group, member_id: str, cause: str, detail: str,
                                     now_ms: int) -> None:
        self._remove_member(group, member_id, f"{cause}: {detail}" if detail else cause)
        if group.is_(GroupState.STABLE, GroupState.COMPLETING_REBALANCE):
            self._prepare_rebalance(group, cause, member_id, detail, now_ms)
        self._maybe_complete_join(group, now_ms)

    # ------------------------------------------------------------------ timers

    def next_deadline_ms(self) -> int | None:
        due = [d for d in self.session_deadlines.values()]
        due += self.pending_deadlines.values()
        for group in self.groups.values():
            if group.join_deadline_ms is not None:
                due.append(group.join_deadline_ms)
            if group.sync_deadline_ms is not None and group.pending_sync:
                due.append(group.sync_deadline_ms)
        return min(due) if due else None

    def expire(self, now_ms: int) -> GroupResult:
        """Everything whose time has come: sessions, MEMBER_ID_REQUIRED members, join and sync phases."""
        self._begin()
        for key, deadline in sorted(self.pending_deadlines.items(), key=lambda kv: kv[1]):
            if deadline <= now_ms:
                del self.pending_deadlines[key]
                group = self.groups.get(key[0])
                if group is not None and key[1] in group.pending_members:
                    self._emit(rec.PendingMemberRemoved(*key))
                    self._maybe_complete_join(group, now_ms)
        for key, _ in sorted(self.session_deadlines.items(), key=lambda kv: kv[1]):
            deadline = self.session_deadlines.get(key)  # earlier removals may have re-armed it
            if deadline is None or deadline > now_ms:
                continue
            group, member = self.groups.get(key[0]), None
            if group is not None:
                member = group.members.get(key[1])
            if member is None:
                self.session_deadlines.pop(key, None)
                continue
            if self._keep_alive(group, member):
                self.session_deadlines.pop(key, None)  # the join or sync answer re-arms it
                continue
            self._remove_member_and_rebalance(group, member.member_id, SESSION_TIMEOUT,
                                              f"no heartbeat within session.timeout.ms={member.session_timeout_ms}",
                                              now_ms)
        for group in list(self.groups.values()):
            if group.is_(GroupState.PREPARING_REBALANCE) and group.join_deadline_ms is not None \
                    and group.join_deadline_ms <= now_ms:
                self._on_join_deadline(group, now_ms)
            if group.sync_deadline_ms is not None and group.sync_deadline_ms <= now_ms and group.pending_sync \
                    and group.is_(GroupState.COMPLETING_REBALANCE, GroupState.STABLE):
                late = sorted(group.pending_sync)
                for member_id in late:
                    self._remove_member_and_rebalance(
                        group, member_id, POLL_INTERVAL_EXCEEDED,
                        f"no SyncGroup within rebalance.timeout.ms={group.members[member_id].rebalance_timeout_ms}"
                        if member_id in group.members else "no SyncGroup in time", now_ms)
        return self._result

    @staticmethod
    def _keep_alive(group: Group, member: Member) -> bool:
        """Kafka's ``shouldKeepAlive``: a member whose JoinGroup or SyncGroup is parked is alive."""
        if group.is_(GroupState.PREPARING_REBALANCE) and member.joined:
            return True
        return group.is_(GroupState.COMPLETING_REBALANCE) and member.member_id not in group.pending_sync

    def _on_join_deadline(self, group: Group, now_ms: int) -> None:
        if group.initial_delay_active:
            # The initial delay ran out with no new joiner: the phase ends like any other.
            self._emit(rec.JoinDeadlineExtended(group.group_id, now_ms + group.max_rebalance_timeout_ms(),
                                                False, 0))
            if group.all_joined():
                self._complete_join(group, now_ms)
            return
        late = [m.member_id for m in group.not_joined() if not m.is_static]
        if late:
            self._result.event("GroupRebalanceTimedOut", group=group.group_id, members=",".join(late),
                               cause=POLL_INTERVAL_EXCEEDED)
        for member_id in group.pending_members.copy():
            self._emit(rec.PendingMemberRemoved(group.group_id, member_id))
            self.pending_deadlines.pop((group.group_id, member_id), None)
        self._complete_join(group, now_ms)
