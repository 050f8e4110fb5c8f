"""The classic consumer group as the coordinator keeps it: states, members, offsets.

Kafka's ``ClassicGroupState`` and ``ClassicGroup``. The objects here are mutated only by
``node.group.records.replay`` (ARCHITECTURE rule 3); the coordinator reads them to decide
which records to write.

=====================  =====================================================================
state                  rule
=====================  =====================================================================
EMPTY                  No members (a group that only has committed offsets, or a new one).
                       -> PREPARING_REBALANCE when a member joins.
                       -> DEAD when the group is deleted (DeleteGroups).
PREPARING_REBALANCE    A new generation is being formed: members must (re)join. The phase
                       ends when every known member has joined and no MEMBER_ID_REQUIRED
                       answer is pending, or at the join deadline (the largest
                       rebalance.timeout.ms of the members; for a new group the initial
                       delay, extended per joiner up to that timeout). Members that did not
                       rejoin by then are removed (static members stay: only their session
                       timeout removes them).
                       -> COMPLETING_REBALANCE when the phase ends with members (generation+1,
                          a protocol chosen, a leader named).
                       -> EMPTY when it ends with none (generation+1).
COMPLETING_REBALANCE   Members got their JoinGroup answer; the leader computes the assignment
                       and sends it with its SyncGroup; followers' SyncGroups wait for it.
                       -> STABLE when the leader's assignment is written (GroupMetadataRecord).
                       -> PREPARING_REBALANCE when a member joins, leaves or times out, or the
                          sync deadline (rebalance timeout) passes with members not synced.
STABLE                 Every member has its assignment and heartbeats.
                       -> PREPARING_REBALANCE when a member joins, the leader rejoins, a member
                          rejoins with other protocols, leaves or misses its session timeout.
DEAD                   Gone; requests get COORDINATOR_NOT_AVAILABLE (or UNKNOWN_MEMBER_ID).
                       Final.
=====================  =====================================================================

Loading a __consumer_offsets partition installs each group's last GroupMetadataRecord as a
snapshot: STABLE if it has members, else EMPTY (as Kafka's ``loadGroup``). Unloading (the broker
lost the partition's leadership) drops the partition's groups from this broker altogether, where
Kafka marks them DEAD first: their waiting requests get NOT_COORDINATOR either way.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Iterable

from brokerlab.ids import TopicPartition


class GroupState(enum.Enum):
    EMPTY = "Empty"
    PREPARING_REBALANCE = "PreparingRebalance"
    COMPLETING_REBALANCE = "CompletingRebalance"
    STABLE = "Stable"
    DEAD = "Dead"


# Kafka also allows every state -> DEAD (its unload); brokerlab drops unloaded groups instead,
# so only an Empty group dies (DeleteGroups).
TRANSITIONS: dict[GroupState, frozenset[GroupState]] = {
    GroupState.EMPTY: frozenset({GroupState.PREPARING_REBALANCE, GroupState.DEAD}),
    GroupState.PREPARING_REBALANCE: frozenset({GroupState.COMPLETING_REBALANCE, GroupState.EMPTY}),
    GroupState.COMPLETING_REBALANCE: frozenset({GroupState.STABLE, GroupState.PREPARING_REBALANCE}),
    GroupState.STABLE: frozenset({GroupState.PREPARING_REBALANCE}),
    GroupState.DEAD: frozenset(),
}


class InvalidTransition(AssertionError):
    pass


def check_transition(group_id: str, old: GroupState, new: GroupState) -> None:
    if new not in TRANSITIONS[old]:
        raise InvalidTransition(f"group {group_id!r}: no transition {old.name} -> {new.name}")


# Why a generation happened (RebalanceSummary.cause).
MEMBER_JOINED = "member-joined"
MEMBER_REJOINED = "member-rejoined"
MEMBER_LEFT = "member-left"
SESSION_TIMEOUT = "session-timeout"
POLL_INTERVAL_EXCEEDED = "poll-interval-exceeded"
METADATA_CHANGE = "metadata-change"
SUBSCRIPTION_CHANGE = "subscription-change"
STATIC_MEMBER_REPLACED = "static-member-replaced"
ASSIGNMENT_STORE_FAILED = "assignment-store-failed"
# Causes a client may name at the start of its JoinGroup/LeaveGroup reason ("metadata-change: ...").
CLIENT_CAUSES = frozenset({METADATA_CHANGE, SUBSCRIPTION_CHANGE, POLL_INTERVAL_EXCEEDED, MEMBER_LEFT,
                           MEMBER_REJOINED})


def cause_of(reason: str, default: str) -> tuple[str, str]:
    """``(cause, detail)`` from a client's reason: a known cause before the first ':' wins."""
    head, sep, rest = reason.partition(":")
    if sep and head.strip() in CLIENT_CAUSES:
        return head.strip(), rest.strip()
    return default, reason.strip()


@dataclass(frozen=True)
class PartitionsDiff:
    member_id: str
    assigned: tuple[TopicPartition, ...]
    revoked: tuple[TopicPartition, ...]


@dataclass(frozen=True)
class RebalanceSummary:
    """One generation: why it started, when it was installed, and what moved."""

    generation_id: int
    cause: str
    member_id: str
    detail: str
    started_ms: int
    completed_ms: int = 0
    diffs: tuple[PartitionsDiff, ...] = ()


