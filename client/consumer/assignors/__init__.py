"""Partition assignors (pure, deterministic) and Kafka's strategy negotiation.

``partition.assignment.strategy`` is a list of assignor names in order of preference (Kafka's
default: ``["range", "cooperative-sticky"]``). A consumer offers all of them in its JoinGroup;
the coordinator picks the first one every member supports (each member votes for its favourite
common one). The consumer's rebalance protocol is COOPERATIVE only if every assignor it lists
supports it (Kafka's rule), so the default list rebalances eagerly.
"""

from __future__ import annotations

from typing import Iterable

from client.consumer.assignors.base import (
    Assignment,
    Assignor,
    RebalanceProtocol,
    Subscription,
    decode_assignment,
    decode_subscription,
    encode_assignment,
    encode_subscription,
)
from client.consumer.assignors.simple import RangeAssignor, RoundRobinAssignor
from client.consumer.assignors.sticky import CooperativeStickyAssignor, StickyAssignor

DEFAULT_STRATEGY = ("range", "cooperative-sticky")
_ALIASES = {"round-robin": "roundrobin", "round_robin": "roundrobin", "cooperative_sticky": "cooperative-sticky"}
_ASSIGNORS = {cls.name: cls for cls in (RangeAssignor, RoundRobinAssignor, StickyAssignor, CooperativeStickyAssignor)}


def assignor(name: str) -> Assignor:
    key = _ALIASES.get(name.strip().lower(), name.strip().lower())
    cls = _ASSIGNORS.get(key)
    if cls is None:
        raise ValueError(f"unknown partition assignment strategy {name!r} (known: {', '.join(sorted(_ASSIGNORS))})")
    return cls()


def assignors(names: str | Iterable[str]) -> list[Assignor]:
    """``"range,cooperative-sticky"`` or a list -> assignors, duplicates dropped, order kept."""
    if isinstance(names, str):
        names = [n for n in names.split(",") if n.strip()]
    out: list[Assignor] = []
    for name in names:
        found = assignor(name)
        if found.name not in {a.name for a in out}:
            out.append(found)
    if not out:
        raise ValueError("partition.assignment.strategy must name at least one assignor")
    return out


def rebalance_protocol(chosen: Iterable[Assignor]) -> RebalanceProtocol:
    """COOPERATIVE if every listed assignor supports it, else EAGER (Kafka's ConsumerCoordinator)."""
    chosen = list(chosen)
    if all(RebalanceProtocol.COOPERATIVE in a.supported_protocols for a in chosen):
        return RebalanceProtocol.COOPERATIVE
    return RebalanceProtocol.EAGER


__all__ = [
    "DEFAULT_STRATEGY", "Assignment", "Assignor", "CooperativeStickyAssignor", "RangeAssignor", "RebalanceProtocol",
    "RoundRobinAssignor", "StickyAssignor", "Subscription", "assignor", "assignors", "decode_assignment",
    "decode_subscription", "encode_assignment", "encode_subscription", "rebalance_protocol",
]
