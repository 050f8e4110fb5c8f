"""Leader elections and ISR changes as PartitionChangeRecords (Kafka's PartitionChangeBuilder).

Pure functions over the controller state: they decide what should change and return records
plus the trace events to emit once those records are durable. Rules (Kafka's):

* An *eligible* broker is unfenced and not in controlled shutdown (KRaft's "active" broker).
  Only eligible brokers become leaders; the core computes the set (``eligible_brokers``).
* A new leader is the first replica, in replica order, that is in the ISR and eligible.
  Only when none is and ``unclean.leader.election.enable`` is on (the topic's override, else the
  cluster's) may an out-of-sync eligible replica lead; the ISR then becomes just that replica
  (UncleanLeaderElected is traced: the records it lacks are lost).
* Every leader change (also to or from -1, "no leader") bumps the leader epoch; every change
  bumps the partition epoch. An ISR-only change keeps the leader epoch (Kafka >= 3.6).
* A fenced broker leaves every ISR, except that the last ISR member stays (the ISR never
  becomes empty) and the partition is then leaderless until that member comes back.
* A broker that is unfenced takes over leaderless partitions whose ISR it is in.
* Controlled shutdown moves each leadership of the broker to another eligible ISR member and
  drops the broker from every ISR that keeps at least one member; a partition with no other
  eligible ISR member keeps the broker as leader until it is fenced (see controller/brokers.py).

ISR changes asked for by leaders (AlterPartition) are in controller/alter_partition.py; preferred
and unclean elections on demand and the automatic leader rebalance in controller/elections.py.
"""

from __future__ import annotations

from typing import Collection, NamedTuple

from brokerlab.sansio import TraceEvent
from brokerlab.v1.metadata_pb2 import MetadataRecord, PartitionChangeRecord
from controller.state import NO_LEADER, ControllerState, PartitionState, TopicState


class PartitionChange(NamedTuple):
    record: MetadataRecord
    events: list[TraceEvent]


class Election(NamedTuple):
    leader_id: int
    isr: list[int]
    unclean: bool


def eligible_brokers(state: ControllerState, shutting_down: Collection[int] = ()) -> set[int]:
    """Brokers that may lead or join an ISR: unfenced and not in controlled shutdown."""
    return {b.broker_id for b in state.unfenced_brokers() if b.broker_id not in shutting_down}


def unclean_enabled(topic: TopicState, cluster_default: bool) -> bool:
    override = topic.configs.get("unclean.leader.election.enable")
    return cluster_default if override is None else override == "true"


def elect_leader(replicas: list[int], isr: list[int], eligible: Collection[int], unclean: bool) -> Election:
    for broker_id in replicas:
        if broker_id in isr and broker_id in eligible:
            return Election(broker_id, isr, False)
    if unclean:
        for broker_id in replicas:
            if broker_id in eligible:
                return Election(broker_id, [broker_id], True)
    return Election(NO_LEADER, isr, False)


def build_change(
    topic: TopicState,
    index: int,
    partition: PartitionState,
    reason: str,
    leader_id: int | None = None,
    isr: list[int] | None = None,
    unclean: bool = False,
) -> PartitionChange | None:
    """The record for moving ``partition`` to the given leader and/or ISR; None if nothing changes."""
    leader_changed = leader_id is not None and leader_id != partition.leader_id
    isr_changed = isr is not None and isr != partition.isr
    if not leader_changed and not isr_changed:
        return None
    leader_epoch = partition.leader_epoch + 1 if leader_changed else partition.leader_epoch
    partition_epoch = partition.partition_epoch + 1
    new_leader = leader_id if leader_changed else partition.leader_id
    change = PartitionChangeRecord(
        topic_id=topic.topic_id,
        partition=index,
        leader_id=new_leader,
        isr=isr if isr_changed else [],
        leader_epoch=leader_epoch,
        partition_epoch=partition_epoch,
        isr_changed=isr_changed,
        leader_changed=leader_changed,
        reason=reason,
    )
    events = []
    if isr_changed:
        assert isr is not None
        removed = [b for b in partition.isr if b not in isr]
        added = [b for b in isr if b not in partition.isr]
        name = "IsrShrunk" if removed and not added else "IsrExpanded" if added and not removed else "IsrChanged"
        events.append(
            TraceEvent(
                name,
                {
                    "topic": topic.name,
                    "partition": index,
                    "isr": list(isr),
                    "previous_isr": list(partition.isr),
                    "leader": new_leader,
                    "leader_epoch": leader_epoch,
                    "partition_epoch": partition_epoch,
                    "reason": reason,
                },
            )
        )
    if leader_changed:
        fields = {
            "topic": topic.name,
            "partition": index,
            "leader": leader_id,
            "previous_leader": partition.leader_id,
            "leader_epoch": leader_epoch,
            "partition_epoch": partition_epoch,
            "reason": reason,
        }
        if unclean:
            fields["unclean"] = True
        events.append(TraceEvent("LeaderChanged", fields))
        if unclean:
            events.append(
                TraceEvent(
                    "UncleanLeaderElected",
                    {
                        "topic": topic.name,
                        "partition": index,
                        "leader": leader_id,
                        "leader_epoch": leader_epoch,
                        "previous_isr": list(partition.isr),
                        "reason": reason,
                    },
                )
            )
    return PartitionChange(MetadataRecord(partition_change=change), events)


