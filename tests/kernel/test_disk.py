"""Both disks behave alike; MemoryDisk forgets exactly what was not fsynced on a crash."""

from __future__ import annotations

import pytest

from brokerlab.disk import MemoryDisk, OsDisk


@pytest.fixture(params=["memory", "os"])
def disk(request, tmp_path):
    return MemoryDisk() if request.param == "memory" else OsDisk(str(tmp_path))


def test_append_read_truncate(disk):
    disk.makedirs("t-0")
    handle = disk.open("t-0/a.log")
    assert handle.append(b"hello") == 0
    assert handle.append(b"world") == 5
    assert handle.read(3, 4) == b"lowo"
    handle.truncate(5)
    assert handle.size() == 5
    handle.close()
    assert disk.read_file("t-0/a.log") == b"hello"
    assert disk.listdir("t-0") == ["a.log"]
    assert disk.listdir("") == ["t-0"]


def test_atomic_write_replace_and_remove(disk):
    disk.write_file_atomic("meta", b"one")
    disk.write_file_atomic("meta", b"two")
    assert disk.read_file("meta") == b"two"
    disk.rename("meta", "meta2")
    assert not disk.exists("meta") and disk.exists("meta2")
    disk.remove("meta2")
    assert not disk.exists("meta2")


def test_rmtree(disk):
    disk.makedirs("x-1")
    disk.open("x-1/f").append(b"1")
    disk.rmtree("x-1")
    assert not disk.exists("x-1")
    assert disk.listdir("") == []


def test_crash_keeps_only_fsynced_bytes():
    disk = MemoryDisk()
    handle = disk.open("p/seg")
    handle.append(b"durable")
    handle.fsync()
    handle.append(b"-lost")
    disk.open("p/never-synced").append(b"x")
    disk.write_file_atomic("p/meta", b"m")
    disk.crash()
    assert disk.read_file("p/seg") == b"durable"
    assert not disk.exists("p/never-synced")
    assert disk.read_file("p/meta") == b"m"


def test_write_file_replaces_without_fsync_and_fsync_path_needs_the_file(disk):
    disk.makedirs("p")
    disk.write_file("p/snap", b"one")
    disk.write_file("p/snap", b"two")
    assert disk.read_file("p/snap") == b"two"
    assert disk.listdir("p") == ["snap"]  # no temp file left behind
    disk.fsync_path("p/snap")
    disk.remove("p/snap")
    with pytest.raises(FileNotFoundError):
        disk.fsync_path("p/snap")


def test_an_unsynced_write_file_is_lost_on_power_loss_until_fsync_path():
    disk = MemoryDisk()
    disk.write_file("p/new", b"x")
    disk.write_file_atomic("p/old", b"durable")
    disk.write_file("p/old", b"newer")
    disk.write_file("p/kept", b"k")
    disk.fsync_path("p/kept")
    disk.crash()
    assert not disk.exists("p/new")
    assert disk.read_file("p/old") == b"durable"  # back to its last fsynced content
    assert disk.read_file("p/kept") == b"k"


def test_an_atomic_write_with_an_older_ticket_never_lands_over_a_newer_one(disk):
    # A blocking job computes a checkpoint (ticket taken then) and writes it on a thread; a
    # newer write of the same file made meanwhile on the loop must win whatever the order.
    disk.makedirs("d")
    late = disk.write_ticket()
    assert disk.write_file_atomic("d/meta", b"newer")  # no ticket: a fresh, newer one
    assert not disk.write_file_atomic("d/meta", b"older", ticket=late)
    assert disk.read_file("d/meta") == b"newer"
    assert disk.write_file_atomic("d/other", b"x", ticket=late)  # tickets order writes per path
    assert disk.write_ticket() > late
