"""The flush of rolled segments, done off the event loop (Kafka's ``scheduler.scheduleOnce("flush-log",
...)`` -> ``flushUptoOffsetExclusive(newSegment.baseOffset)`` after a roll).

``PartitionLog`` builds one job per log at a time (``start_roll_flush``): the rolled segments'
files to fsync (their index entries already written), the producer snapshots the rolls wrote
unsynced (Kafka fsyncs them in the same "flush-log" task), the partition directory if a file
was created since its last fsync, the offset ``upto`` the job makes durable and the log's
generation. ``run()`` only fsyncs, through the Disk port, on whatever thread the driver picks;
the log acts on the result in ``on_flush_done`` on its own loop, and advances the recovery point
only if no truncation or segment deletion bumped its generation meanwhile.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from brokerlab.disk import Disk, DiskFile
from node.log.producer_snapshot import fsync_snapshots

if TYPE_CHECKING:  # typing only: the job hands itself back to the log that made it
    from node.log.partition_log import PartitionLog

# After an fsync error on a live file, try the roll flush again this much later.
FLUSH_RETRY_BACKOFF_MS = 1_000


@dataclass(eq=False, slots=True)
class SegmentFlushJob:
    log: PartitionLog
    generation: int
    upto: int
    files: list[DiskFile]
    disk: Disk
    directory: str | None  # fsync the directory too (a segment or snapshot file was created)
    snapshots: list[str] = field(default_factory=list)  # producer snapshots written unsynced
    # Files closed or removed before their fsync (a deleted log, retention), fsync errors: the
    # job failed. Snapshots the log itself deleted meanwhile are only ``snapshots_gone``.
    gone: list[str] = field(default_factory=list)
    snapshots_gone: list[str] = field(default_factory=list)

    def run(self) -> None:
        """The blocking part: fsync each file, then the directory. Touches no log state."""
        for file in self.files:
            try:
                file.fsync()
            except (OSError, ValueError, KeyError) as exc:  # closed fd / removed MemoryFile
                self.gone.append(f"{type(exc).__name__}: {exc}")
        try:
            self.snapshots_gone = fsync_snapshots(self.disk, self.snapshots)
        except OSError as exc:
            self.gone.append(f"{type(exc).__name__}: {exc}")
        if self.directory is not None:
            try:
                self.disk.fsync_dir(self.directory)
            except OSError as exc:  # the partition directory was deleted
                self.gone.append(f"{type(exc).__name__}: {exc}")


class RollFlush:
    """The roll flush of ``PartitionLog`` (mixed in, like truncation.py and retention.py): it
    works on the log's segments, flush marks and recovery point and holds no state of its own."""

    def start_roll_flush(self, upto: int) -> SegmentFlushJob:
        """The job that fsyncs the segments below ``upto`` (index entries written now, here) and
        the directory; the recovery point moves only in ``on_flush_done``."""
        files = []
        start = bisect.bisect_right(self._bases, self._first_unflushed_base) - 1
        for segment in self._segments[max(start, 0):]:
            if segment.base_offset >= upto:
                break
            files.extend(segment.files_to_flush())
        snapshots, self._pending_snapshots = self._pending_snapshots, []
        directory = self.directory if self._dir_unsynced or snapshots else None
        self._dir_unsynced = False  # a roll from now on sets it again; a failed job restores it
        self._roll_flush_due_ms = None
        self._flush_job = SegmentFlushJob(self, self._generation, upto, files, self.disk, directory,
                                          snapshots)
        return self._flush_job

    def on_flush_done(self, job: SegmentFlushJob, now_ms: int) -> None:
        """``job`` ran: the segments below its ``upto`` are durable, unless the log was truncated,
        lost segments or was closed meanwhile; then it claims nothing and the flush runs again."""
        if job is not self._flush_job:
            return  # closed or deleted meanwhile (close flushed everything itself)
        self._flush_job = None
        retry_at = now_ms
        if job.generation == self._generation and not job.gone:
            start = bisect.bisect_right(self._bases, self._first_unflushed_base) - 1
            for segment in self._segments[max(start, 0):]:
                if segment.base_offset >= job.upto:
                    break
                segment.flushed()
            self._first_unflushed_base = max(self._first_unflushed_base, job.upto)
            self.recovery_point = max(self.recovery_point, job.upto)
        else:
            if job.directory is not None:
                self._dir_unsynced = True
            self._requeue_snapshots([path for path in job.snapshots if path not in job.snapshots_gone])
            if job.generation == self._generation:  # an fsync error on a live file
                self._event("LogFlushFailed", upto=job.upto, errors=job.gone)
                retry_at = now_ms + FLUSH_RETRY_BACKOFF_MS
        if self._roll_flush_wanted() and self._roll_flush_due_ms is None:
            self._roll_flush_due_ms = retry_at
        self._refresh_deadline()

    def _roll_flush_wanted(self) -> bool:
        """Rolled segments or snapshots (requeued by a job that claimed nothing) wait for an fsync."""
        return self._first_unflushed_base < self._segments[-1].base_offset or bool(self._pending_snapshots)

    def _snapshot_unsynced(self, path: str) -> None:
        """A roll wrote a producer snapshot without fsync: the next roll flush fsyncs it."""
        if path not in self._pending_snapshots:
            self._pending_snapshots.append(path)

    def _requeue_snapshots(self, paths: list[str]) -> None:
        """A job that claims nothing (failed, stale, dropped) leaves its snapshots to the next."""
        self._pending_snapshots[:0] = [path for path in paths if path not in self._pending_snapshots]

    def _drop_flush_job(self) -> None:
        """close / delete: a job still out claims nothing; the flush that follows redoes its work."""
        job, self._flush_job = self._flush_job, None
        if job is not None:
            self._dir_unsynced = True
            self._requeue_snapshots(job.snapshots)

    def _sync_snapshots_and_directory(self) -> None:
        """The synchronous flush paths (flush, close): fsync every unsynced snapshot, pending or
        in a job still out, then the directory, before the recovery point passes their roll."""
        job = self._flush_job
        paths = self._pending_snapshots + (job.snapshots if job is not None else [])
        fsync_snapshots(self.disk, paths)
        self._pending_snapshots = []
        if self._dir_unsynced or paths:
            self.disk.fsync_dir(self.directory)
            self._dir_unsynced = False

    def _segments_changed(self) -> None:
        """Truncation or deletion: a roll flush running now must not advance the recovery point."""
        self._generation += 1
