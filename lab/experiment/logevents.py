"""Cluster events from the nodes' logfmt logs (``ts=... node=... event=Name k=v``) into the history.

Only the events a failover timeline needs are kept (leadership, ISR, fencing, truncation,
recovery, shutdowns, group rebalances, fault-rule changes), and only those about the
experiment's topic when they name a topic (so ``__consumer_offsets`` noise stays out, except
for the group coordinator's own events). Each becomes a ``cluster`` event at the line's
wall-clock time converted to the history's clock.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Iterator

from lab.history import History

KEEP = {
    "BecameLeader", "BecameFollower", "LeaderChanged", "LeaderElected", "UncleanLeaderElected", "LeadersElected",
    "IsrShrunk", "IsrExpanded", "BrokerFenced", "BrokerUnfenced", "BrokerRegistered", "LogTruncated",
    "LogRecovered", "ControlledShutdownStarted", "ControlledShutdownCompleted", "BrokerStarted", "BrokerStopped",
    "BrokerStopping", "ControllerStarted", "ControllerStopped", "GroupRebalanceStarted", "GroupJoinCompleted",
    "GroupMemberRemoved", "GroupMemberJoined", "GroupStaticMemberReplaced", "GroupsLoaded", "GroupsUnloaded",
    "FaultsChanged", "TruncationStalled",
}
_PAIR = re.compile(r'(\w[\w.\-]*)=("(?:[^"\\]|\\.)*"|\S*)')


def parse_line(line: str) -> dict[str, str] | None:
    if "event=" not in line:
        return None
    fields = {}
    for key, value in _PAIR.findall(line):
        if value.startswith('"'):
            value = value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        fields[key] = value
    return fields if "event" in fields and "ts" in fields else None


def epoch_ms(ts: str) -> float | None:
    try:
        return datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc).timestamp() * 1000
    except ValueError:
        return None


def iter_events(text: str) -> Iterator[dict[str, str]]:
    for line in text.splitlines():
        fields = parse_line(line)
        if fields is not None:
            yield fields


def add_cluster_events(history: History, logs: dict[str, str], topic: str, since_epoch_ms: float | None = None,
                       until_epoch_ms: float | None = None) -> int:
    """Append the kept events of every node's log to ``history``; returns how many."""
    added = 0
    for node, text in logs.items():
        for fields in iter_events(text):
            name = fields.get("event")
            if name not in KEEP:
                continue
            if "topic" in fields and fields["topic"] != topic and not name.startswith("Group"):
                continue
            at = epoch_ms(fields["ts"])
            if at is None or (since_epoch_ms is not None and at < since_epoch_ms) or (
                    until_epoch_ms is not None and at > until_epoch_ms):
                continue
            if name == "LogRecovered" and fields.get("truncated_bytes", "0") in ("0", "") and \
                    fields.get("problem", "null") == "null":
                continue  # a clean recovery scan: nothing to show
            extra = {k: v for k, v in fields.items() if k not in ("ts", "level", "node", "event")}
            history.record_event("cluster", name, fields.get("node", node), at_ms=history.epoch_to_ms(at), **extra)
            added += 1
    history.events.sort(key=lambda e: (e.at_ms, e.index))
    return added
