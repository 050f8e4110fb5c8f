import pytest
from log_testkit import TP, TP_DIR, batch, new_log, open_manager

from brokerlab.disk import MemoryDisk
from node.log import FencedLeaderEpochError, LeaderEpochCache
from node.log.checkpoints import LEADER_EPOCH_CHECKPOINT


def cache_with(entries, log_end_offset=100):
    return LeaderEpochCache(entries, log_end_offset=lambda: log_end_offset)


def test_assign_appends_new_epochs_and_ignores_repeats():
    cache = cache_with([])
    assert cache.latest_epoch == -1
    assert cache.assign(0, 0)
    assert not cache.assign(0, 10)  # the same epoch, later: nothing to record
    assert cache.assign(2, 30)
    assert cache.entries == [(0, 0), (2, 30)]
    assert cache.latest_epoch == 2


def test_assign_drops_entries_that_would_break_monotonicity():
    cache = cache_with([(0, 0), (2, 30), (3, 50)])
    assert cache.assign(2, 40)  # epoch 3 (and the older epoch-2 start) go
    assert cache.entries == [(0, 0), (2, 40)]
    with pytest.raises(ValueError):
        cache.assign(-1, 0)


def test_end_offset_for_follows_kafka():
    cache = cache_with([(1, 0), (3, 20), (5, 50)], log_end_offset=80)
    assert cache.end_offset_for(5) == (5, 80)  # the latest epoch ends at the log end
    assert cache.end_offset_for(3) == (3, 50)  # ends where the next epoch starts
    assert cache.end_offset_for(4) == (3, 50)  # unknown epoch in between: the floor epoch
    assert cache.end_offset_for(0) == (0, 0)  # older than every epoch
    assert cache.end_offset_for(6) == (-1, -1)  # newer than every epoch
    assert cache.end_offset_for(-1) == (-1, -1)
    assert cache_with([]).end_offset_for(1) == (-1, -1)


def test_truncation_from_both_ends():
    cache = cache_with([(1, 0), (3, 20), (5, 50)])
    assert cache.truncate_from_end(50)
    assert cache.entries == [(1, 0), (3, 20)]
    assert not cache.truncate_from_end(60)
    assert cache.truncate_from_start(25)
    assert cache.entries == [(3, 25)]
    assert not cache.truncate_from_start(25)
    assert cache.epoch_for_offset(30) == 3
    assert cache.epoch_for_offset(10) == -1


def test_the_log_keeps_its_epoch_cache_in_the_checkpoint_file():
    disk = MemoryDisk()
    manager, log = new_log(disk)
    log.append_as_leader(batch([b"a", b"b"]), 0, 0)
    log.append_as_leader(batch([b"c"]), 0, 0)
    log.append_as_leader(batch([b"d"]), 4, 0)
    assert log.leader_epoch_cache.entries == [(0, 0), (4, 3)]
    assert disk.read_file(f"{TP_DIR}/{LEADER_EPOCH_CHECKPOINT}") == b"0\n2\n0 0\n4 3\n"
    assert log.leader_epoch_cache.end_offset_for(0) == (0, 3)
    with pytest.raises(FencedLeaderEpochError):
        log.append_as_leader(batch([b"stale"]), 3, 0)
    assert log.log_end_offset == 4
    manager.close()
    reopened = open_manager(disk).get(TP)
    assert reopened.leader_epoch_cache.entries == [(0, 0), (4, 3)]


def test_truncating_the_log_truncates_the_epoch_cache():
    disk = MemoryDisk()
    _, log = new_log(disk)
    log.append_as_leader(batch([b"a"]), 1, 0)
    log.append_as_leader(batch([b"b"]), 2, 0)
    log.append_as_leader(batch([b"c"]), 3, 0)
    log.truncate_to(1)
    assert log.leader_epoch_cache.entries == [(1, 0)]
    assert disk.read_file(f"{TP_DIR}/{LEADER_EPOCH_CHECKPOINT}") == b"0\n1\n1 0\n"


def test_a_lost_epoch_checkpoint_is_rebuilt_from_batch_headers():
    disk = MemoryDisk()
    manager, log = new_log(disk)
    log.append_as_leader(batch([b"a"]), 1, 0)
    log.append_as_leader(batch([b"b"]), 7, 0)
    manager.close()
    disk.remove(f"{TP_DIR}/{LEADER_EPOCH_CHECKPOINT}")
    assert open_manager(disk).get(TP).leader_epoch_cache.entries == [(1, 0), (7, 1)]
