"""The flush of rolled segments as a job run off the event loop (node/log/flush_job.py)."""

from log_testkit import TP, TP_DIR, all_records, batch, new_log, open_manager, sized_batch

from brokerlab.disk import MemoryDisk, OsDisk
from brokerlab.record_batch import set_base_offset
from node.log.flush_job import FLUSH_RETRY_BACKOFF_MS
from node.log.producer_snapshot import snapshot_file_name
from node.log.segment import segment_file_name


def rolled_log(disk=None, **config):
    """Segments [0,1] rolled and [2] active (400-byte batches, 1000-byte segments)."""
    manager, log = new_log(disk, segment_bytes=1000, **config)
    for _ in range(3):
        log.append_as_leader(sized_batch(400), 0, 0)
    assert log.segment_count == 2 and log.recovery_point == 0
    return manager, log


def run_next_job(manager, jobs, now_ms: int, upto: int):
    """``tick`` hands out one more job, flushing up to ``upto``: run it and hand it back."""
    count = len(jobs)
    manager.tick(now_ms, jobs)
    assert len(jobs) == count + 1 and jobs[-1].upto == upto
    jobs[-1].run()
    manager.on_flush_done(jobs[-1], now_ms)
    return jobs[-1]


def test_a_roll_gives_one_job_and_the_recovery_point_moves_only_when_it_completes():
    manager, log = rolled_log()
    jobs = []
    manager.tick(1, jobs)
    [job] = jobs
    assert job.upto == 2
    assert job.directory == TP_DIR  # the new segment file's name must be durable too
    assert log.recovery_point == 0  # nothing fsynced yet
    log.append_as_leader(sized_batch(400), 0, 2)
    log.append_as_leader(sized_batch(400), 0, 2)  # rolls again while the job is out
    manager.tick(2, jobs)
    assert jobs == [job]  # one job per log at a time
    job.run()
    assert log.recovery_point == 0  # the fsync alone claims nothing: the core learns on completion
    manager.on_flush_done(job, 3)
    assert log.recovery_point == 2
    assert manager.next_deadline_ms() <= 3  # the second roll's flush is due now
    run_next_job(manager, jobs, 3, upto=4)
    assert log.recovery_point == 4


def test_without_a_jobs_list_tick_flushes_in_place():
    disk = MemoryDisk()
    manager, log = rolled_log(disk)
    manager.tick(1)
    assert log.recovery_point == 2
    disk.crash()
    assert open_manager(disk).get(TP).log_end_offset == 2


def test_a_truncation_while_the_job_runs_makes_its_completion_claim_nothing():
    manager, log = rolled_log()
    log.append_as_leader(sized_batch(400), 0, 0)
    log.append_as_leader(sized_batch(400), 0, 0)  # [0,1] [2,3] rolled, [4] active
    jobs = []
    manager.tick(1, jobs)
    [job] = jobs
    assert job.upto == 4
    log.truncate_to(1)  # a follower truncating by leader epoch (flushes the shorter log itself)
    assert log.recovery_point == 1
    log.append_as_follower(_batch_at(1), 2)
    job.run()
    manager.on_flush_done(job, 2)
    assert log.recovery_point == 1  # not 4: past the log end, and offset 1 was never fsynced
    assert log.log_end_offset == 2


def test_a_segment_deletion_while_the_job_runs_reschedules_the_flush():
    manager, log = rolled_log()
    log.append_as_leader(sized_batch(400), 0, 0)
    jobs = []
    manager.tick(1, jobs)
    [job] = jobs  # segment [0,1], upto 2
    log.append_as_leader(sized_batch(400), 0, 1)  # rolls: [2,3] rolled, [4] active
    log.high_watermark = 4
    log.maybe_increment_log_start_offset(2)
    assert log.delete_old_segments(1) == 1  # segment 0 goes while its fsync runs
    job.run()
    assert job.gone  # its files were removed
    manager.on_flush_done(job, 2)
    assert log.recovery_point == 2  # the log start, not anything the job claims
    run_next_job(manager, jobs, 2, upto=4)
    assert log.recovery_point == 4


