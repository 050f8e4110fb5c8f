"""Invariants checked after every simulated event.

An invariant is any callable ``(cluster) -> None`` that raises ``InvariantViolation``. Stateful
ones are small classes: they remember what they saw (a leader per epoch, a log end offset) and
read the trace entries added since their last call to learn about legitimate changes (a
recorded truncation, a power loss). Cheap checks only: they run after every event, so each one
does work only for what changed since its last look (a node that ran, a new trace entry, a new
acknowledgement, a new controller record).

The replication invariants (issue 3):

- one leader per partition per leader epoch (controller state, every broker image, and the
  brokers' own roles);
- leader epochs never go back, per partition, in the controller state (across restarts: its
  journal is fsynced before it is applied) and in every broker's image and roles (per process
  incarnation: a restarted broker replays the journal from the start);
- the high watermark never goes back within a leader epoch on the leader;
- every record acknowledged with acks=all is present, with the same value, on every live member
  of the controller's current ISR (a replica still catching up is allowed only outside the ISR);
- log end offsets never go down except by a recorded truncation or recovery.
"""

from __future__ import annotations

from typing import Any, Iterator

from brokerlab.ids import TopicPartition
from brokerlab.record_batch import decode_batch_columns, iter_headers

from .cluster import InvariantViolation, SimCluster

# Trace events after which a partition's log end offset may legitimately go down.
TRUNCATION_EVENTS = frozenset({"LogTruncated", "LogRecovered", "LogDeleted", "PartitionDeleted", "LogCreated"})
# Events after which a partition of that name may be a new topic (epochs start again).
PARTITION_GONE_EVENTS = frozenset({"PartitionDeleted", "LogDeleted"})
# Batches the acknowledged-records check keeps decoded (the replicas read the same ones soon after).
DECODED_BATCHES_KEPT = 4096
# Every trace event a check below reacts to (``Look.events``); the rest (most: message deliveries) none reads.
NOTABLE_EVENTS = TRUNCATION_EVENTS | PARTITION_GONE_EVENTS | {
    "MetadataImageReset", "NodeCrashed", "NodeStarted", "UncleanLeaderElected",
}


def broker_cores(cluster: SimCluster) -> Iterator[tuple[str, Any]]:
    for name, node in cluster.nodes.items():
        if name.startswith("broker-") and node.core is not None:
            yield name, node.core


def controller_core(cluster: SimCluster) -> Any | None:
    node = cluster.nodes.get("controller")
    return node.core if node is not None else None


class Look:
    """What changed since the previous event, computed once for every check.

    ``changed``: running brokers that ran (stepped, ticked, booted) since the last look, the only
    ones whose state can have changed; ``entries``: trace entries added since, ``events`` the
    ones among them named in ``NOTABLE_EVENTS``; ``controller``: the controller core when it
    applied records (or restarted) since, else None; ``down``: brokers that stopped running since.
    """

    __slots__ = ("changed", "entries", "events", "controller", "down", "_logs")

    def __init__(self, changed: list, entries: list, controller: Any | None, down: list[str]) -> None:
        self.changed = changed
        self.entries = entries
        self.events = [entry for entry in entries if entry.name in NOTABLE_EVENTS] if entries else entries
        self.controller = controller
        self.down = down
        self._logs: dict[str, list] = {}

    @property
    def empty(self) -> bool:
        return not (self.changed or self.entries or self.controller is not None or self.down)

    def logs(self, name: str, core: Any) -> Any:
        """A changed broker's ``(tp, log)`` pairs, read once for every check."""
        logs = self._logs.get(name)
        if logs is None:
            manager = core.log_manager
            table = getattr(manager, "_logs", None)  # its own table: partitions() sorts it every call
            if isinstance(table, dict):
                logs = self._logs[name] = table.items()
            else:
                logs = self._logs[name] = [(tp, log) for tp in manager.partitions()
                                           if (log := manager.get(tp)) is not None]
        return logs


