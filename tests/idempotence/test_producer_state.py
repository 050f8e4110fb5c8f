"""Broker side: the leader's sequence checks, duplicate answers, snapshots, recovery, truncation.

Real PartitionLogs on a MemoryDisk (``LogManager`` for restarts, clean and unclean).
"""

from __future__ import annotations

import pytest

from brokerlab.disk import MemoryDisk
from brokerlab.errors import ErrorCode
from brokerlab.ids import TopicPartition
from brokerlab.record_batch import encode_batch
from node.log import LogConfig, LogManager
from node.log.producer_snapshot import SnapshotError, decode, encode, snapshot_file_name, snapshot_offsets
from node.log.producer_state import (
    RETAINED_RUNS,
    DuplicateSequenceError,
    InvalidProducerBatchError,
    InvalidProducerEpochError,
    OutOfOrderSequenceError,
    ProducerStateManager,
    UnknownProducerIdError,
)

TP = TopicPartition("orders", 0)
DIR = "orders-0"
PID, OTHER = 7, 8


def batch(pid: int, epoch: int, sequence: int, count: int = 1, tag: bytes = b"v") -> bytes:
    return encode_batch([(1_000 + i, None, b"%s-%d-%d" % (tag, pid, sequence + i), ()) for i in range(count)],
                        producer_id=pid, producer_epoch=epoch, base_sequence=sequence)


def plain(value: bytes = b"plain") -> bytes:
    return encode_batch([(1_000, None, value, ())])


def new_log(disk: MemoryDisk | None = None, **config):
    disk = disk or MemoryDisk()
    manager = LogManager(disk, LogConfig(**config), 0)
    return disk, manager, manager.get_or_create(TP, 0)


def append(log, *payloads: bytes) -> tuple[int, int]:
    info = log.append_as_leader(b"".join(payloads), 0, 5)
    return info.base_offset, info.last_offset


# ---- the leader's checks -----------------------------------------------------------------------


def test_a_new_producer_starts_at_sequence_0_and_continues_in_order() -> None:
    _, _, log = new_log()
    assert append(log, batch(PID, 0, 0, 3)) == (0, 2)
    assert append(log, batch(PID, 0, 3, 2)) == (3, 4)
    entry = log.producer_state.entry(PID)
    assert (entry.producer_epoch, entry.last_sequence, entry.last_offset) == (0, 4, 4)


@pytest.mark.parametrize(("payload", "error"), [
    (batch(PID, 0, 5), OutOfOrderSequenceError),  # a gap: 3 expected
    (batch(PID, 0, 0), DuplicateSequenceError),  # covered by no retained run, but before the last sequence
    (batch(OTHER, 0, 4), UnknownProducerIdError),  # an unknown producer must start at 0
    (batch(PID, 1, 2), OutOfOrderSequenceError),  # a new epoch must start at 0
])
def test_sequence_errors_append_nothing(payload: bytes, error: type) -> None:
    _, _, log = new_log()
    append(log, batch(PID, 0, 0, 1))
    append(log, plain())  # ends the producer's run: sequence 1..2 below is a run of its own
    append(log, batch(PID, 0, 1, 2))
    log.producer_state.entry(PID).runs.popleft()  # as if sequence 0 had aged out of the window
    end = log.log_end_offset
    with pytest.raises(error) as raised:
        append(log, payload)
    assert log.log_end_offset == end
    assert raised.value.error_code == {
        OutOfOrderSequenceError: ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER,
        DuplicateSequenceError: ErrorCode.DUPLICATE_SEQUENCE_NUMBER,
        UnknownProducerIdError: ErrorCode.UNKNOWN_PRODUCER_ID,
    }[error]


def test_an_older_epoch_is_fenced_and_a_newer_one_starts_again_at_0() -> None:
    _, _, log = new_log()
    append(log, batch(PID, 3, 0, 2))
    with pytest.raises(InvalidProducerEpochError) as raised:
        append(log, batch(PID, 2, 2))
    assert raised.value.error_code == ErrorCode.INVALID_PRODUCER_EPOCH
    assert append(log, batch(PID, 4, 0)) == (2, 2)
    entry = log.producer_state.entry(PID)
    assert (entry.producer_epoch, entry.last_sequence, len(entry.runs)) == (4, 0, 1)


