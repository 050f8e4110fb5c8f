"""Every partition log of a broker under one data directory (Kafka's LogManager).

Layout (relative to the Disk root, or to ``log_dir`` inside it)::

    <topic>-<partition>/                  one directory per partition (see partition_log.py)
    recovery-point-offset-checkpoint     offsets below which each log is fsynced
    replication-offset-checkpoint         high watermarks
    log-start-offset-checkpoint
    .brokerlab_cleanshutdown              present only while the broker is stopped cleanly

Start-up opens every partition directory, recovering those not covered by the clean-shutdown
marker, then removes the marker for as long as the broker runs. ``tick`` does the periodic
work (roll by age, flushes, retention, checkpoints); given a ``jobs`` list it leaves the flush of
rolled segments (flush_job.py) and the periodic checkpoint writes (``CheckpointWriteJob``) to the
caller's driver, completion through ``on_blocking_done``. Checkpoints that guard a change at once
(truncation, deletion, retention) and those of ``close`` are written synchronously.
``close`` flushes everything, writes the checkpoints and finally the marker.
"""

from __future__ import annotations

import re

from brokerlab.disk import Disk
from brokerlab.ids import TopicPartition
from brokerlab.sansio import BlockingJob, TraceEvent
from node.log import checkpoints
from node.log.checkpoints import CheckpointWriteJob
from node.log.config import LogConfig
from node.log.flush_job import SegmentFlushJob
from node.log.partition_log import PartitionLog

_PARTITION_DIR = re.compile(r"^(?P<topic>[a-zA-Z0-9._-]+)-(?P<partition>\d+)$")


def partition_dir_name(tp: TopicPartition) -> str:
    return f"{tp.topic}-{tp.partition}"


def parse_partition_dir_name(name: str) -> TopicPartition | None:
    match = _PARTITION_DIR.match(name)
    if match is None:
        return None
    return TopicPartition(match["topic"], int(match["partition"]))


