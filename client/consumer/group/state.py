"""A group member's states (Kafka's ``AbstractCoordinator.MemberState``) and its settings.

==========================  ==================================================================
state                       rule
==========================  ==================================================================
UNJOINED                    Not in a generation. The member joins when the application polls
                            (the join happens on the poll thread, as in Kafka).
                            -> PREPARING_REBALANCE when its JoinGroup goes out.
PREPARING_REBALANCE         JoinGroup in flight. MEMBER_ID_REQUIRED: join again with the id
                            (stays). Errors: -> UNJOINED (and rejoin / rediscover / fail).
                            -> COMPLETING_REBALANCE when the answer names a generation (the
                               leader has assigned; everyone sends SyncGroup).
COMPLETING_REBALANCE        SyncGroup in flight; heartbeats run.
                            -> STABLE with the assignment.
                            -> UNJOINED on REBALANCE_IN_PROGRESS, ILLEGAL_GENERATION,
                               UNKNOWN_MEMBER_ID or a lost coordinator (rejoin).
STABLE                      Owns its assignment; heartbeats every heartbeat.interval.ms.
                            A heartbeat answered REBALANCE_IN_PROGRESS, a metadata or
                            subscription change, or a cooperative revocation asks for a rejoin;
                            the next poll sends it:
                            -> PREPARING_REBALANCE.
                            -> UNJOINED on ILLEGAL_GENERATION / UNKNOWN_MEMBER_ID (partitions
                               lost), LeaveGroup, or poll() not called within
                               max.poll.interval.ms (it leaves the group).
==========================  ==================================================================

The coordinator is found with FindCoordinator and forgotten on NOT_COORDINATOR,
COORDINATOR_NOT_AVAILABLE, a transport error, or no heartbeat answer within the session timeout.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from brokerlab.errors import KafkaError
from client.consumer.assignors import DEFAULT_STRATEGY


class MemberState(enum.Enum):
    UNJOINED = "unjoined"
    PREPARING_REBALANCE = "preparing_rebalance"
    COMPLETING_REBALANCE = "completing_rebalance"
    STABLE = "stable"


TRANSITIONS: dict[MemberState, frozenset[MemberState]] = {
    MemberState.UNJOINED: frozenset({MemberState.PREPARING_REBALANCE}),
    MemberState.PREPARING_REBALANCE: frozenset(
        {MemberState.PREPARING_REBALANCE, MemberState.COMPLETING_REBALANCE, MemberState.UNJOINED}
    ),
    MemberState.COMPLETING_REBALANCE: frozenset({MemberState.STABLE, MemberState.UNJOINED}),
    MemberState.STABLE: frozenset({MemberState.PREPARING_REBALANCE, MemberState.UNJOINED}),
}


@dataclass(frozen=True)
class GroupConfig:
    """Kafka's consumer group settings (same names; brokerlab's defaults from REFERENCE.md)."""

    group_id: str
    group_instance_id: str = ""
    session_timeout_ms: int = 6000
    heartbeat_interval_ms: int = 1000
    max_poll_interval_ms: int = 300_000
    partition_assignment_strategy: tuple[str, ...] = field(default=DEFAULT_STRATEGY)
    enable_auto_commit: bool = True
    auto_commit_interval_ms: int = 5000
    retry_backoff_ms: int = 100
    retry_backoff_max_ms: int = 1000
    request_timeout_ms: int = 30_000
    client_id: str = "consumer"

    def __post_init__(self) -> None:
        if not self.group_id:
            raise ValueError("group_id must not be empty")
        if self.heartbeat_interval_ms >= self.session_timeout_ms:
            raise ValueError("heartbeat.interval.ms must be lower than session.timeout.ms")
        for name in ("session_timeout_ms", "heartbeat_interval_ms", "max_poll_interval_ms",
                     "auto_commit_interval_ms"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")

    @property
    def rebalance_timeout_ms(self) -> int:
        # Kafka's consumer uses max.poll.interval.ms as the rebalance timeout.
        return self.max_poll_interval_ms


class CommitFailedError(KafkaError):
    """The commit cannot succeed: this member is no longer in the generation that owns the
    partitions (Kafka's CommitFailedException). Poll again to rejoin; the new owner may redo
    the records after the last successful commit."""


class RebalanceInProgressError(KafkaError):
    """The group is rebalancing: poll() to complete it, then commit again."""


class FatalGroupError(KafkaError):
    """The member cannot go on (FENCED_INSTANCE_ID, INCONSISTENT_GROUP_PROTOCOL, ...)."""
