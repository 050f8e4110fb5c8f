"""Reading a partition directory back at start-up: its small metadata files and its leader
epoch cache (the segments themselves are recovery.py's job)."""

from __future__ import annotations

from brokerlab.disk import Disk
from brokerlab.ids import TopicPartition
from brokerlab.sansio import TraceEvent
from node.log import checkpoints
from node.log.config import LogConfig
from node.log.epoch_cache import LeaderEpochCache
from node.log.recovery import LoadResult
from node.log.segment import LogSegment


def read_partition_files(disk: Disk, directory: str, config: LogConfig) -> tuple[LogConfig, dict[str, str], str | None]:
    """``(config with the stored topic overrides, the overrides, topic id)``."""
    overrides: dict[str, str] = {}
    path = f"{directory}/{checkpoints.PARTITION_CONFIG}"
    if disk.exists(path):
        overrides = checkpoints.parse_overrides(disk.read_file(path))
    try:
        config = config.with_topic_overrides(overrides)
    except ValueError:
        overrides = {}  # a stale file must not keep the partition from opening
    topic_id = None
    path = f"{directory}/{checkpoints.PARTITION_METADATA}"
    if disk.exists(path):
        topic_id = checkpoints.parse_partition_metadata(disk.read_file(path))
    return config, overrides, topic_id


def restore_epoch_cache(
    disk: Disk,
    directory: str,
    load: LoadResult,
    segments: list[LogSegment],
    log_start_offset: int,
    log_end_offset: int,
) -> tuple[list[tuple[int, int]], bool]:
    """The epoch entries for the opened log, and whether the checkpoint must be rewritten.

    As Kafka: the checkpoint, minus what starts in the scanned region, plus the epochs found
    by the scan; cut to ``[log_start_offset, log_end_offset)``. A lost checkpoint is rebuilt
    from the batch headers.
    """
    path = f"{directory}/{checkpoints.LEADER_EPOCH_CHECKPOINT}"
    entries: list[tuple[int, int]] = []
    missing = not disk.exists(path)
    if not missing:
        try:
            entries = checkpoints.parse_epochs(disk.read_file(path), path)
        except (checkpoints.CheckpointError, FileNotFoundError):
            missing = True
    cache = LeaderEpochCache(entries, log_end_offset=lambda: log_end_offset)
    found: list[tuple[int, int]] = []
    if load.recovered:
        if load.scan_start_offset is not None:
            cache.truncate_from_end(load.scan_start_offset)
        found = load.epochs
    elif missing and log_end_offset > log_start_offset:
        found = _epochs_from_headers(segments)
    for epoch, offset in found:
        if epoch > cache.latest_epoch:
            cache.assign(epoch, offset)
    cache.truncate_from_end(log_end_offset)
    cache.truncate_from_start(log_start_offset)
    restored = [tuple(entry) for entry in cache.entries]
    return restored, missing or restored != entries


def _epochs_from_headers(segments: list[LogSegment]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for segment in segments:
        for _, header in segment.walk_headers():
            epoch = header.partition_leader_epoch
            if epoch >= 0 and (not out or out[-1][0] != epoch):
                out.append((epoch, header.base_offset))
    return out


def recovered_event(tp: TopicPartition, load: LoadResult, recovery_point: int, log_end_offset: int) -> TraceEvent:
    return TraceEvent("LogRecovered", {
        "topic": tp.topic,
        "partition": tp.partition,
        "truncated_bytes": load.truncated_bytes,
        "log_end_offset": log_end_offset,
        "recovery_point": recovery_point,
        "scan_start_offset": load.scan_start_offset,
        "scanned_segments": load.scanned_segments,
        "deleted_segments": load.deleted_segments,
        "problem": load.problem,
    })
