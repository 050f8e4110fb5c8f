"""The periodic offset checkpoints as jobs run off the event loop (node/log/checkpoints.py
``CheckpointWriteJob``; Kafka's "highwatermark-checkpoint" and "kafka-recovery-point-checkpoint")."""

from pathlib import Path

from log_testkit import TP, CountingDisk, batch, new_log, open_manager

from brokerlab.disk import MemoryDisk, OsDisk
from node.log.checkpoints import (
    LOG_START_CHECKPOINT,
    RECOVERY_POINT_CHECKPOINT,
    REPLICATION_CHECKPOINT,
    CheckpointWriteJob,
)

HW_ONLY = dict(high_watermark_checkpoint_interval_ms=100, checkpoint_interval_ms=10_000)


def hw_log(disk, hw: int = 1, **config):
    """One log with ``hw`` one-record batches below its high watermark, none of it checkpointed."""
    manager, log = new_log(disk, **{**HW_ONLY, **config})
    for _ in range(hw):
        log.append_as_leader(batch([b"r"]), 0, 0)
    log.high_watermark = hw
    return manager, log


def hw_job(manager, now_ms: int = 100) -> CheckpointWriteJob:
    jobs = []
    manager.tick(now_ms, jobs)
    [job] = jobs
    assert isinstance(job, CheckpointWriteJob) and job.name == REPLICATION_CHECKPOINT
    return job


def test_a_due_checkpoint_is_a_job_and_the_loop_does_no_fsync():
    disk = CountingDisk()
    manager, log = hw_log(disk)
    disk.reset_counts()
    jobs = []
    manager.tick(100, jobs)
    [job] = jobs
    assert disk.atomic_writes == 0 and disk.synced == []  # nothing written on the loop
    assert disk.read_file(REPLICATION_CHECKPOINT) == b"0\n0\n"  # written at start, before the log
    assert manager._written[REPLICATION_CHECKPOINT] == {}
    log.high_watermark = 0  # values were taken when the job was made, not when it runs
    job.run()
    assert disk.atomic_writes == 1
    assert disk.read_file(REPLICATION_CHECKPOINT) == b"0\n1\norders 0 1\n"
    assert manager._written[REPLICATION_CHECKPOINT] == {}  # only completion updates it
    assert manager.on_blocking_done(job, 101) == []
    assert manager._written[REPLICATION_CHECKPOINT] == {TP: 1}


def test_a_due_write_while_one_is_out_gives_no_second_job():
    manager, log = hw_log(MemoryDisk())
    job = hw_job(manager)
    log.high_watermark = 1  # unchanged and changed alike: the job is still out
    jobs = []
    manager.tick(200, jobs)
    assert jobs == []
    job.run()
    manager.on_blocking_done(job, 201)
    manager.tick(300, jobs)
    assert jobs == []  # written already: spare the fsyncs
    log.append_as_leader(batch([b"s"]), 0, 300)
    log.high_watermark = 2
    manager.tick(400, jobs)
    assert [job.offsets for job in jobs] == [{TP: 2}]


def test_both_periodic_files_leave_as_jobs():
    manager, log = new_log(MemoryDisk(), checkpoint_interval_ms=100, high_watermark_checkpoint_interval_ms=10_000)
    log.append_as_leader(batch([b"r"]), 0, 0)
    log.flush(0)
    log.high_watermark = 1
    assert log.maybe_increment_log_start_offset(1)  # Kafka's DeleteRecords
    jobs = []
    manager.tick(100, jobs)
    assert {job.name: job.offsets for job in jobs} == {
        RECOVERY_POINT_CHECKPOINT: {TP: 1}, LOG_START_CHECKPOINT: {TP: 1},
    }


def test_power_loss_before_the_job_ran_keeps_the_old_checkpoint():
    disk = MemoryDisk()
    manager, log = hw_log(disk, hw=2)
    log.flush(0)
    hw_job(manager)
    disk.crash()
    reopened = open_manager(disk, 1, **HW_ONLY)
    assert reopened.get(TP).high_watermark == 0  # lower is safe: the leader tells the rest
    assert reopened.get(TP).log_end_offset == 2


def test_power_loss_after_the_job_ran_keeps_the_new_checkpoint():
    disk = MemoryDisk()
    manager, log = hw_log(disk, hw=2)
    log.flush(0)
    hw_job(manager).run()  # completion never arrives: the file is durable all the same
    disk.crash()
    assert open_manager(disk, 1, **HW_ONLY).get(TP).high_watermark == 2


