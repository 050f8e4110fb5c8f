"""Disk faults on a real log directory, checked by reopening it with the broker's LogManager
(start-up recovery): torn tail and bit flip cost exactly the last batch; lost unflushed data cuts
the log back to the recovery point."""

from __future__ import annotations

from pathlib import Path

from brokerlab.disk import OsDisk
from brokerlab.ids import TopicPartition
from brokerlab.record_batch import encode_batch
from lab.experiment import diskfaults
from node.log.config import LogConfig
from node.log.manager import LogManager

TP = TopicPartition("experiment", 0)
NOW = 1_700_000_000_000


def _append(manager: LogManager, batches: int, start: int) -> None:
    log = manager.get_or_create(TP, NOW)
    for b in range(batches):
        records = [(NOW, None, f"v{start + b}-{i}".encode(), ()) for i in range(5)]
        log.append_as_leader(encode_batch(records), 0, NOW)


def _crashed_log(tmp_path: Path) -> Path:
    """25 records flushed and checkpointed by a clean shutdown, then 25 more, then a crash."""
    data = tmp_path / "broker-1"
    data.mkdir()
    manager = LogManager(OsDisk(str(data)), LogConfig(), NOW)
    _append(manager, 5, 0)
    manager.close()
    manager = LogManager(OsDisk(str(data)), LogConfig(), NOW)
    _append(manager, 5, 5)  # not flushed; the recovery point on disk stays at 25
    assert manager.get(TP).log_end_offset == 50
    return data  # the manager is dropped without close(): a kill -9


def _reopened_end(data: Path) -> int:
    manager = LogManager(OsDisk(str(data)), LogConfig(), NOW)
    try:
        return manager.get(TP).log_end_offset
    finally:
        manager.close()


def test_a_crash_alone_keeps_everything_the_page_cache_had(tmp_path: Path) -> None:
    assert _reopened_end(_crashed_log(tmp_path)) == 50


def test_lose_unflushed_cuts_back_to_the_recovery_point(tmp_path: Path) -> None:
    data = _crashed_log(tmp_path)
    done = diskfaults.lose_unflushed(data, "experiment")
    assert done == [{"partition": "experiment-0", "recovery_point": 25, "bytes_removed": done[0]["bytes_removed"],
                     "first_lost_offset": 25}]
    assert done[0]["bytes_removed"] > 0
    assert _reopened_end(data) == 25


def test_torn_tail_costs_the_last_batch(tmp_path: Path) -> None:
    data = _crashed_log(tmp_path)
    done = diskfaults.torn_tail(data, "experiment")
    assert done[0]["bytes_cut"] > 0
    assert _reopened_end(data) == 45


def test_bit_flip_costs_the_last_batch(tmp_path: Path) -> None:
    data = _crashed_log(tmp_path)
    done = diskfaults.bit_flip(data, "experiment")
    assert done[0]["batch_base_offset"] == 45
    assert _reopened_end(data) == 45