def test_a_retry_is_answered_with_its_original_offsets_and_appends_nothing() -> None:
    _, _, log = new_log()
    append(log, plain(b"before"))
    # Three batches of one request, appended back to back: one run covering all of them.
    assert append(log, batch(PID, 0, 0, 2), batch(PID, 0, 2, 3), batch(PID, 0, 5, 1)) == (1, 6)
    append(log, batch(OTHER, 0, 0))
    end = log.log_end_offset
    assert append(log, batch(PID, 0, 2, 3)) == (3, 5)  # the middle batch alone
    assert append(log, batch(PID, 0, 0, 2), batch(PID, 0, 2, 3)) == (1, 5)
    assert log.log_end_offset == end
    assert [e.name for e in log.drain_events()].count("DuplicateProduceAnswered") == 2
    assert len(log.producer_state.entry(PID).runs) == 1


def test_five_runs_are_retained_per_producer() -> None:
    _, _, log = new_log()
    for sequence in range(RETAINED_RUNS + 1):
        append(log, batch(PID, 0, sequence))
        append(log, batch(OTHER, 0, sequence))  # interleaved: every batch is a run of its own
    assert append(log, batch(PID, 0, 1)) == (2, 2)  # the oldest retained
    with pytest.raises(DuplicateSequenceError):
        append(log, batch(PID, 0, 0))  # aged out: written long ago, offsets unknown


def test_a_payload_mixing_a_retry_with_new_batches_is_refused() -> None:
    _, _, log = new_log()
    append(log, batch(PID, 0, 0))
    with pytest.raises(InvalidProducerBatchError):
        append(log, batch(PID, 0, 0), batch(PID, 0, 1))
    assert append(log, batch(PID, 0, 1)) == (1, 1)


def test_batches_without_a_producer_id_are_not_checked() -> None:
    _, _, log = new_log()
    assert append(log, plain(), plain()) == (0, 1)
    assert len(log.producer_state) == 0


def test_a_follower_builds_the_same_state_as_its_leader() -> None:
    _, _, leader = new_log()
    append(leader, batch(PID, 0, 0, 2), batch(PID, 0, 2, 2))
    append(leader, plain())
    append(leader, batch(OTHER, 1, 0), batch(PID, 0, 4))
    _, _, follower = new_log()
    follower.append_as_follower(leader.read(0, 1 << 20), 9)
    assert snapshot(follower.producer_state) == snapshot(leader.producer_state)


def snapshot(state: ProducerStateManager):
    return {pid: (e.producer_epoch, [r.as_tuple() for r in e.runs]) for pid, e in state.producers.items()}


# ---- snapshots ---------------------------------------------------------------------------------


def test_snapshot_round_trip_and_corruption() -> None:
    _, _, log = new_log()
    append(log, batch(PID, 2, 0, 3), plain(), batch(OTHER, 0, 0))
    data = encode(log.producer_state)
    assert snapshot(decode(data)) == snapshot(log.producer_state)
    flipped = bytearray(data)
    flipped[-1] ^= 1
    with pytest.raises(SnapshotError):
        decode(bytes(flipped))
    with pytest.raises(SnapshotError):
        decode(data[:-3])


def test_snapshots_at_segment_roll_and_clean_shutdown_spare_the_replay() -> None:
    disk, manager, log = new_log(segment_bytes=400)
    offsets = []
    for sequence in range(0, 12, 2):
        offsets.append(append(log, batch(PID, 0, sequence, 2)))
    rolls = [e.fields["base_offset"] for e in log.drain_events() if e.name == "SegmentRolled"]
    assert rolls and snapshot_offsets(disk, DIR) == rolls  # one snapshot per roll, at the new base
    state = snapshot(log.producer_state)
    manager.close()
    assert snapshot_offsets(disk, DIR)[-1] == log.log_end_offset  # the clean shutdown's
    reopened = LogManager(disk, LogConfig(segment_bytes=400), 10).get(TP)
    reason, loaded = reopened.producer_state_loaded
    assert (loaded.snapshot_offset, loaded.replayed_batches) == (log.log_end_offset, 0)
    assert snapshot(reopened.producer_state) == state
    assert reopened.append_as_leader(batch(PID, 0, 10, 2), 0, 11).base_offset == offsets[-1][0]  # a retry