class Check:
    """One invariant of the suite: ``check(cluster, look)`` raises InvariantViolation.

    ``every_entry``: the check reads ``look.entries`` (every new trace entry), so a new entry
    alone is a change for it; the checks below read only ``look.events`` and set it False.
    """

    __name__ = "check"
    every_entry = True

    def check(self, cluster: SimCluster, look: Look) -> None:
        raise NotImplementedError

    def __call__(self, cluster: SimCluster) -> None:
        """Run alone (as its own invariant): looks for itself."""
        looker = getattr(self, "_own_looker", None)
        if looker is None:
            looker = self._own_looker = Looker()
        self.check(cluster, looker.look(cluster))


class Looker:
    """Turns the cluster's state into a ``Look`` at what changed since the previous call."""

    def __init__(self) -> None:
        # broker -> SimNode.runs when last looked at (every start runs the core, so a new
        # incarnation always has a new count).
        self._marks: dict[str, int] = {}
        self._seen_entries = 0
        self._controller_mark: tuple[int, int] | None = None
        self._brokers: list[tuple[str, Any]] = []  # the cluster's broker nodes, as of _node_count nodes
        self._node_count = -1

    def look(self, cluster: SimCluster) -> Look:
        return self.look_if_changed(cluster, True) or Look([], [], None, [])

    def look_if_changed(self, cluster: SimCluster, every_entry: bool) -> Look | None:
        """A ``Look``, or None when nothing changed (a new trace entry counts only if
        ``every_entry`` or it is one of ``NOTABLE_EVENTS``)."""
        changed, down = [], []
        marks = self._marks
        nodes = cluster.nodes
        if len(nodes) != self._node_count:  # nodes are only ever added
            self._node_count = len(nodes)
            self._brokers = [(name, node) for name, node in nodes.items() if name.startswith("broker-")]
        for name, node in self._brokers:
            core = node.core
            if core is None:
                if name in marks:
                    del marks[name]
                    down.append(name)
            elif marks.get(name) != node.runs:
                marks[name] = node.runs
                changed.append((name, core))
        entries = cluster.trace.entries
        seen = self._seen_entries
        fresh = entries[seen:] if len(entries) > seen else []
        self._seen_entries = len(entries)
        controller = None
        node = nodes.get("controller")
        if node is not None and node.core is not None:
            mark = (node.incarnation, node.core.state.applied_records)
            if mark != self._controller_mark:
                self._controller_mark = mark
                controller = node.core
        look = Look(changed, fresh, controller, down)
        if not (changed or down or controller is not None or (fresh and (every_entry or look.events))):
            return None
        return look


class InvariantSuite:
    """Several checks run after every event over one shared ``Look``; nothing to do when
    nothing changed. A violation names the check that found it."""

    __name__ = "invariants"

    def __init__(self, checks: list[Check]) -> None:
        self.checks = checks
        self._looker = Looker()
        self._acks = 0
        self._every_entry = any(getattr(check, "every_entry", True) for check in checks)

    def __call__(self, cluster: SimCluster) -> None:
        look = self._looker.look_if_changed(cluster, self._every_entry)
        acks = len(cluster.acknowledged)
        if look is None:
            if acks == self._acks:
                return
            look = Look([], [], None, [])
        self._acks = acks
        for check in self.checks:
            try:
                check.check(cluster, look)
            except InvariantViolation as exc:
                exc.invariant = check.__name__
                raise