def all_partitions(state: ControllerState):
    """(topic, index, partition) in a stable order: topic name, then partition index."""
    for topic in sorted(state.topics.values(), key=lambda t: t.name):
        for index, partition in sorted(topic.partitions.items()):
            yield topic, index, partition


def changes_for_fenced_broker(
    state: ControllerState, broker_id: int, reason: str, cluster_unclean: bool, shutting_down: Collection[int] = ()
) -> list[PartitionChange]:
    """Take ``broker_id`` out of every ISR and move its leaderships (it is about to be fenced)."""
    eligible = eligible_brokers(state, shutting_down) - {broker_id}
    out = []
    for topic, index, partition in all_partitions(state):
        if broker_id not in partition.isr and partition.leader_id != broker_id:
            continue
        isr = [b for b in partition.isr if b != broker_id] or list(partition.isr)
        leader_id, unclean = partition.leader_id, False
        if leader_id == broker_id:
            leader_id, isr, unclean = elect_leader(partition.replicas, isr, eligible, unclean_enabled(topic, cluster_unclean))
        change = build_change(topic, index, partition, reason, leader_id=leader_id, isr=isr, unclean=unclean)
        if change is not None:
            out.append(change)
    return out


def changes_for_unfenced_broker(
    state: ControllerState, broker_id: int, reason: str, cluster_unclean: bool, shutting_down: Collection[int] = ()
) -> list[PartitionChange]:
    """Elect leaders for leaderless partitions now that ``broker_id`` is back."""
    eligible = eligible_brokers(state, shutting_down) | {broker_id}
    out = []
    for topic, index, partition in all_partitions(state):
        if partition.leader_id != NO_LEADER or broker_id not in partition.replicas:
            continue
        election = elect_leader(partition.replicas, partition.isr, eligible, unclean_enabled(topic, cluster_unclean))
        if election.leader_id == NO_LEADER:
            continue
        change = build_change(
            topic, index, partition, reason, leader_id=election.leader_id, isr=election.isr, unclean=election.unclean
        )
        if change is not None:
            out.append(change)
    return out


class ShutdownPlan(NamedTuple):
    changes: list[PartitionChange]
    # Partitions the broker still leads because no other eligible ISR member exists.
    kept: list[tuple[str, int]]


def changes_for_controlled_shutdown(state: ControllerState, broker_id: int, eligible: Collection[int]) -> ShutdownPlan:
    """Move ``broker_id``'s leaderships to other eligible ISR members and drop it from ISRs.

    Never unclean: the broker is still healthy, so a leadership with no other eligible ISR
    member stays where it is (its ISR too) until the broker is fenced.
    """
    changes, kept = [], []
    for topic, index, partition in all_partitions(state):
        if broker_id not in partition.isr and partition.leader_id != broker_id:
            continue
        isr = [b for b in partition.isr if b != broker_id]
        leader_id = partition.leader_id
        if leader_id == broker_id:
            candidates = [b for b in partition.replicas if b in isr and b in eligible]
            if not candidates:
                kept.append((topic.name, index))
                continue
            leader_id = candidates[0]
        elif not isr:
            continue  # the last ISR member stays
        change = build_change(topic, index, partition, "controlled_shutdown", leader_id=leader_id, isr=isr)
        if change is not None:
            changes.append(change)
    return ShutdownPlan(changes, kept)
