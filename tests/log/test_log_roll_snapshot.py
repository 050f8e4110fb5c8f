"""A roll's producer snapshot is written unsynced and fsynced by the roll flush job (Kafka's
``takeSnapshot(sync = false)`` + the "flush-log" task), or by any synchronous flush."""

import pytest
from log_testkit import TP, TP_DIR, CountingDisk, new_log, open_manager

from brokerlab.disk import MemoryDisk
from brokerlab.record_batch import encode_batch
from node.log.producer_snapshot import snapshot_file_name, snapshot_offsets

PID = 7


def idempotent(sequence: int) -> bytes:
    """A 400-byte batch of producer ``PID`` at ``sequence`` (two fill a 1000-byte segment)."""
    return encode_batch([(1_000, b"k", b"x" * 312, ())], producer_id=PID, producer_epoch=0,
                        base_sequence=sequence)


def produce(log, first: int, last: int) -> None:
    for sequence in range(first, last):
        log.append_as_leader(idempotent(sequence), 0, 0)


def snapshot_path(offset: int) -> str:
    return f"{TP_DIR}/{snapshot_file_name(offset)}"


def test_the_roll_fsyncs_nothing_on_the_loop_and_the_job_fsyncs_its_snapshot_before_the_directory():
    disk = CountingDisk()
    manager, log = new_log(disk, segment_bytes=1000)
    produce(log, 0, 2)
    disk.reset_counts()
    produce(log, 2, 3)  # rolls at offset 2
    jobs = []
    manager.tick(1, jobs)
    assert (disk.fsyncs, disk.atomic_writes, disk.synced) == (0, 0, [])
    assert disk.unsynced_writes == 1 and snapshot_offsets(disk, TP_DIR) == [2]
    [job] = jobs
    assert job.snapshots == [snapshot_path(2)]
    job.run()
    assert disk.synced == [snapshot_path(2), TP_DIR]
    manager.on_flush_done(job, 2)
    assert log.recovery_point == 2


def rolled_twice(disk):
    """Segments [0,1] (flushed, its snapshot at 2 durable) and [2,3] rolled, [4] active; the
    roll at 4 wrote its snapshot unsynced and its job is out, not yet run."""
    manager, log = new_log(disk, segment_bytes=1000)
    produce(log, 0, 3)
    jobs = []
    manager.tick(1, jobs)
    jobs[0].run()
    manager.on_flush_done(jobs[0], 1)
    produce(log, 3, 5)
    manager.tick(2, jobs)
    assert jobs[1].upto == 4 and jobs[1].snapshots == [snapshot_path(4)]
    return manager, log, jobs[1]


def reopened_log(disk):
    log = open_manager(disk, 10, segment_bytes=1000).get(TP)
    return log, log.producer_state_loaded[1]


def test_power_loss_before_the_job_fsyncs_the_snapshot_loses_it_and_the_state_is_rebuilt_from_the_log():
    disk = MemoryDisk()
    manager, log, job = rolled_twice(disk)
    for file in job.files:  # the job got as far as the segment, not the snapshot
        file.fsync()
    disk.crash()
    log, loaded = reopened_log(disk)
    assert log.log_end_offset == 4  # offset 4 (the active segment) was never fsynced
    assert snapshot_offsets(disk, TP_DIR) == [2]
    assert (loaded.snapshot_offset, loaded.replayed_batches) == (2, 2)
    # Idempotence survives: a retry of sequence 3 is a duplicate, sequence 4 goes on at offset 4.
    assert log.append_as_leader(idempotent(3), 0, 11).base_offset == 3
    assert log.log_end_offset == 4
    assert log.append_as_leader(idempotent(4), 0, 11).base_offset == 4


def test_once_the_job_completed_the_snapshot_survives_power_loss():
    disk = MemoryDisk()
    manager, log, job = rolled_twice(disk)
    job.run()
    manager.on_flush_done(job, 3)
    disk.crash()
    log, loaded = reopened_log(disk)
    assert (loaded.snapshot_offset, loaded.replayed_batches) == (4, 0)
    assert log.append_as_leader(idempotent(3), 0, 11).base_offset == 3


@pytest.mark.parametrize("path", ["flush", "inline tick", "close"])
def test_the_synchronous_flush_paths_fsync_the_unsynced_snapshot(path):
    disk = MemoryDisk()
    manager, log = new_log(disk, segment_bytes=1000)
    produce(log, 0, 3)  # rolls at 2
    if path == "flush":
        log.flush(1)
    elif path == "inline tick":
        manager.tick(1)
    else:
        manager.tick(1, [])  # the job is out when the broker shuts down
        manager.close()
    assert log.recovery_point >= 2
    disk.crash()
    assert 2 in snapshot_offsets(disk, TP_DIR)


def test_a_truncation_deleting_the_snapshot_under_the_job_raises_nothing_and_the_flush_goes_on():
    disk = MemoryDisk()
    manager, log, job = rolled_twice(disk)
    log.truncate_to(3)  # deletes the snapshot at 4
    job.run()
    assert job.snapshots_gone == [snapshot_path(4)] and not job.gone
    manager.on_flush_done(job, 3)
    assert log._pending_snapshots == []
    produce(log, 3, 5)  # rolls at 4 again
    jobs = []
    manager.tick(4, jobs)
    jobs[0].run()
    manager.on_flush_done(jobs[0], 4)
    assert log.recovery_point == 4
    assert "LogFlushFailed" not in [event.name for event in log.drain_events()]


def test_a_snapshot_removed_by_retention_before_its_job_does_not_fail_the_job():
    disk = MemoryDisk()
    manager, log = new_log(disk, segment_bytes=1000)
    produce(log, 0, 3)  # rolls at 2
    jobs = []
    manager.tick(1, jobs)  # job 1: segment [0,1] and the snapshot at 2
    produce(log, 3, 5)  # rolls at 4
    log.high_watermark = 4
    log.maybe_increment_log_start_offset(4)
    assert log.delete_old_segments(1) == 2  # under job 1, which now claims nothing
    jobs[0].run()
    manager.on_flush_done(jobs[0], 2)
    assert log._pending_snapshots == [snapshot_path(2), snapshot_path(4)]  # requeued
    produce(log, 5, 7)  # rolls at 6; the snapshot at 2 (below the log start) goes
    manager.tick(3, jobs)
    assert jobs[1].snapshots == [snapshot_path(2), snapshot_path(4), snapshot_path(6)]
    jobs[1].run()
    assert jobs[1].snapshots_gone == [snapshot_path(2)] and not jobs[1].gone
    manager.on_flush_done(jobs[1], 3)
    assert log.recovery_point == 6
    assert "LogFlushFailed" not in [event.name for event in log.drain_events()]
    disk.crash()
    assert snapshot_offsets(disk, TP_DIR) == [4, 6]