def test_power_loss_before_completion_loses_the_rolled_bytes_and_recovery_scans_from_the_old_point():
    disk = MemoryDisk()
    manager, log = new_log(disk, segment_bytes=1000, checkpoint_interval_ms=10)
    log.append_as_leader(sized_batch(400), 0, 0)
    log.flush(0)
    manager.tick(10)  # checkpoints recovery point 1
    log.append_as_leader(sized_batch(400), 0, 10)
    log.append_as_leader(sized_batch(400), 0, 10)  # rolls [0,1]
    jobs = []
    manager.tick(11, jobs)
    [job] = jobs
    disk.crash()  # before the job ran
    reopened = open_manager(disk, 12)
    [event] = reopened.recovery_events
    assert event.fields["recovery_point"] == 1
    assert event.fields["scan_start_offset"] == 0  # the segment holding the recovery point
    log = reopened.get(TP)
    assert log.log_end_offset == 1  # offset 1 was written, never fsynced
    assert len(all_records(log)) == 1
    assert log.append_as_leader(batch([b"next"]), 0, 12).base_offset == 1


def test_the_rolled_segment_survives_power_loss_once_the_job_ran():
    disk = MemoryDisk()
    manager, log = rolled_log(disk)
    run_next_job(manager, [], 1, upto=2)
    disk.crash()
    assert open_manager(disk).get(TP).log_end_offset == 2


def test_completion_after_the_log_was_deleted_does_not_raise(tmp_path):
    for disk in (MemoryDisk(), OsDisk(str(tmp_path))):
        manager, log = rolled_log(disk)
        jobs = []
        manager.tick(1, jobs)
        manager.delete(TP)  # closes and removes the files under the job
        jobs[0].run()
        assert jobs[0].gone
        manager.on_flush_done(jobs[0], 2)
        assert manager.get(TP) is None


def test_close_while_the_job_runs_flushes_everything_itself():
    disk = MemoryDisk()
    manager, log = rolled_log(disk)
    jobs = []
    manager.tick(1, jobs)
    manager.close()
    manager.on_flush_done(jobs[0], 2)  # dropped: the log is closed
    disk.crash()
    assert open_manager(disk).get(TP).log_end_offset == 3


class FailingFile:
    def __init__(self, inner, disk) -> None:
        self._inner, self._disk = inner, disk

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def fsync(self) -> None:
        if self._disk.failing:
            raise OSError(5, "Input/output error")
        self._inner.fsync()


class FailingFsyncDisk(MemoryDisk):
    """fsync of segment 0's log file fails (EIO) while ``failing``."""

    failing = True

    def open(self, path):
        file = super().open(path)
        return FailingFile(file, self) if path.endswith(segment_file_name(0)) else file


def test_an_fsync_error_claims_nothing_and_retries_after_a_back_off():
    disk = FailingFsyncDisk()
    manager, log = rolled_log(disk)
    jobs = []
    run_next_job(manager, jobs, 1, upto=2)
    assert log.recovery_point == 0
    assert [e.name for e in log.drain_events()] == ["LogFlushFailed"]
    assert log.next_deadline_ms() == 1 + FLUSH_RETRY_BACKOFF_MS
    disk.failing = False
    run_next_job(manager, jobs, 1 + FLUSH_RETRY_BACKOFF_MS, upto=2)
    assert log.recovery_point == 2
    snapshot = f"{TP_DIR}/{snapshot_file_name(2)}"  # the roll's, unsynced: each try fsyncs it
    assert jobs[0].snapshots == jobs[1].snapshots == [snapshot]
    disk.crash()
    assert disk.exists(snapshot)


def _batch_at(offset: int) -> bytes:
    data = bytearray(sized_batch(400))
    set_base_offset(data, 0, offset)
    return bytes(data)