class SingleLeaderPerEpoch(Check):
    """At most one leader per partition per leader epoch.

    Three views are checked: the controller's state and every broker's metadata image (no two
    may ever name different leaders for the same topic id, partition and epoch, even at
    different times), and the brokers' own roles (two running brokers must never both act as
    leader of one partition in one epoch).
    """

    __name__ = "single_leader_per_epoch"
    every_entry = False

    def __init__(self) -> None:
        self.leaders: dict[tuple[str, int, int], tuple[int, str]] = {}
        self._applied: dict[str, tuple[int, int]] = {}  # node -> (incarnation, image offset) checked
        self._acting: dict[tuple[str, int, int], str] = {}  # (topic, partition, epoch) -> node
        self._acts: dict[str, list[tuple[str, int, int]]] = {}  # node -> its keys in _acting

    def check(self, cluster: SimCluster, look: Look) -> None:
        if look.controller is not None:
            for topic in look.controller.state.topics.values():
                for index, partition in topic.partitions.items():
                    self._saw(topic.name, topic.topic_id, index, partition.leader_epoch, partition.leader_id,
                              "the controller")
        for name in look.down:
            self._release(name)
        for name, core in look.changed:
            image = core.image
            mark = (cluster.nodes[name].incarnation, image.last_applied_offset)
            if self._applied.get(name) != mark:
                self._applied[name] = mark
                for topic in image.topics_by_id.values():
                    for partition in topic.partitions.values():
                        self._saw(topic.name, topic.topic_id, partition.partition, partition.leader_epoch,
                                  partition.leader_id, f"{name}'s image")
            keys = [(tp.topic, tp.partition, r.leader_epoch) for tp, r in core.replicas.items() if r.is_leader]
            if keys == self._acts.get(name):
                continue  # the same roles: registered, and checked against the others, when they began
            self._release(name)
            for key in keys:
                other = self._acting.setdefault(key, name)
                if other != name:
                    raise InvariantViolation(
                        f"{other} and {name} both act as leader of {key[0]}-{key[1]} in leader epoch {key[2]}"
                    )
            self._acts[name] = keys

    def _release(self, name: str) -> None:
        for key in self._acts.pop(name, ()):
            if self._acting.get(key) == name:
                del self._acting[key]

    def _saw(self, topic: str, topic_id: str, partition: int, epoch: int, leader_id: int, where: str) -> None:
        if leader_id < 0:
            return
        seen = self.leaders.setdefault((topic_id, partition, epoch), (leader_id, where))
        if seen[0] != leader_id:
            raise InvariantViolation(
                f"{topic}-{partition} leader epoch {epoch}: {seen[1]} says leader {seen[0]}, {where} says {leader_id}"
            )


class LeaderEpochsMonotonic(Check):
    """A partition's leader epoch never goes back: in the controller's state (for its whole life,
    restarts included), in each broker's image and in each broker's roles (per incarnation)."""

    __name__ = "leader_epochs_monotonic"
    every_entry = False

    def __init__(self) -> None:
        self.controller_epochs: dict[tuple[str, int], int] = {}
        self.image_epochs: dict[tuple[str, int, str, int], int] = {}  # (node, incarnation, topic id, p)
        self.role_epochs: dict[tuple[str, int], dict[TopicPartition, int]] = {}  # (node, incarnation) -> tp -> epoch
        self._applied: dict[str, tuple[int, int]] = {}

    def check(self, cluster: SimCluster, look: Look) -> None:
        for entry in look.events:
            if entry.name == "MetadataImageReset":  # rebuilt from offset 0: a new history begins
                self.image_epochs = {k: v for k, v in self.image_epochs.items() if k[0] != entry.node}
            elif entry.name in PARTITION_GONE_EVENTS and entry.get("topic") is not None:
                tp = TopicPartition(entry.get("topic"), entry.get("partition"))
                for (node, _), epochs in self.role_epochs.items():
                    if node == entry.node:
                        epochs.pop(tp, None)
        if look.controller is not None:
            for topic in look.controller.state.topics.values():
                for index, partition in topic.partitions.items():
                    self._check(self.controller_epochs, (topic.topic_id, index), partition.leader_epoch,
                                f"the controller's state of {topic.name}-{index}")
        for name, core in look.changed:
            incarnation = cluster.nodes[name].incarnation
            image = core.image
            mark = (incarnation, image.last_applied_offset)
            if self._applied.get(name) != mark:
                self._applied[name] = mark
                for topic in image.topics_by_id.values():
                    for partition in topic.partitions.values():
                        self._check(self.image_epochs, (name, incarnation, topic.topic_id, partition.partition),
                                    partition.leader_epoch, f"{name}'s image of {topic.name}-{partition.partition}")
            roles = self.role_epochs.get((name, incarnation))
            if roles is None:
                roles = self.role_epochs[(name, incarnation)] = {}
            for tp, replica in core.replicas.items():
                epoch = replica.leader_epoch
                before = roles.get(tp)
                if before is not None and epoch < before:
                    raise InvariantViolation(f"leader epoch went back in {name}'s role for {tp}: {before} -> {epoch}")
                roles[tp] = epoch

    @staticmethod
    def _check(seen: dict, key: tuple, epoch: int, where: str) -> None:
        before = seen.get(key)
        if before is not None and epoch < before:
            raise InvariantViolation(f"leader epoch went back in {where}: {before} -> {epoch}")
        seen[key] = epoch