@dataclass(frozen=True)
class CommittedOffset:
    offset: int
    leader_epoch: int
    metadata: str
    commit_timestamp_ms: int


@dataclass
class Member:
    member_id: str
    group_instance_id: str  # "" for a dynamic member
    client_id: str
    client_host: str
    rebalance_timeout_ms: int
    session_timeout_ms: int
    protocol_type: str
    protocols: tuple[tuple[str, bytes], ...]  # (name, metadata) in the member's order of preference
    assignment: bytes = b""
    # Joined the rebalance in progress (its JoinGroup waits for the phase to end).
    joined: bool = False
    # First join of this member, still in the rebalance that admitted it (KIP-394).
    is_new: bool = False

    @property
    def is_static(self) -> bool:
        return bool(self.group_instance_id)

    def protocol_names(self) -> list[str]:
        return [name for name, _ in self.protocols]

    def metadata_for(self, protocol: str) -> bytes:
        for name, metadata in self.protocols:
            if name == protocol:
                return metadata
        raise KeyError(f"member {self.member_id} does not support protocol {protocol!r}")

    def vote(self, candidates: set[str]) -> str:
        """The member's most preferred protocol among ``candidates`` (Kafka's ``vote``)."""
        for name, _ in self.protocols:
            if name in candidates:
                return name
        raise KeyError(f"member {self.member_id} supports none of {sorted(candidates)}")


@dataclass
class Group:
    group_id: str
    state: GroupState = GroupState.EMPTY
    state_timestamp_ms: int = 0
    generation_id: int = 0
    protocol_type: str = ""
    protocol_name: str = ""
    leader_id: str = ""
    members: dict[str, Member] = field(default_factory=dict)
    static_members: dict[str, str] = field(default_factory=dict)  # group_instance_id -> member_id
    # Member ids handed out with MEMBER_ID_REQUIRED whose first real join is awaited.
    pending_members: set[str] = field(default_factory=set)
    # Members of the current generation that have not sent SyncGroup yet (COMPLETING_REBALANCE,
    # and STABLE until they do).
    pending_sync: set[str] = field(default_factory=set)
    # PREPARING_REBALANCE ends at this time at the latest (None in other states).
    join_deadline_ms: int | None = None
    # While a new group's initial delay runs, each joiner pushes join_deadline_ms out by
    # group.initial.rebalance.delay.ms, but never past initial_delay_limit_ms.
    initial_delay_active: bool = False
    initial_delay_limit_ms: int = 0
    # Members still in pending_sync at this time are removed (Kafka's pending-sync timeout).
    sync_deadline_ms: int | None = None
    offsets: dict[TopicPartition, CommittedOffset] = field(default_factory=dict)
    # Who owns what in the last installed assignment (consumer protocol only): for the diffs.
    owners: dict[TopicPartition, str] = field(default_factory=dict)
    # The rebalance in progress (PREPARING/COMPLETING) and the recent completed ones, newest last.
    current_rebalance: RebalanceSummary | None = None
    rebalances: list[RebalanceSummary] = field(default_factory=list)

    # ---- queries --------------------------------------------------------------------------

    def is_(self, *states: GroupState) -> bool:
        return self.state in states

    def has_member(self, member_id: str) -> bool:
        return member_id in self.members

    def is_leader(self, member_id: str) -> bool:
        return self.leader_id == member_id

    def all_joined(self) -> bool:
        """Every member has joined and no MEMBER_ID_REQUIRED answer awaits its second join."""
        return not self.pending_members and all(m.joined for m in self.members.values())

    def max_rebalance_timeout_ms(self) -> int:
        return max((m.rebalance_timeout_ms for m in self.members.values()), default=0)

    def candidate_protocols(self, extra: Iterable[str] | None = None) -> set[str]:
        """Protocols every member (and ``extra``, a joining member's list) supports."""
        sets = [set(m.protocol_names()) for m in self.members.values()]
        if extra is not None:
            sets.append(set(extra))
        return set.intersection(*sets) if sets else set()

    def supports_protocols(self, protocol_type: str, protocols: list[str]) -> bool:
        """Kafka's ``supportsProtocols``: a new member must share the type and one protocol."""
        if not protocol_type or not protocols:
            return False
        if not self.members:
            return True
        return protocol_type == self.protocol_type and bool(self.candidate_protocols(protocols))

    def select_protocol(self) -> str:
        """Each member votes for its favourite common protocol; most votes wins.

        Ties go to the protocol the leader-to-be (first member) prefers, so the choice is
        deterministic. With identical preference lists this is "the first strategy all
        members support".
        """
        candidates = self.candidate_protocols()
        if not candidates:
            raise ValueError(f"group {self.group_id!r}: no protocol common to all members")
        votes: dict[str, int] = {}
        for member in self.members.values():
            choice = member.vote(candidates)
            votes[choice] = votes.get(choice, 0) + 1
        first = next(iter(self.members.values()))
        order = {name: i for i, name in enumerate(first.protocol_names())}
        return max(votes, key=lambda name: (votes[name], -order.get(name, len(order))))

    def not_joined(self) -> list[Member]:
        return [m for m in self.members.values() if not m.joined]

    def describe_state(self) -> str:
        return self.state.value