def test_an_unclean_restart_replays_only_the_batches_after_the_last_snapshot() -> None:
    disk, manager, log = new_log(segment_bytes=400)
    for sequence in range(0, 14, 2):
        append(log, batch(PID, 0, sequence, 2))
    last_roll = snapshot_offsets(disk, DIR)[-1]
    state = snapshot(log.producer_state)
    # kill -9: no clean-shutdown marker, no final snapshot.
    reopened = LogManager(disk, LogConfig(segment_bytes=400), 10).get(TP)
    _, loaded = reopened.producer_state_loaded
    assert loaded.snapshot_offset == last_roll
    assert 0 < loaded.replayed_batches == (log.log_end_offset - last_roll) // 2
    assert snapshot(reopened.producer_state) == state


def test_a_corrupt_snapshot_falls_back_to_an_older_one() -> None:
    disk, manager, log = new_log(segment_bytes=400)
    for sequence in range(0, 14, 2):
        append(log, batch(PID, 0, sequence, 2))
    state = snapshot(log.producer_state)
    offsets = snapshot_offsets(disk, DIR)
    disk.write_file_atomic(f"{DIR}/{snapshot_file_name(offsets[-1])}", b"\x00\x01garbage")
    reopened = LogManager(disk, LogConfig(segment_bytes=400), 10).get(TP)
    _, loaded = reopened.producer_state_loaded
    assert loaded.snapshot_offset == offsets[-2] and loaded.problem
    assert snapshot(reopened.producer_state) == state
    assert offsets[-1] not in snapshot_offsets(disk, DIR)


# ---- truncation ----------------------------------------------------------------------------------


def test_truncation_rebuilds_the_state_from_the_snapshots_and_the_log_below_the_cut() -> None:
    disk, _, log = new_log(segment_bytes=400)
    for sequence in range(0, 16, 2):
        append(log, batch(PID, 0, sequence, 2))
    snapshots_before = snapshot_offsets(disk, DIR)
    cut = 8  # keeps sequences 0..7
    log.truncate_to(cut)
    assert all(offset <= cut for offset in snapshot_offsets(disk, DIR))
    assert len(snapshot_offsets(disk, DIR)) < len(snapshots_before)
    entry = log.producer_state.entry(PID)
    assert (entry.last_sequence, entry.last_offset) == (7, 7)
    # A retry of a batch that survived is a duplicate; one that was cut off is written again.
    assert append(log, batch(PID, 0, 6, 2)) == (6, 7)
    assert append(log, batch(PID, 0, 8, 2)) == (8, 9)
    with pytest.raises(OutOfOrderSequenceError):
        append(log, batch(PID, 0, 12, 2))


def test_a_full_truncation_forgets_every_producer() -> None:
    disk, _, log = new_log(segment_bytes=400)
    for sequence in range(0, 10, 2):
        append(log, batch(PID, 0, sequence, 2))
    log.truncate_fully_and_start_at(20)
    assert len(log.producer_state) == 0 and snapshot_offsets(disk, DIR) == []
    with pytest.raises(UnknownProducerIdError):
        append(log, batch(PID, 0, 10, 2))


def test_an_idle_producer_expires_at_a_snapshot_by_broker_time_not_by_batch_timestamps() -> None:
    _, _, log = new_log()
    day_ms = 24 * 3600 * 1000
    log.append_as_leader(batch(PID, 0, 0, 2), 0, 10_000)  # the batches carry 1970 timestamps
    log.roll(20_000)
    assert log.producer_state.entry(PID) is not None  # seen 10 s ago, broker time
    log.append_as_leader(batch(OTHER, 0, 0), 0, 10_000 + day_ms)
    log.roll(10_000 + day_ms + 1)
    assert log.producer_state.entry(PID) is None and log.producer_state.entry(OTHER) is not None