class HighWatermarkMonotonicWithinEpoch(Check):
    """On the leader, a partition's high watermark never goes back within one leader epoch
    (a new leader may start lower than its predecessor ended: that is a new epoch)."""

    __name__ = "high_watermark_monotonic_within_epoch"
    every_entry = False

    def __init__(self) -> None:
        self.high_watermarks: dict[tuple[TopicPartition, int], tuple[int, str]] = {}

    def check(self, cluster: SimCluster, look: Look) -> None:
        for entry in look.events:
            if entry.name in PARTITION_GONE_EVENTS and entry.get("topic") is not None:
                tp = TopicPartition(entry.get("topic"), entry.get("partition"))
                self.high_watermarks = {k: v for k, v in self.high_watermarks.items() if k[0] != tp}
        high_watermarks = self.high_watermarks
        for name, core in look.changed:
            leaders = core.replica_manager.leaders
            if not leaders:
                continue
            manager = core.log_manager
            for tp, leader in leaders.items():
                log = manager.get(tp)
                if log is None:
                    continue
                key = (tp, leader.leader_epoch)
                hw = log.high_watermark
                before = high_watermarks.get(key)
                if before is not None:
                    if hw == before[0] and name == before[1]:
                        continue
                    if hw < before[0]:
                        raise InvariantViolation(
                            f"{tp} leader epoch {leader.leader_epoch}: high watermark went from {before[0]} "
                            f"(on {before[1]}) to {hw} on {name}"
                        )
                high_watermarks[key] = (hw, name)