def test_the_recovery_point_checkpoint_lost_before_its_job_ran_scans_from_the_old_point():
    disk = MemoryDisk()
    manager, log = new_log(disk, checkpoint_interval_ms=100, high_watermark_checkpoint_interval_ms=10_000)
    log.append_as_leader(batch([b"a", b"b"]), 0, 0)
    log.flush(0)
    jobs = []
    manager.tick(100, jobs)
    assert {job.name: job.offsets for job in jobs}[RECOVERY_POINT_CHECKPOINT] == {TP: 2}
    disk.crash()
    reopened = open_manager(disk, 1)
    [event] = reopened.recovery_events
    assert event.fields["recovery_point"] == 0
    assert reopened.get(TP).log_end_offset == 2


def test_close_while_a_job_is_out_keeps_the_final_checkpoint():
    for run_before_close in (False, True):
        disk = MemoryDisk()
        manager, log = hw_log(disk)
        job = hw_job(manager)
        log.append_as_leader(batch([b"s"]), 0, 100)
        log.high_watermark = 2
        if run_before_close:
            job.run()
        manager.close()
        assert disk.read_file(REPLICATION_CHECKPOINT) == b"0\n1\norders 0 2\n"
        job.run()  # an older job landing after close writes nothing
        assert manager.on_blocking_done(job, 200) == []
        assert disk.read_file(REPLICATION_CHECKPOINT) == b"0\n1\norders 0 2\n"
        disk.crash()
        assert open_manager(disk, 300).get(TP).high_watermark == 2


def test_a_synchronous_write_supersedes_a_job_still_out():
    disk = MemoryDisk()
    manager, log = hw_log(disk, hw=2)
    job = hw_job(manager)
    log.truncate_to(1)  # a follower's truncation writes the checkpoints at once
    assert disk.read_file(REPLICATION_CHECKPOINT) == b"0\n1\norders 0 1\n"
    job.run()
    assert disk.read_file(REPLICATION_CHECKPOINT) == b"0\n1\norders 0 1\n"  # did not land over it
    manager.on_blocking_done(job, 101)
    assert manager._written[REPLICATION_CHECKPOINT] == {TP: 1}


def test_a_job_run_after_a_truncations_write_cannot_land_over_it(tmp_path: Path):
    # The real driver's thread may run the job after the loop's synchronous write: the disk
    # orders the two by the tickets taken with their content, and drops the older write.
    for disk in (MemoryDisk(), OsDisk(str(tmp_path))):
        manager, log = hw_log(disk, hw=2)
        job = hw_job(manager)
        log.truncate_to(1)
        job.run()  # its thread, only now
        assert not job.wrote
        assert disk.read_file(REPLICATION_CHECKPOINT) == b"0\n1\norders 0 1\n"
        assert manager.on_blocking_done(job, 101) == []
        assert disk.read_file(REPLICATION_CHECKPOINT) == b"0\n1\norders 0 1\n"


class FailingDisk(MemoryDisk):
    def __init__(self) -> None:
        super().__init__()
        self.failing = False

    def write_file_atomic(self, path: str, data: bytes, ticket: int | None = None) -> bool:
        if self.failing:
            raise OSError(28, "No space left on device")
        return super().write_file_atomic(path, data, ticket)


def test_a_failed_write_is_reported_and_retried_at_the_next_interval():
    disk = FailingDisk()
    manager, log = hw_log(disk)
    job = hw_job(manager)
    disk.failing = True
    job.run()  # no exception
    [event] = manager.on_blocking_done(job, 101)
    assert event.name == "CheckpointWriteFailed"
    assert event.fields["file"] == REPLICATION_CHECKPOINT and "No space left" in event.fields["error"]
    assert manager._written[REPLICATION_CHECKPOINT] == {}
    disk.failing = False
    retry = hw_job(manager, 200)
    assert retry.offsets == {TP: 1}
    retry.run()
    assert manager.on_blocking_done(retry, 201) == []
    assert disk.read_file(REPLICATION_CHECKPOINT) == b"0\n1\norders 0 1\n"


def test_without_a_jobs_list_tick_writes_in_place():
    disk = MemoryDisk()
    manager, log = hw_log(disk)
    log.flush(0)
    manager.tick(100)
    disk.crash()
    assert open_manager(disk, 1).get(TP).high_watermark == 1
