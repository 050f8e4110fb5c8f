import pytest
from log_testkit import TP, TP_DIR, all_records, batch, headers_of, new_log, open_manager, sized_batch

from brokerlab.disk import MemoryDisk
from node.log import InvalidOffsetError, OffsetOutOfRangeError
from node.log.checkpoints import LOG_START_CHECKPOINT, RECOVERY_POINT_CHECKPOINT
from node.log.segment import segment_file_name

DAY_MS = 24 * 3600 * 1000


def fill(log, count, size=400, start_ts=0, step_ts=1):
    for i in range(count):
        log.append_as_leader(sized_batch(size, timestamp_ms=start_ts + i * step_ts), 0, 0)
    log.high_watermark = log.log_end_offset


def test_time_retention_deletes_old_segments_but_never_the_active_one():
    manager, log = new_log(segment_bytes=1000, retention_ms=1000, retention_check_interval_ms=10)
    fill(log, 6, start_ts=0)  # segments [0,1] [2,3] [4,5], max timestamps 1, 3, 5
    manager.drain_events()  # the rolls
    assert [s.base_offset for s in log.segments] == [0, 2, 4]
    assert manager.tick(9) == []  # retention runs every 10 ms
    events = manager.tick(1_002)  # 1002 - 1 > 1000: segment 0 is old enough, segment 2 not yet
    assert [(e.name, e.fields["base_offset"], e.fields["reason"]) for e in events] == [
        ("SegmentDeleted", 0, "retention_ms")]
    assert manager.tick(1_010) == []  # not due again before 1012
    events = manager.tick(1_012)
    assert [(e.name, e.fields["base_offset"]) for e in events] == [("SegmentDeleted", 2)]
    assert log.log_start_offset == 4
    assert [s.base_offset for s in log.segments] == [4]
    manager.tick(100_000)
    assert log.segment_count == 1  # the active segment stays however old
    assert not manager.disk.exists(f"{TP_DIR}/{segment_file_name(0)}")
    with pytest.raises(OffsetOutOfRangeError):
        log.read(0, 100)
    assert [r[0] for r in all_records(log)] == [4, 5]


def test_size_retention_keeps_at_least_retention_bytes():
    manager, log = new_log(segment_bytes=1000, retention_bytes=1500, retention_check_interval_ms=1)
    fill(log, 7)  # segments of 800, 800, 800, 400 bytes
    manager.drain_events()
    assert log.size_bytes == 2800
    events = manager.tick(1)
    assert [e.fields["reason"] for e in events] == ["retention_bytes"]
    assert log.size_bytes == 2000 and log.log_start_offset == 2


def test_retention_never_deletes_past_the_high_watermark():
    manager, log = new_log(segment_bytes=1000, retention_ms=0, retention_check_interval_ms=1)
    fill(log, 6)
    log.high_watermark = 3
    manager.tick(DAY_MS)
    assert [s.base_offset for s in log.segments] == [2, 4]  # segment 2 ends past the high watermark


def test_log_start_offset_moves_up_and_whole_segments_below_it_go():
    manager, log = new_log(segment_bytes=1000, retention_check_interval_ms=1)
    fill(log, 6)
    manager.drain_events()
    assert log.maybe_increment_log_start_offset(3)
    assert not log.maybe_increment_log_start_offset(2)
    with pytest.raises(OffsetOutOfRangeError):
        log.maybe_increment_log_start_offset(7)
    with pytest.raises(OffsetOutOfRangeError):
        log.read(2, 100)
    assert [h.base_offset for h in headers_of(log.read(3, 100))] == [3]
    events = manager.tick(1)
    assert [(e.fields["base_offset"], e.fields["reason"]) for e in events] == [(0, "log_start_offset")]
    assert log.log_start_offset == 3


def test_truncate_cuts_at_the_batch_boundary_and_deletes_later_segments():
    disk = MemoryDisk()
    manager, log = new_log(disk, segment_bytes=1000, index_interval_bytes=100)
    for i in range(6):
        log.append_as_leader(batch([b"x" * 150, b"y" * 150], timestamp_ms=i * 10), 0, 0)
    assert [s.base_offset for s in log.segments] == [0, 4, 8]
    log.high_watermark = 12
    manager.drain_events()
    removed = log.truncate_to(5)  # inside batch 4..5: the whole batch goes
    assert removed == 8 and log.log_end_offset == 4
    assert [s.base_offset for s in log.segments] == [0, 4]
    assert log.active_segment.size == 0
    assert not disk.exists(f"{TP_DIR}/{segment_file_name(8)}")
    assert log.high_watermark == 4 and log.recovery_point <= 4
    (event,) = manager.drain_events()
    assert event.name == "LogTruncated"
    assert (event.fields["offset"], event.fields["records_removed"], event.fields["deleted_segments"]) == (4, 8, 1)
    assert log.truncate_to(3) == 2
    assert [r[0] for r in all_records(log)] == [0, 1]
    first = log.segments[0]
    assert all(offset < 2 for offset, _ in first.index.entries())
    assert all(offset < 2 for _, offset in first.time_index.entries())
    assert first.max_timestamp_ms == 1
    # Appends continue from the new end, in the truncated segment.
    log.append_as_leader(batch([b"z"]), 0, 0)
    assert [r[0] for r in all_records(log)] == [0, 1, 2]
    assert log.truncate_to(10) == 0
    with pytest.raises(InvalidOffsetError):
        log.truncate_to(-1)