class AcknowledgedOnEveryIsrMember(Check):
    """Every acks=all acknowledged record is on every live member of the controller's ISR.

    The record must be at its acknowledged offset with its value. Only brokers in the ISR the
    controller committed are held to it (a replica catching up is outside it); a down broker is
    looked at again when it runs. Exception: a broker that lost unflushed data in a power loss
    while not flushing every batch (``log.flush.policy`` other than ``batch``) is not held to
    records whose acknowledged request was sent before it came back (the leader may have
    acknowledged them before the power loss): losing them is what that policy allows (the
    scenario's checker counts the loss). If such a broker then passes the loss on to others
    (as their leader), those others are still held to it. Likewise an unclean leader election
    (``UncleanLeaderElected``, only where the topic enables it) releases every ISR member of
    that partition from the records acknowledged before it.

    Cost: each broker's log is read forward into a mirror of ``offset -> value`` as far as
    needed; a truncation or recovery of that log drops the mirror, a restart drops all of them.
    """

    __name__ = "acknowledged_on_every_isr_member"
    every_entry = False

    def __init__(self) -> None:
        self._acked: dict[TopicPartition, list[tuple[int, bytes, int]]] = {}  # tp -> (offset, value, sent_ms)
        self._seen_acks = 0
        self._isr: dict[TopicPartition, tuple[int, ...]] = {}
        # (node, tp) -> how many of _acked[tp] are verified on that node's current log.
        self._verified: dict[tuple[str, TopicPartition], int] = {}
        self._mirrors: dict[tuple[str, TopicPartition], dict[int, bytes]] = {}
        self._mirror_end: dict[tuple[str, TopicPartition], int] = {}
        self._decoded: dict[bytes, tuple[range, list]] = {}  # a batch's bytes -> its (offsets, values)
        # node -> acknowledgements of requests sent before this time are forfeited on it (a power
        # loss without per-batch flush, up to its restart); nodes lost power and not back yet.
        self._forfeited: dict[str, int] = {}
        self._power_lost: set[str] = set()
        # tp -> acknowledgements of requests sent before this time are forfeited on every
        # member (an unclean election there).
        self._unclean: dict[TopicPartition, int] = {}
        self._incarnations: dict[str, int] = {}
        # Something may be unverified: new acknowledgements, a new ISR member, a dropped mirror.
        self._dirty = False

    def check(self, cluster: SimCluster, look: Look) -> None:
        for entry in look.events:
            self._on_entry(cluster, entry)
        for name, _ in look.changed:
            incarnation = cluster.nodes[name].incarnation
            if self._incarnations.get(name) != incarnation:
                self._incarnations[name] = incarnation
                self._drop(name)
        if look.controller is not None:
            for topic in look.controller.state.topics.values():
                for index, partition in topic.partitions.items():
                    tp = TopicPartition(topic.name, index)
                    isr = tuple(partition.isr)
                    before = self._isr.get(tp, ())
                    if before != isr:
                        for broker_id in isr:
                            if broker_id not in before:
                                self._verified.pop((f"broker-{broker_id}", tp), None)
                        self._isr[tp] = isr
                        self._dirty = True
        acknowledged = cluster.acknowledged
        if len(acknowledged) > self._seen_acks:
            for seq in range(self._seen_acks, len(acknowledged)):
                tp, offset, value, sent_ms = acknowledged[seq]
                self._acked.setdefault(tp, []).append((offset, value, sent_ms))
            self._seen_acks = len(acknowledged)
            self._dirty = True
        if not self._dirty:
            return
        # Whatever is still unverified belongs to a broker that is down: it comes back as a new
        # incarnation, which drops its marks and makes this dirty again.
        self._dirty = False
        for tp, isr in self._isr.items():
            acked = self._acked.get(tp)
            if not acked:
                continue
            for broker_id in isr:
                name = f"broker-{broker_id}"
                key = (name, tp)
                done = self._verified.get(key, 0)
                if done >= len(acked):
                    continue
                node = cluster.nodes.get(name)
                if node is None or node.core is None:
                    continue
                self._verify(node.core, name, tp, acked, done)
                self._verified[key] = len(acked)

    def _on_entry(self, cluster: SimCluster, entry: Any) -> None:
        if entry.name == "UncleanLeaderElected" and entry.get("topic") is not None:
            self._unclean[TopicPartition(entry.get("topic"), entry.get("partition"))] = entry.now_ms
            return
        if not entry.node.startswith("broker-"):
            return
        if entry.name == "NodeCrashed" and entry.get("lose_unflushed"):
            if cluster.nodes[entry.node].config.log_config.flush_policy != "batch":
                self._power_lost.add(entry.node)
            self._drop(entry.node)
        elif entry.name == "NodeStarted" and entry.node in self._power_lost:
            self._power_lost.discard(entry.node)
            self._forfeited[entry.node] = entry.now_ms
        elif entry.name in TRUNCATION_EVENTS:
            topic, partition = entry.get("topic"), entry.get("partition")
            if topic is None or partition is None:
                self._drop(entry.node)
            else:
                key = (entry.node, TopicPartition(topic, partition))
                self._verified.pop(key, None)
                self._mirrors.pop(key, None)
                self._mirror_end.pop(key, None)
                self._dirty = True

    def _drop(self, node: str) -> None:
        for table in (self._verified, self._mirrors, self._mirror_end):
            for key in [k for k in table if k[0] == node]:
                del table[key]
        self._dirty = True

    def _verify(self, core: Any, name: str, tp: TopicPartition, acked: list, start: int) -> None:
        log = core.log_manager.get(tp)
        forfeited = max(self._forfeited.get(name, -1), self._unclean.get(tp, -1))
        for offset, value, sent_ms in acked[start:]:
            if sent_ms < forfeited:
                continue
            found = self._value_at(name, tp, log, offset)
            if found != value:
                where = "missing" if found is None else f"holds {found!r}"
                end = log.log_end_offset if log is not None else None
                raise InvariantViolation(
                    f"{tp}@{offset} was acknowledged (acks=all) as {value!r} but ISR member {name} "
                    f"(ISR {list(self._isr[tp])}, log end {end}) {where}"
                )

    def _value_at(self, name: str, tp: TopicPartition, log: Any, offset: int) -> bytes | None:
        if log is None or not log.log_start_offset <= offset < log.log_end_offset:
            return None
        key = (name, tp)
        mirror = self._mirrors.setdefault(key, {})
        end = self._mirror_end.get(key, log.log_start_offset)
        while offset >= end and end < log.log_end_offset:
            data = log.read(end, 1 << 20)
            if not data:
                break
            last = end - 1
            decoded = self._decoded
            for position, header in iter_headers(data):
                # Replicas hold byte-identical batches: each is decoded once, not once per replica.
                raw = data[position:position + header.size_bytes]
                columns = decoded.get(raw)
                if columns is None:
                    if len(decoded) >= DECODED_BATCHES_KEPT:
                        decoded.clear()
                    batch = decode_batch_columns(raw, 0, header)
                    columns = decoded[raw] = (batch.offsets, batch.values)
                offsets, values = columns
                skip = end - header.base_offset
                if skip > 0:  # records below the mirror's end are in it already
                    offsets, values = offsets[skip:], values[skip:]
                mirror.update(zip(offsets, values))
                if header.record_count:  # record i has offset base + i (validated at every append)
                    last = max(last, header.base_offset + header.record_count - 1)
            if last < end:
                break  # nothing new (cannot happen below the log end; never loop on it)
            end = last + 1
        self._mirror_end[key] = end
        return mirror.get(offset)