class LogManager:
    def __init__(self, disk: Disk, config: LogConfig, now_ms: int, *, log_dir: str = "") -> None:
        self.disk = disk
        self.config = config
        self.log_dir = log_dir.strip("/")
        self._logs: dict[TopicPartition, PartitionLog] = {}
        # The earliest deadline of any log, recomputed only after a log reports a change.
        self._logs_deadline: int | None = None
        self._deadlines_dirty = True
        self.recovery_events: list[TraceEvent] = []
        self._pending_events: list[TraceEvent] = []
        self.closed = False
        if self.log_dir:
            disk.makedirs(self.log_dir)
        clean = disk.exists(self._path(checkpoints.CLEAN_SHUTDOWN_MARKER))
        recovery_points = self._read_checkpoint(checkpoints.RECOVERY_POINT_CHECKPOINT)
        log_starts = self._read_checkpoint(checkpoints.LOG_START_CHECKPOINT)
        high_watermarks = self._read_checkpoint(checkpoints.REPLICATION_CHECKPOINT)
        for name in disk.listdir(self.log_dir):
            tp = parse_partition_dir_name(name)
            if tp is None or name in _OWN_FILES:
                continue
            log = PartitionLog.open(
                disk,
                self._path(name),
                tp,
                config,
                now_ms,
                recovery_point=recovery_points.get(tp, 0),
                log_start_offset=log_starts.get(tp, 0),
                high_watermark=high_watermarks.get(tp, 0),
                clean_shutdown=clean,
            )
            self._add(tp, log)
            self.recovery_events.extend(log.drain_events())
        # While running, a crash must look unclean at the next start.
        if clean:
            disk.remove(self._path(checkpoints.CLEAN_SHUTDOWN_MARKER))
            disk.fsync_dir(self.log_dir)
        self._written: dict[str, dict[TopicPartition, int]] = {}
        self._checkpoint_jobs: dict[str, CheckpointWriteJob] = {}  # at most one out per file
        self._write_checkpoints(high_watermarks=True)
        self._next_retention_ms = now_ms + config.retention_check_interval_ms
        self._next_checkpoint_ms = now_ms + config.checkpoint_interval_ms
        self._next_hw_checkpoint_ms = now_ms + config.high_watermark_checkpoint_interval_ms

    def _add(self, tp: TopicPartition, log: PartitionLog) -> None:
        self._logs[tp] = log
        log.on_deadline_change = self._mark_deadlines_dirty
        log.on_truncated = self._on_truncated
        self._deadlines_dirty = True

    def _on_truncated(self) -> None:
        # Truncations (a follower's, by leader epoch) call the log directly: the lowered recovery
        # point (and log start) must be on disk before the log grows again.
        self._write_checkpoints(high_watermarks=True)

    def _mark_deadlines_dirty(self) -> None:
        self._deadlines_dirty = True

    def _path(self, name: str) -> str:
        return f"{self.log_dir}/{name}" if self.log_dir else name

    def _read_checkpoint(self, name: str) -> dict[TopicPartition, int]:
        offsets, problem = checkpoints.read_offsets(self.disk, self._path(name))
        if problem is not None:
            # Safe fallbacks: recovery scans from 0, the log start comes from the segments.
            self.recovery_events.append(TraceEvent("CheckpointIgnored", {"file": name, "problem": problem}))
        return offsets

    # ------------------------------------------------------------------ partitions

    def get(self, tp: TopicPartition) -> PartitionLog | None:
        return self._logs.get(tp)

    def get_or_create(
        self,
        tp: TopicPartition,
        now_ms: int,
        topic_configs: dict[str, str] | None = None,
        *,
        topic_id: str | None = None,
    ) -> PartitionLog:
        """The partition's log, created empty if missing. ``topic_configs`` (topic-level keys)
        override the broker defaults and are applied to an existing log too; ValueError for an
        unknown key. A log whose stored topic id differs from ``topic_id`` belongs to a deleted
        topic of the same name: it is replaced."""
        config = self.config.with_topic_overrides(topic_configs or {})
        log = self._logs.get(tp)
        if log is not None and topic_id is not None and log.topic_id not in (None, topic_id):
            self.delete(tp)
            log = None
        if log is None:
            log = PartitionLog.create(self.disk, self._path(partition_dir_name(tp)), tp, config, now_ms,
                                      topic_id=topic_id, overrides=topic_configs)
            self.disk.fsync_dir(self.log_dir)
            self._add(tp, log)
            return log
        if topic_configs is not None:
            log.update_config(config, topic_configs)
        if topic_id is not None and log.topic_id is None:
            log.set_topic_id(topic_id)
        return log

    def delete(self, tp: TopicPartition) -> None:
        log = self._logs.pop(tp, None)
        if log is None:
            return
        log.on_deadline_change = log.on_truncated = None
        log.delete_files()
        self._deadlines_dirty = True
        self.disk.fsync_dir(self.log_dir)
        # A stale entry would give a recreated topic of the same name this log's offsets.
        self._write_checkpoints(high_watermarks=True)

    def partitions(self) -> list[TopicPartition]:
        return sorted(self._logs)

    # ------------------------------------------------------------------ periodic work

    def tick(self, now_ms: int, jobs: list[BlockingJob] | None = None) -> list[TraceEvent]:
        """Roll by age, flush (rolled segments; the interval policy), retention, checkpoints.

        Rolled segments' flushes and the periodic checkpoints go to ``jobs`` when given, else run
        here (see PartitionLog.tick)."""
        for log in self._logs.values():
            due = log.next_deadline_ms()
            if due is not None and due <= now_ms:
                log.tick(now_ms, jobs)
        if now_ms >= self._next_retention_ms:
            deleted = sum(log.delete_old_segments(now_ms) for log in self._logs.values())
            if deleted:
                # Checkpoint the new log start offsets at once: if the remaining (unflushed)
                # segments vanish in a power loss, the log must not restart below them.
                self._write_checkpoints(high_watermarks=False)
            self._next_retention_ms = now_ms + self.config.retention_check_interval_ms
        if now_ms >= self._next_checkpoint_ms:
            self._write_offsets(checkpoints.RECOVERY_POINT_CHECKPOINT, jobs)
            self._write_offsets(checkpoints.LOG_START_CHECKPOINT, jobs)
            self._next_checkpoint_ms = now_ms + self.config.checkpoint_interval_ms
        if now_ms >= self._next_hw_checkpoint_ms:
            self._write_offsets(checkpoints.REPLICATION_CHECKPOINT, jobs)
            self._next_hw_checkpoint_ms = now_ms + self.config.high_watermark_checkpoint_interval_ms
        return self.drain_events()

    def next_deadline_ms(self) -> int | None:
        """The earliest housekeeping or per-log deadline (cheap: called after every step)."""
        if self._deadlines_dirty:
            dues = [d for d in (log.next_deadline_ms() for log in self._logs.values()) if d is not None]
            self._logs_deadline = min(dues) if dues else None
            self._deadlines_dirty = False
        deadline = min(self._next_retention_ms, self._next_checkpoint_ms, self._next_hw_checkpoint_ms)
        if self._logs_deadline is not None and self._logs_deadline < deadline:
            return self._logs_deadline
        return deadline

    def on_blocking_done(self, job: BlockingJob, now_ms: int) -> list[TraceEvent]:
        """A job from ``tick(jobs=...)`` ran: its events (LogFlushFailed, CheckpointWriteFailed)."""
        if isinstance(job, CheckpointWriteJob):
            self._on_checkpoint_done(job)
            events, self._pending_events = self._pending_events, []
            return events
        self.on_flush_done(job, now_ms)
        return job.log.drain_events()

    def on_flush_done(self, job: SegmentFlushJob, now_ms: int) -> None:
        """A roll flush from ``tick(jobs=...)`` ran (its log may be closed or deleted since)."""
        job.log.on_flush_done(job, now_ms)

    def drain_events(self) -> list[TraceEvent]:
        """Events since the last call (rolls done by appends, truncations...); tick returns them too."""
        events, self._pending_events = self._pending_events, []
        for log in self._logs.values():
            events.extend(log.drain_events())
        return events

    def flush_all(self, now_ms: int | None = None) -> None:
        for log in self._logs.values():
            log.flush(now_ms)

    # ------------------------------------------------------------------ checkpoints and shutdown

    def _offsets(self, name: str) -> dict[TopicPartition, int]:
        """The checkpoint's values now: computed on the loop, never in a job."""
        field = _CHECKPOINT_FIELDS[name]
        return {tp: getattr(log, field) for tp, log in self._logs.items()}

    def _write_offsets(self, name: str, jobs: list[BlockingJob] | None = None) -> None:
        """Write checkpoint ``name`` if changed: as a job given ``jobs``, else here and now."""
        offsets = self._offsets(name)
        job = self._checkpoint_jobs.get(name)
        if jobs is not None:
            if job is None and self._written.get(name) != offsets:
                job = CheckpointWriteJob(name, self._path(name), offsets,
                                         checkpoints.format_offsets(offsets), self.disk, self.disk.write_ticket())
                self._checkpoint_jobs[name] = job
                jobs.append(job)
            return  # one still out: the next interval writes the latest offsets
        if job is not None:
            # This write is newer (a lowered recovery point after a truncation, say): it takes a
            # newer ticket, so the job can no longer land over it; its completion is ignored.
            del self._checkpoint_jobs[name]
        elif self._written.get(name) == offsets:
            return  # unchanged: spare the fsyncs
        checkpoints.write_offsets(self.disk, self._path(name), offsets)
        self._written[name] = offsets

    def _on_checkpoint_done(self, job: CheckpointWriteJob) -> None:
        if self._checkpoint_jobs.get(job.name) is not job:
            return  # a synchronous write (a truncation's, close's) came after it and counts
        del self._checkpoint_jobs[job.name]
        if job.error is not None:
            # _written stays as it was: the next interval writes again.
            self._pending_events.append(TraceEvent("CheckpointWriteFailed", {"file": job.name, "error": job.error}))
        elif job.wrote:
            self._written[job.name] = job.offsets

    def _write_checkpoints(self, high_watermarks: bool) -> None:
        self._write_offsets(checkpoints.RECOVERY_POINT_CHECKPOINT)
        self._write_offsets(checkpoints.LOG_START_CHECKPOINT)
        if high_watermarks:
            self._write_offsets(checkpoints.REPLICATION_CHECKPOINT)

    def close(self) -> None:
        """Flush every log, write the checkpoints, then the clean-shutdown marker."""
        if self.closed:
            return
        for log in self._logs.values():
            log.close()
        self._write_checkpoints(high_watermarks=True)  # newer than any checkpoint job still out
        self.disk.write_file_atomic(self._path(checkpoints.CLEAN_SHUTDOWN_MARKER), b"")
        self.closed = True


# Which log attribute each offset checkpoint holds.
_CHECKPOINT_FIELDS = {
    checkpoints.RECOVERY_POINT_CHECKPOINT: "recovery_point",
    checkpoints.LOG_START_CHECKPOINT: "log_start_offset",
    checkpoints.REPLICATION_CHECKPOINT: "high_watermark",
}

_OWN_FILES = frozenset({
    checkpoints.RECOVERY_POINT_CHECKPOINT,
    checkpoints.REPLICATION_CHECKPOINT,
    checkpoints.LOG_START_CHECKPOINT,
    checkpoints.CLEAN_SHUTDOWN_MARKER,
})