def test_truncated_data_stays_gone_after_a_crash():
    disk = MemoryDisk()
    manager, log = new_log(disk, flush_policy="batch")
    for i in range(4):
        log.append_as_leader(batch([b"v%d" % i]), 0, 0)
    log.truncate_to(2)
    disk.crash()
    reopened = open_manager(disk).get(TP)
    assert [r[0] for r in all_records(reopened)] == [0, 1]


def test_truncate_to_the_log_start_empties_the_log():
    _, log = new_log()
    fill(log, 3)
    assert log.truncate_to(0) == 3
    assert (log.log_start_offset, log.log_end_offset, log.segment_count, log.size_bytes) == (0, 0, 1, 0)
    log.truncate_fully_and_start_at(50)
    assert (log.log_start_offset, log.log_end_offset) == (50, 50)
    assert log.append_as_leader(batch([b"a"]), 0, 0).base_offset == 50


def numbered(i: int) -> bytes:
    """A one-record 400-byte batch whose value starts with ``i``."""
    return batch([b"%03d" % i + b"x" * 309], timestamp_ms=i)


def test_a_truncation_lowers_the_checkpointed_recovery_point_before_the_log_grows_again():
    # Hypothesis's sequence: appends, clean restart, truncate, append, kill, power loss. The
    # truncation left recovery-point-offset-checkpoint above the new end, so the kill restart
    # trusted (did not scan or fsync) the segment the re-appended batch went to, yet claimed
    # everything durable; the power loss then cut the log below its recovery point.
    disk = MemoryDisk()
    manager, log = new_log(disk, segment_bytes=1000)  # two 400-byte batches a segment
    for i in range(6):
        log.append_as_leader(numbered(i), 0, 0)  # segments [0,1] [2,3] [4,5]
    manager.close()
    manager = open_manager(disk, segment_bytes=1000)
    log = manager.get(TP)
    assert log.truncate_to(5) == 1  # a follower's cut: segment 4 keeps [4]
    assert disk.read_file(RECOVERY_POINT_CHECKPOINT) == b"0\n1\norders 0 5\n"
    for i in range(5, 8):
        log.append_as_leader(numbered(i), 1, 0)  # 5 joins segment 4 (unflushed), 6 rolls [6,7]
    assert [s.base_offset for s in log.segments] == [0, 2, 4, 6]

    manager = open_manager(disk, segment_bytes=1000)  # kill -9: the page cache survives
    (event,) = manager.recovery_events
    assert (event.fields["scan_start_offset"], event.fields["truncated_bytes"]) == (4, 0)
    assert manager.get(TP).recovery_point == 8  # true: the scan fsynced segments 4 and 6

    disk.crash()
    log = open_manager(disk, segment_bytes=1000).get(TP)
    assert log.log_end_offset == 8
    assert [r[3][:3] for r in all_records(log)] == [b"%03d" % i for i in range(8)]
    assert [tuple(e) for e in log.leader_epoch_cache.entries] == [(0, 0), (1, 5)]


def test_a_full_truncation_below_the_log_start_lowers_the_checkpointed_log_start():
    disk = MemoryDisk()
    manager, log = new_log(disk, segment_bytes=1000, retention_check_interval_ms=1)
    for i in range(6):
        log.append_as_leader(numbered(i), 0, 0)
    log.high_watermark = 6
    log.maybe_increment_log_start_offset(4)
    manager.tick(1)  # retention drops [0,1] [2,3] and checkpoints the log start 4
    assert disk.read_file(LOG_START_CHECKPOINT) == b"0\n1\norders 0 4\n"
    log.truncate_to(2)  # below the log start: restart the log empty at 2
    assert disk.read_file(LOG_START_CHECKPOINT) == b"0\n1\norders 0 2\n"
    for i in range(2, 6):
        log.append_as_leader(numbered(i), 1, 0)
    log = open_manager(disk, segment_bytes=1000).get(TP)  # kill -9
    assert (log.log_start_offset, log.log_end_offset) == (2, 6)
    assert [r[0] for r in all_records(log)] == [2, 3, 4, 5]