class LogEndOffsetsMonotonic(Check):
    """A replica's log end offset never goes down, except by a recorded truncation.

    Recorded means: a truncation/recovery/deletion event for that partition on that node, or a
    power loss of the node (``NodeCrashed`` with ``lose_unflushed``), after which its recovery
    sets a new baseline. A clean stop and restart keeps the baseline: the log must come back whole.
    """

    __name__ = "log_end_offsets_monotonic"
    every_entry = False

    def __init__(self) -> None:
        self.log_end_offsets: dict[tuple[str, TopicPartition], int] = {}

    def check(self, cluster: SimCluster, look: Look) -> None:
        for entry in look.events:
            if entry.name == "NodeCrashed" and entry.get("lose_unflushed"):
                self._forget(entry.node)
            elif entry.name in TRUNCATION_EVENTS:
                topic, partition = entry.get("topic"), entry.get("partition")
                if topic is None or partition is None:
                    self._forget(entry.node)
                else:
                    self.log_end_offsets.pop((entry.node, TopicPartition(topic, partition)), None)
        log_end_offsets = self.log_end_offsets
        for name, core in look.changed:
            for tp, log in look.logs(name, core):
                leo = log.log_end_offset
                key = (name, tp)
                before = log_end_offsets.get(key)
                if before is not None and leo < before:
                    raise InvariantViolation(
                        f"{name} {tp}: log end offset went from {before} to {leo} with no recorded truncation"
                    )
                log_end_offsets[key] = leo

    def _forget(self, node: str) -> None:
        for key in [k for k in self.log_end_offsets if k[0] == node]:
            del self.log_end_offsets[key]


class HighWatermarkWithinLog(Check):
    """``log_start_offset <= high_watermark <= log_end_offset`` on every replica."""

    __name__ = "high_watermark_within_log"
    every_entry = False

    def check(self, cluster: SimCluster, look: Look) -> None:
        for name, core in look.changed:
            for tp, log in look.logs(name, core):
                if not log.log_start_offset <= log.high_watermark <= log.log_end_offset:
                    raise InvariantViolation(
                        f"{name} {tp}: start {log.log_start_offset}, high watermark {log.high_watermark}, "
                        f"end {log.log_end_offset}"
                    )


def replication_checks() -> list[Check]:
    """Fresh instances of the replication checks; the most basic first (a broken log end offset
    explains a broken high watermark)."""
    return [
        SingleLeaderPerEpoch(),
        LogEndOffsetsMonotonic(),
        HighWatermarkWithinLog(),
        LeaderEpochsMonotonic(),
        HighWatermarkMonotonicWithinEpoch(),
        AcknowledgedOnEveryIsrMember(),
    ]


def default_invariants() -> list:
    """What every simulated cluster of real cores checks after every event: one suite."""
    return [InvariantSuite(replication_checks())]
