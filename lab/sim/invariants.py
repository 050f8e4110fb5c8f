"""Invariants checked after every simulated event.

An invariant is any callable ``(cluster) -> None`` that raises ``InvariantViolation``. Stateful
ones are small classes: they remember what they saw (a leader per epoch, a log end offset) and
read the trace entries added since their last call to learn about legitimate changes (a
recorded truncation, a power loss). Cheap checks only: they run tens of thousands of times.
"""

from __future__ import annotations

from typing import Any, Iterator

from brokerlab.ids import TopicPartition

from .cluster import InvariantViolation, SimCluster

# Trace events after which a partition's log end offset may legitimately go down.
TRUNCATION_EVENTS = frozenset({"LogTruncated", "LogRecovered", "LogDeleted", "PartitionDeleted", "LogCreated"})


def broker_cores(cluster: SimCluster) -> Iterator[tuple[str, Any]]:
    for name, node in cluster.nodes.items():
        if name.startswith("broker-") and node.core is not None:
            yield name, node.core


class ChangedNodes:
    """Which running brokers ran (stepped, ticked, booted) since the previous call: the only
    ones whose state can have changed, so the only ones an invariant needs to look at again."""

    def __init__(self) -> None:
        self._marks: dict[str, tuple[int, int]] = {}

    def __call__(self, cluster: SimCluster) -> Iterator[tuple[str, Any]]:
        for name, core in broker_cores(cluster):
            node = cluster.nodes[name]
            mark = (node.incarnation, node.runs)
            if self._marks.get(name) != mark:
                self._marks[name] = mark
                yield name, core


class TraceCursor:
    """Reads the trace entries added since the previous call."""

    def __init__(self) -> None:
        self._seen = 0

    def new_entries(self, cluster: SimCluster) -> list:
        entries = cluster.trace.entries
        fresh = entries[self._seen :]
        self._seen = len(entries)
        return fresh


class SingleLeaderPerEpoch:
    """At most one leader per partition per leader epoch.

    Two views are checked: every broker's metadata image (two images must never name different
    leaders for the same topic id, partition and epoch, even at different times), and the
    brokers' own roles (two brokers must never both act as leader of one partition in one epoch).
    """

    __name__ = "single_leader_per_epoch"

    def __init__(self) -> None:
        self.leaders: dict[tuple[str, int, int], tuple[int, str]] = {}
        self._applied: dict[str, tuple[int, int]] = {}  # node -> (incarnation, image offset) checked

    def __call__(self, cluster: SimCluster) -> None:
        acting: dict[tuple[str, int, int], str] = {}
        for name, core in broker_cores(cluster):
            image = core.image
            mark = (cluster.nodes[name].incarnation, image.last_applied_offset)
            if self._applied.get(name) != mark:
                self._applied[name] = mark
                self._check_image(name, image)
            for tp, replica in core.replicas.items():
                if replica.is_leader:
                    key = (tp.topic, tp.partition, replica.leader_epoch)
                    other = acting.setdefault(key, name)
                    if other != name:
                        raise InvariantViolation(
                            f"{other} and {name} both act as leader of {tp} in leader epoch {replica.leader_epoch}"
                        )

    def _check_image(self, name: str, image: Any) -> None:
        for topic in image.topics_by_id.values():
            for partition in topic.partitions.values():
                if partition.leader_id < 0:
                    continue
                key = (topic.topic_id, partition.partition, partition.leader_epoch)
                seen = self.leaders.setdefault(key, (partition.leader_id, name))
                if seen[0] != partition.leader_id:
                    raise InvariantViolation(
                        f"{topic.name}-{partition.partition} leader epoch {partition.leader_epoch}: "
                        f"{seen[1]}'s image says leader {seen[0]}, {name}'s says {partition.leader_id}"
                    )


class LogEndOffsetsMonotonic:
    """A replica's log end offset never goes down, except by a recorded truncation.

    Recorded means: a truncation/recovery/deletion event for that partition on that node, or a
    power loss of the node (``NodeCrashed`` with ``lose_unflushed``), after which its recovery
    sets a new baseline.
    """

    __name__ = "log_end_offsets_monotonic"

    def __init__(self) -> None:
        self.log_end_offsets: dict[tuple[str, TopicPartition], int] = {}
        self._cursor = TraceCursor()
        self._changed = ChangedNodes()

    def __call__(self, cluster: SimCluster) -> None:
        for entry in self._cursor.new_entries(cluster):
            if entry.name == "NodeCrashed" and entry.get("lose_unflushed"):
                self._forget(entry.node)
            elif entry.name in TRUNCATION_EVENTS:
                topic, partition = entry.get("topic"), entry.get("partition")
                if topic is None or partition is None:
                    self._forget(entry.node)
                else:
                    self.log_end_offsets.pop((entry.node, TopicPartition(topic, partition)), None)
        for name, core in self._changed(cluster):
            manager = core.log_manager
            for tp in manager.partitions():
                log = manager.get(tp)
                if log is None:
                    continue
                leo = log.log_end_offset
                key = (name, tp)
                before = self.log_end_offsets.get(key)
                if before is not None and leo < before:
                    raise InvariantViolation(
                        f"{name} {tp}: log end offset went from {before} to {leo} with no recorded truncation"
                    )
                self.log_end_offsets[key] = leo

    def _forget(self, node: str) -> None:
        for key in [k for k in self.log_end_offsets if k[0] == node]:
            del self.log_end_offsets[key]


class HighWatermarkWithinLog:
    """``log_start_offset <= high_watermark <= log_end_offset`` on every replica."""

    __name__ = "high_watermark_within_log"

    def __init__(self) -> None:
        self._changed = ChangedNodes()

    def __call__(self, cluster: SimCluster) -> None:
        for name, core in self._changed(cluster):
            manager = core.log_manager
            for tp in manager.partitions():
                log = manager.get(tp)
                if log is not None and not log.log_start_offset <= log.high_watermark <= log.log_end_offset:
                    raise InvariantViolation(
                        f"{name} {tp}: start {log.log_start_offset}, high watermark {log.high_watermark}, "
                        f"end {log.log_end_offset}"
                    )


def default_invariants() -> list:
    """Fresh instances of the invariants every simulated cluster checks."""
    return [SingleLeaderPerEpoch(), LogEndOffsetsMonotonic(), HighWatermarkWithinLog()]
