from log_testkit import TP, TP_DIR, CountingDisk, all_records, batch, new_log, open_manager, sized_batch

from brokerlab.disk import MemoryDisk, OsDisk
from brokerlab.ids import TopicPartition
from node.log.checkpoints import (
    CLEAN_SHUTDOWN_MARKER,
    LOG_START_CHECKPOINT,
    PARTITION_CONFIG,
    PARTITION_METADATA,
    RECOVERY_POINT_CHECKPOINT,
    REPLICATION_CHECKPOINT,
)
from node.log.segment import segment_file_name

SEGMENT_0 = f"{TP_DIR}/{segment_file_name(0)}"


def test_clean_shutdown_writes_checkpoints_and_the_marker_which_start_up_removes():
    disk = MemoryDisk()
    manager, log = new_log(disk)
    log.append_as_leader(batch([b"a", b"b"]), 0, 0)
    log.high_watermark = 2
    manager.close()
    assert disk.exists(CLEAN_SHUTDOWN_MARKER)
    assert disk.read_file(RECOVERY_POINT_CHECKPOINT) == b"0\n1\norders 0 2\n"
    assert disk.read_file(REPLICATION_CHECKPOINT) == b"0\n1\norders 0 2\n"
    assert disk.read_file(LOG_START_CHECKPOINT) == b"0\n1\norders 0 0\n"
    reopened = open_manager(disk)
    assert not disk.exists(CLEAN_SHUTDOWN_MARKER)  # a crash from now on is unclean
    assert reopened.recovery_events == []  # clean: nothing scanned
    log = reopened.get(TP)
    assert (log.log_end_offset, log.high_watermark, log.recovery_point) == (2, 2, 2)
    assert reopened.partitions() == [TP]
    assert [r[3] for r in all_records(log)] == [b"a", b"b"]


def test_unclean_start_recovers_and_reports_it():
    disk = MemoryDisk()
    manager, log = new_log(disk)
    log.append_as_leader(batch([b"a"]), 0, 0)
    log.append_as_leader(batch([b"b"]), 0, 0)
    size = log.size_bytes
    disk.open(SEGMENT_0).truncate(size - 5)  # a torn write
    reopened = open_manager(disk)
    (event,) = reopened.recovery_events
    assert event.name == "LogRecovered"
    assert event.fields["topic"] == "orders" and event.fields["partition"] == 0
    assert event.fields["truncated_bytes"] == size // 2 - 5
    assert event.fields["log_end_offset"] == 1
    assert [r[3] for r in all_records(reopened.get(TP))] == [b"a"]
    assert reopened.get(TP).append_as_leader(batch([b"c"]), 0, 0).base_offset == 1


def test_flush_policy_batch_survives_power_loss():
    disk = MemoryDisk()
    _, log = new_log(disk, flush_policy="batch")
    for i in range(3):
        log.append_as_leader(batch([b"v%d" % i]), 0, 0)
        assert log.recovery_point == log.log_end_offset
    disk.crash()
    assert [r[3] for r in all_records(open_manager(disk).get(TP))] == [b"v0", b"v1", b"v2"]


def test_flush_policy_none_loses_the_unflushed_tail_on_power_loss_but_not_rolled_segments():
    disk = MemoryDisk()
    manager, log = new_log(disk, segment_bytes=1000)
    for _ in range(3):
        log.append_as_leader(sized_batch(400), 0, 0)  # the third append rolls
    assert log.recovery_point == 0
    assert manager.next_deadline_ms() == 0  # the rolled segment is due for its flush
    manager.tick(1)
    assert log.recovery_point == 2
    disk.crash()
    reopened = open_manager(disk)
    assert reopened.get(TP).log_end_offset == 2
    assert reopened.recovery_events[0].fields["log_end_offset"] == 2


def test_flush_policy_interval_flushes_on_tick():
    disk = CountingDisk()
    manager, log = new_log(disk, flush_policy="interval", flush_interval_ms=100)
    log.append_as_leader(batch([b"a"]), 0, now_ms=10)
    assert log.next_deadline_ms() == 100
    manager.tick(99)
    assert log.recovery_point == 0
    manager.tick(100)
    assert log.recovery_point == 1
    assert log.next_deadline_ms() == 10 + log.config.segment_ms  # only the age roll is left
    disk.crash()
    assert open_manager(disk).get(TP).log_end_offset == 1


def test_checkpoints_are_written_periodically_and_only_when_changed():
    disk = CountingDisk()
    manager, log = new_log(disk, checkpoint_interval_ms=1000, high_watermark_checkpoint_interval_ms=100,
                           flush_policy="batch")
    log.append_as_leader(batch([b"a"]), 0, 0)
    log.high_watermark = 1
    manager.tick(100)
    assert disk.read_file(REPLICATION_CHECKPOINT) == b"0\n1\norders 0 1\n"
    assert disk.read_file(RECOVERY_POINT_CHECKPOINT) == b"0\n0\n"  # written at start, before the log
    disk.reset_counts()
    manager.tick(999)
    assert disk.atomic_writes == 0  # the high watermark did not change: no rewrite
    manager.tick(1000)
    assert disk.read_file(RECOVERY_POINT_CHECKPOINT) == b"0\n1\norders 0 1\n"


