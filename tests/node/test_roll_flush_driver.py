"""The real driver runs a rolled segment's fsync in a thread: the event loop does not wait for it.
The broker routes periodic checkpoint writes the same way."""

import asyncio
import threading

from brokerlab.disk import MemoryDisk
from brokerlab.driver import CoreDriver
from brokerlab.ids import TopicPartition
from brokerlab.record_batch import encode_batch
from brokerlab.sansio import run_blocking_inline
from node.broker import BrokerCore
from node.config import BrokerConfig
from node.log.checkpoints import REPLICATION_CHECKPOINT
from node.log.config import LogConfig
from node.log.manager import LogManager

TP = TopicPartition("lat", 0)


class GatedFile:
    def __init__(self, inner, disk: "GatedDisk") -> None:
        self._inner, self._disk = inner, disk

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def fsync(self) -> None:
        if self._disk.gated:
            self._disk.entered.set()
            assert self._disk.release.wait(10), "the test never released the fsync"
        self._inner.fsync()


class GatedDisk(MemoryDisk):
    """A disk whose file fsyncs block, while ``gated``, until ``release`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.gated = False
        self.entered = threading.Event()
        self.release = threading.Event()

    def open(self, path):
        return GatedFile(super().open(path), self)


async def never_answers(envelope):
    await asyncio.Event().wait()


def rolled_broker():
    """A broker core whose log just rolled (segment [0,1] awaits its flush), under a driver."""
    disk = GatedDisk()
    log_config = LogConfig(segment_bytes=1000)
    manager = LogManager(disk, log_config, 0)
    core = BrokerCore(BrokerConfig(broker_id=1, controller_endpoint=("127.0.0.1", 9093),
                                   log_config=log_config), manager, ("127.0.0.1", 9092))
    log = manager.get_or_create(TP, 0)
    for i in range(3):
        log.append_as_leader(encode_batch([(i, None, b"x" * 300, ())]), 0, 0)
    assert log.segment_count == 2 and log.recovery_point == 0
    return disk, manager, log, CoreDriver(core, core.node, never_answers, clock_ms=lambda: 5)


def test_the_tick_returns_while_the_rolled_segment_fsync_blocks():
    async def scenario() -> None:
        disk, manager, log, driver = rolled_broker()
        disk.gated = True
        driver.start()  # the broker's first tick: it hands the roll flush to a thread
        assert await asyncio.to_thread(disk.entered.wait, 10)  # that thread is inside fsync now
        assert log.recovery_point == 0  # and the loop runs on without it
        disk.release.set()
        await driver.wait_blocking()
        assert log.recovery_point == 2
        await driver.close()

    asyncio.run(scenario())


def test_close_waits_for_a_running_fsync():
    async def scenario() -> None:
        disk, manager, log, driver = rolled_broker()
        disk.gated = True
        driver.start()
        assert await asyncio.to_thread(disk.entered.wait, 10)
        closing = asyncio.ensure_future(driver.close())
        await asyncio.sleep(0)
        assert not closing.done()  # still waiting for the fsync's thread
        disk.release.set()
        await closing
        assert log.recovery_point == 0  # the completion is dropped after close
        manager.close()  # the clean close flushes it all itself
        assert log.recovery_point == 3

    asyncio.run(scenario())


class FullDisk(MemoryDisk):
    """A disk whose checkpoint writes fail with ENOSPC."""

    def write_file_atomic(self, path, data, ticket=None):
        raise OSError(28, "No space left on device")


def test_the_broker_hands_out_periodic_checkpoints_and_reports_a_failed_one():
    log_config = LogConfig(high_watermark_checkpoint_interval_ms=100)
    disk = MemoryDisk()
    manager = LogManager(disk, log_config, 0)
    core = BrokerCore(BrokerConfig(broker_id=1, controller_endpoint=("127.0.0.1", 9093),
                                   log_config=log_config), manager, ("127.0.0.1", 9092))
    log = manager.get_or_create(TP, 0)
    log.append_as_leader(encode_batch([(0, None, b"x", ())]), 0, 0)
    log.high_watermark = 1
    [job] = core.tick(100).blocking
    assert job.name == REPLICATION_CHECKPOINT and job.offsets == {TP: 1}
    manager.disk = job.disk = FullDisk()  # the disk fills up before the job runs
    job.run()
    assert [event.name for event in core.on_blocking_done(job, 101).events] == ["CheckpointWriteFailed"]
    manager.disk = disk
    fx = run_blocking_inline(core, core.tick(200), 200)  # retried at the next interval
    assert not [event for event in fx.events if event.name == "CheckpointWriteFailed"]
    assert disk.read_file(REPLICATION_CHECKPOINT) == b"0\n1\nlat 0 1\n"
