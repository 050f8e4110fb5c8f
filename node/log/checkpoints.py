"""Small metadata files, in Kafka's text formats, always written with ``disk.write_file_atomic``.

Offset checkpoints (``recovery-point-offset-checkpoint``, ``replication-offset-checkpoint``,
``log-start-offset-checkpoint``) and ``leader-epoch-checkpoint`` share Kafka's layout::

    0                  <- version
    2                  <- entry count
    orders 0 1200      <- one entry a line (topic partition offset / epoch start_offset)
    orders 1 900

``partition.metadata`` is ``version: 0`` / ``topic_id: <id>``. ``partition.config`` (brokerlab's)
keeps the topic's log overrides as ``key=value`` lines, so a restarted broker applies them
before its metadata image has caught up.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping

from brokerlab.disk import Disk
from brokerlab.ids import TopicPartition

VERSION = 0
RECOVERY_POINT_CHECKPOINT = "recovery-point-offset-checkpoint"
REPLICATION_CHECKPOINT = "replication-offset-checkpoint"
LOG_START_CHECKPOINT = "log-start-offset-checkpoint"
LEADER_EPOCH_CHECKPOINT = "leader-epoch-checkpoint"
PARTITION_METADATA = "partition.metadata"
PARTITION_CONFIG = "partition.config"
CLEAN_SHUTDOWN_MARKER = ".brokerlab_cleanshutdown"


class CheckpointError(ValueError):
    """A checkpoint file that does not parse."""


def _lines(data: bytes, path: str, fields: int) -> list[list[str]]:
    try:
        lines = data.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise CheckpointError(f"{path}: not UTF-8") from None
    if len(lines) < 2 or lines[0].strip() != str(VERSION) or not lines[1].strip().isdigit():
        raise CheckpointError(f"{path}: bad header")
    count = int(lines[1])
    entries = [line.split() for line in lines[2:] if line.strip()]
    if len(entries) != count or any(len(entry) != fields for entry in entries):
        raise CheckpointError(f"{path}: expected {count} entries of {fields} fields")
    return entries


def _int(text: str, path: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise CheckpointError(f"{path}: not an integer: {text!r}") from None


def format_offsets(offsets: Mapping[TopicPartition, int]) -> bytes:
    lines = [str(VERSION), str(len(offsets))]
    lines += [f"{tp.topic} {tp.partition} {offset}" for tp, offset in sorted(offsets.items())]
    return ("\n".join(lines) + "\n").encode()


def parse_offsets(data: bytes, path: str = "checkpoint") -> dict[TopicPartition, int]:
    out = {}
    for topic, partition, offset in _lines(data, path, 3):
        out[TopicPartition(topic, _int(partition, path))] = _int(offset, path)
    return out


def read_offsets(disk: Disk, path: str) -> tuple[dict[TopicPartition, int], str | None]:
    """``(offsets, problem)``: a missing file is empty; a corrupt one is empty with the reason."""
    if not disk.exists(path):
        return {}, None
    try:
        return parse_offsets(disk.read_file(path), path), None
    except (CheckpointError, FileNotFoundError) as exc:
        return {}, str(exc)


def write_offsets(disk: Disk, path: str, offsets: Mapping[TopicPartition, int]) -> None:
    disk.write_file_atomic(path, format_offsets(offsets))


def format_epochs(entries: Iterable[tuple[int, int]]) -> bytes:
    entries = list(entries)
    lines = [str(VERSION), str(len(entries))] + [f"{epoch} {start}" for epoch, start in entries]
    return ("\n".join(lines) + "\n").encode()


def parse_epochs(data: bytes, path: str = LEADER_EPOCH_CHECKPOINT) -> list[tuple[int, int]]:
    entries = [(_int(epoch, path), _int(start, path)) for epoch, start in _lines(data, path, 2)]
    for (epoch_a, start_a), (epoch_b, start_b) in zip(entries, entries[1:]):
        if epoch_b <= epoch_a or start_b < start_a:
            raise CheckpointError(f"{path}: entries are not increasing")
    return entries


def format_partition_metadata(topic_id: str) -> bytes:
    return f"version: {VERSION}\ntopic_id: {topic_id}\n".encode()


def parse_partition_metadata(data: bytes) -> str | None:
    for line in data.decode("utf-8", "replace").splitlines():
        name, _, value = line.partition(":")
        if name.strip() == "topic_id" and value.strip():
            return value.strip()
    return None


def format_overrides(configs: Mapping[str, str]) -> bytes:
    return "".join(f"{name}={value}\n" for name, value in sorted(configs.items())).encode()


def parse_overrides(data: bytes) -> dict[str, str]:
    out = {}
    for line in data.decode("utf-8", "replace").splitlines():
        name, sep, value = line.partition("=")
        if sep and name.strip():
            out[name.strip()] = value.strip()
    return out


@dataclass(eq=False, slots=True)
class CheckpointWriteJob:
    """A periodic offset checkpoint written off the event loop (Kafka's "highwatermark-checkpoint"
    and "kafka-recovery-point-checkpoint" scheduler tasks). The offsets and bytes are computed on
    the loop when the job is made, so a late or lost write only leaves older, still safe values;
    it never lands over newer content: a synchronous write made since (a truncation's, close's)
    took a newer ``ticket``, and the disk drops this one's."""

    name: str
    path: str
    offsets: dict[TopicPartition, int]
    data: bytes
    disk: Disk
    ticket: int  # taken on the loop with the offsets
    wrote: bool = False
    error: str | None = None

    def run(self) -> None:
        """The blocking part: temp file, fsync, rename, fsync dir. Touches no log state."""
        try:
            self.wrote = self.disk.write_file_atomic(self.path, self.data, ticket=self.ticket)
        except OSError as exc:
            self.error = f"{type(exc).__name__}: {exc}"