def test_a_corrupt_or_missing_index_is_rebuilt_on_a_clean_start():
    disk = MemoryDisk()
    manager, log = new_log(disk, index_interval_bytes=500)
    for i in range(10):
        log.append_as_leader(sized_batch(300, timestamp_ms=i), 0, 0)
    entries = log.active_segment.index.entries()
    assert entries
    manager.close()
    disk.corrupt(f"{TP_DIR}/{segment_file_name(0, '.index')}", 4, b"\xff\xff\xff\xff")
    disk.remove(f"{TP_DIR}/{segment_file_name(0, '.timeindex')}")
    log = open_manager(disk, index_interval_bytes=500).get(TP)
    assert log.active_segment.index.entries() == entries
    assert log.active_segment.max_timestamp_ms == 9
    assert log.offset_for_timestamp(5) == (5, 5)
    assert len(all_records(log)) == 10


def test_topic_configs_are_applied_and_persisted_for_the_next_start():
    disk = MemoryDisk()
    manager = open_manager(disk)
    log = manager.get_or_create(TP, 0, {"segment.bytes": "1000", "min.insync.replicas": "2"})
    assert log.config.segment_bytes == 1000
    manager.close()
    assert disk.read_file(f"{TP_DIR}/{PARTITION_CONFIG}") == b"min.insync.replicas=2\nsegment.bytes=1000\n"
    manager = open_manager(disk)
    assert manager.get(TP).config.segment_bytes == 1000  # before any metadata arrives
    log = manager.get_or_create(TP, 0, {"segment.bytes": "2000"})
    assert log.config.segment_bytes == 2000


def test_a_log_left_by_a_deleted_topic_of_the_same_name_is_replaced():
    disk = MemoryDisk()
    manager = open_manager(disk)
    log = manager.get_or_create(TP, 0, topic_id="old-id")
    log.append_as_leader(batch([b"a"]), 0, 0)
    assert disk.read_file(f"{TP_DIR}/{PARTITION_METADATA}") == b"version: 0\ntopic_id: old-id\n"
    assert manager.get_or_create(TP, 0, topic_id="old-id") is log
    fresh = manager.get_or_create(TP, 0, topic_id="new-id")
    assert fresh is not log and fresh.log_end_offset == 0 and fresh.topic_id == "new-id"


def test_delete_removes_the_directory_and_its_checkpoint_entries():
    disk = MemoryDisk()
    manager = open_manager(disk)
    other = TopicPartition("other", 3)
    manager.get_or_create(TP, 0).append_as_leader(batch([b"a"]), 0, 0)
    manager.get_or_create(other, 0)
    manager.delete(TP)
    assert manager.partitions() == [other]
    assert not disk.exists(SEGMENT_0)
    assert b"orders" not in disk.read_file(LOG_START_CHECKPOINT)
    manager.delete(TP)  # already gone: nothing to do
    manager.close()
    assert open_manager(disk).partitions() == [other]


def test_next_deadline_covers_housekeeping():
    manager, log = new_log(retention_check_interval_ms=500, checkpoint_interval_ms=700,
                           high_watermark_checkpoint_interval_ms=900)
    assert manager.next_deadline_ms() == 500
    manager.tick(500)
    assert manager.next_deadline_ms() == 700


def test_os_disk_round_trip_and_clean_restart(tmp_path):
    disk = OsDisk(str(tmp_path))
    manager, log = new_log(disk, segment_bytes=2000, flush_policy="batch")
    for i in range(20):
        log.append_as_leader(sized_batch(300, timestamp_ms=i), 1, 0)
    expected = all_records(log)
    manager.close()
    assert (tmp_path / CLEAN_SHUTDOWN_MARKER).exists()
    assert sorted(p.name for p in (tmp_path / TP_DIR).iterdir())[:3] == [
        segment_file_name(0, ".index"), segment_file_name(0, ".log"), segment_file_name(0, ".timeindex")]
    manager = open_manager(disk)
    log = manager.get(TP)
    assert all_records(log) == expected
    assert log.leader_epoch_cache.entries == [(1, 0)]
    manager.close()


def test_os_disk_recovery_cuts_a_torn_tail(tmp_path):
    disk = OsDisk(str(tmp_path))
    manager, log = new_log(disk, segment_bytes=2000)
    for i in range(10):
        log.append_as_leader(sized_batch(300, timestamp_ms=i), 0, 0)
    expected = all_records(log)
    active = log.active_segment
    path = tmp_path / TP_DIR / segment_file_name(active.base_offset)
    with open(path, "r+b") as handle:  # a write torn by a crash: half of the last batch
        handle.truncate(active.size - 150)
    with open(path, "ab") as handle:
        handle.write(b"\x00" * 7)
    manager = open_manager(disk)
    (event,) = manager.recovery_events
    assert event.fields["truncated_bytes"] == 157
    assert all_records(manager.get(TP)) == expected[:-1]


def test_the_deadline_follows_appends_rolls_and_flushes_of_any_log():
    manager = open_manager(MemoryDisk(), segment_ms=100, retention_check_interval_ms=10_000,
                           checkpoint_interval_ms=10_000, high_watermark_checkpoint_interval_ms=10_000)
    logs = [manager.get_or_create(TopicPartition("t", p), 0) for p in range(3)]
    assert manager.next_deadline_ms() == 10_000
    logs[1].append_as_leader(batch([b"a"]), 0, now_ms=5)
    assert manager.next_deadline_ms() == 105  # the age roll of partition 1
    logs[2].append_as_leader(batch([b"b"]), 0, now_ms=50)
    assert manager.next_deadline_ms() == 105
    events = manager.tick(105)
    assert [(e.name, e.fields["partition"]) for e in events] == [("SegmentRolled", 1)]
    assert logs[1].recovery_point == 1  # the rolled segment was flushed in the same tick
    assert manager.next_deadline_ms() == 150
    manager.delete(TopicPartition("t", 2))
    assert manager.next_deadline_ms() == 10_000
