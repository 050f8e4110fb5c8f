"""Follower truncation by leader epoch (KIP-101, with KIP-279's multi-round rule).

Before a follower fetches from a new leader (or a new leader epoch) it asks the leader, with
OffsetForLeaderEpoch, where its own latest epoch ended on the leader, and cuts its log there:
never blindly to the high watermark, so nothing committed is lost and a zombie's unreplicated
tail is removed exactly. ``truncation_offset`` is Kafka's
``AbstractFetcherThread.getOffsetTruncationState``; ``truncate`` applies it and logs
``LogTruncated`` with the removed range.
"""

from __future__ import annotations

from typing import NamedTuple

from brokerlab.sansio import Effects
from node.log.epoch_cache import UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET
from node.log.partition_log import PartitionLog


class Truncation(NamedTuple):
    offset: int  # truncate to this (no-op when >= the log end offset)
    completed: bool  # False: ask again with the (new) latest local epoch


def truncation_offset(log: PartitionLog, leader_epoch: int, leader_end_offset: int) -> Truncation:
    """Where to cut, given the leader's answer ``(leader_epoch, leader_end_offset)`` to our
    question about our latest epoch."""
    log_end_offset = log.log_end_offset
    if leader_end_offset == UNDEFINED_EPOCH_OFFSET:
        # The leader knows no epoch <= ours (its log start moved past it, or it has no epochs):
        # only the high watermark is known to be safe.
        return Truncation(min(log.high_watermark, log_end_offset), True)
    if leader_epoch == UNDEFINED_EPOCH:
        return Truncation(min(leader_end_offset, log_end_offset), True)
    local_epoch, local_end_offset = log.leader_epoch_cache.end_offset_for(leader_epoch)
    if local_epoch == UNDEFINED_EPOCH:
        # We know no epoch <= the leader's answer: its end offset bounds our common prefix.
        return Truncation(min(leader_end_offset, log_end_offset), True)
    if local_epoch != leader_epoch:
        # We never saw the epoch the leader answered with: cut to the end of our largest epoch
        # below it, then ask again about the epoch that is now our latest.
        return Truncation(min(local_end_offset, log_end_offset), False)
    return Truncation(min(local_end_offset, leader_end_offset, log_end_offset), True)


def truncate(log: PartitionLog, offset: int, reason: str, fx: Effects, **fields) -> int:
    """Cut ``log`` at ``offset``; logs LogTruncated (from_offset = new log end, to_offset = old
    log end, exclusive) when anything went. Returns the number of records removed."""
    to_offset = log.log_end_offset
    if offset >= to_offset:
        # Nothing to cut, but an epoch entry starting at our log end (we led an epoch and
        # appended nothing in it) conflicts with the leader's history: drop it, as Kafka's
        # truncateTo always truncates the epoch cache. Without this, KIP-279's second round
        # would ask about that same epoch forever.
        log.leader_epoch_cache.truncate_from_end(to_offset)
        return 0
    removed = log.truncate_to(offset)
    tp = log.topic_partition
    storage = {}
    for event in log.drain_events():
        if event.name == "LogTruncated":  # the storage engine's own note: folded into ours
            storage = {k: v for k, v in event.fields.items() if k in ("bytes_removed", "deleted_segments")}
        else:
            fx.events.append(event)
    fx.event("LogTruncated", topic=tp.topic, partition=tp.partition, from_offset=log.log_end_offset,
             to_offset=to_offset, records_removed=removed, reason=reason,
             high_watermark=log.high_watermark, **storage, **fields)
    return removed


def restart_at(log: PartitionLog, offset: int, reason: str, fx: Effects, **fields) -> None:
    """Empty the log and restart it at ``offset`` (the leader's log start moved past our end).

    Everything goes: the LogTruncated range is the whole old log, ``[old start, old end)``.
    """
    from_offset, to_offset = log.log_start_offset, log.log_end_offset
    log.truncate_fully_and_start_at(offset)
    tp = log.topic_partition
    for event in log.drain_events():
        if event.name != "LogTruncated":
            fx.events.append(event)
    fx.event("LogTruncated", topic=tp.topic, partition=tp.partition, from_offset=from_offset,
             to_offset=to_offset, records_removed=to_offset - from_offset, reason=reason,
             log_start_offset=offset, **fields)
