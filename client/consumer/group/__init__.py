"""Consumer group membership (sans-IO): the member state machine, joins and syncs, heartbeats,
offset commits and fetches. The asyncio Consumer runs it (client.consumer.group_runner)."""

from client.consumer.group.membership import GroupMembership
from client.consumer.group.state import (
    CommitFailedError,
    FatalGroupError,
    GroupConfig,
    MemberState,
    RebalanceInProgressError,
)

__all__ = ["CommitFailedError", "FatalGroupError", "GroupConfig", "GroupMembership", "MemberState",
           "RebalanceInProgressError"]
