"""Truncation by leader epoch (KIP-101 / KIP-279): where a follower cuts, given the leader's
answer about its latest epoch, and what it logs."""

from __future__ import annotations

from replication_harness import batch

from brokerlab.disk import MemoryDisk
from brokerlab.ids import TopicPartition
from brokerlab.sansio import Effects
from node.log.config import LogConfig
from node.log.partition_log import PartitionLog
from node.replication.truncation import Truncation, truncate, truncation_offset

TP = TopicPartition("t", 0)


def log_with(epochs: list[tuple[int, int]]) -> PartitionLog:
    """A log with ``count`` one-record batches per ``(epoch, count)``, in order."""
    log = PartitionLog.create(MemoryDisk(), "t-0", TP, LogConfig(), 0)
    for epoch, count in epochs:
        log.leader_epoch_cache.assign(epoch, log.log_end_offset)
        for _ in range(count):
            log.append_as_leader(batch(b"r"), epoch, 0)
    return log


def test_same_epoch_cuts_at_the_smaller_end() -> None:
    log = log_with([(0, 3), (1, 4)])  # epoch 1 covers 3..6, log end 7
    assert truncation_offset(log, 1, 5) == Truncation(5, True)  # the leader's epoch 1 ended at 5
    assert truncation_offset(log, 1, 9) == Truncation(7, True)  # the leader has more: nothing to cut


def test_an_epoch_the_leader_never_had_takes_a_second_round() -> None:
    # We have epochs 0, 2, 3; the leader had 0, 1, 4: asked about 3, it answers (1, 6).
    log = log_with([(0, 3), (2, 2), (3, 2)])
    first = truncation_offset(log, 1, 6)
    assert first == Truncation(3, False)  # cut where our epoch 2 began, then ask about epoch 0
    effects = Effects()
    assert truncate(log, first.offset, "leader_epoch", effects) == 4
    assert log.leader_epoch_cache.latest_epoch == 0
    assert truncation_offset(log, 0, 3) == Truncation(3, True)


def test_unknown_answers_fall_back_to_the_high_watermark_or_the_leaders_end() -> None:
    log = log_with([(0, 5)])
    log.high_watermark = 2
    assert truncation_offset(log, -1, -1) == Truncation(2, True)
    assert truncation_offset(log, -1, 4) == Truncation(4, True)


def test_an_empty_epoch_at_the_log_end_is_dropped_even_when_nothing_is_cut() -> None:
    # We led epoch 2 and appended nothing in it: entry (2, 5) at our log end. The new leader
    # never saw epoch 2 and answers (1, 5) for it: nothing to cut, but epoch 2 must go, or every
    # fetch would report last_fetched_epoch=2 and be sent back to truncation forever.
    log = log_with([(0, 3), (1, 2), (2, 0)])
    assert log.leader_epoch_cache.latest_epoch == 2 and log.log_end_offset == 5
    cut = truncation_offset(log, 1, 5)
    assert cut == Truncation(5, True)
    effects = Effects()
    assert truncate(log, cut.offset, "leader_epoch", effects) == 0
    assert log.leader_epoch_cache.latest_epoch == 1 and log.log_end_offset == 5
    assert not [e for e in effects.events if e.name == "LogTruncated"]  # nothing removed


def test_log_truncated_names_the_removed_range() -> None:
    log = log_with([(0, 3), (1, 4)])
    effects = Effects()
    assert truncate(log, 4, "leader_epoch", effects, leader=2) == 3
    [event] = [e for e in effects.events if e.name == "LogTruncated"]
    fields = event.fields
    assert (fields["from_offset"], fields["to_offset"], fields["records_removed"]) == (4, 7, 3)
    assert (fields["topic"], fields["partition"], fields["reason"], fields["leader"]) == ("t", 0, "leader_epoch", 2)
    assert fields["bytes_removed"] > 0
    assert not log.drain_events()  # the storage engine's own note was folded in
