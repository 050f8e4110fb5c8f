"""The load of an experiment: paced producers sending unique values, consumers reading them, and a
final read-back of every partition, all recorded in a ``lab.history.History``.

- Producers ``producer-N`` send ``producer-N-<n>`` (padded to ``value_bytes``), keyed ``k<n % keys>``
  so the default partitioner spreads them by key hash (per-partition order stays checkable), or
  to partitions in turn when ``keys = 0``. Sends are paced on a schedule, never awaited one by
  one, so a stalled leader shows up as a gap in acknowledgements rather than a slower load.
- Consumers ``consumer-N`` either each read every partition from the start (``assign``) or share
  them in one consumer group (``group``; assignments and revocations are recorded, since a new
  owner may legitimately start anywhere).
- A consumer "kill" is a crash: its poll loop and group membership stop at once, without a
  commit or a LeaveGroup, so the coordinator only notices when the session times out.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from brokerlab.errors import is_retriable
from brokerlab.ids import TopicPartition
from client import Consumer, Producer
from lab.experiment.scenario import WorkloadSpec, effective_idempotence
from lab.history import INFO, History

log = logging.getLogger("lab.experiment")
POLL_TIMEOUT_MS = 100


class ProducerLoad:
    def __init__(self, history: History, name: str, bootstrap: list[str], spec: WorkloadSpec, topic: str,
                 partitions: int, rate: float) -> None:
        self.history = history
        self.name = name
        self.spec = spec
        self.topic = topic
        self.partitions = partitions
        self.interval_s = 1.0 / rate if rate > 0 else 0.01
        settings: dict[str, Any] = dict(
            acks=spec.acks, linger_ms=spec.linger_ms, client_id=name,
            max_in_flight_requests_per_connection=spec.max_in_flight,
            request_timeout_ms=spec.request_timeout_ms, delivery_timeout_ms=spec.delivery_timeout_ms)
        settings["enable_idempotence"] = effective_idempotence(spec)  # explicit: the scenario decides
        self.producer = Producer(bootstrap, **settings)
        self.sent = 0
        self._stopping = False
        self._task: asyncio.Task | None = None
        self.error: BaseException | None = None

    def value(self, n: int) -> bytes:
        text = f"{self.name}-{n}".encode()
        return text + b"_" * max(0, self.spec.value_bytes - len(text))

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        next_at = time.monotonic()
        try:
            while not self._stopping:  # never cancelled inside send: every record sent is recorded
                n = self.sent
                value = self.value(n)
                key = f"k{n % self.spec.keys}".encode() if self.spec.keys > 0 else None
                partition = None if key is not None else n % self.partitions
                handle = await self.producer.send(self.topic, value, key=key, partition=partition)
                self._track(handle, value, key)
                self.sent += 1
                next_at += self.interval_s
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        except Exception as exc:  # a send refused outright (e.g. buffer full past max.block.ms)
            self.error = exc
            log.warning("%s stopped: %s", self.name, exc)

    def _track(self, handle: Any, value: bytes, key: bytes | None) -> None:
        """Like History.track, but a retriable final error is ``info``, not ``fail``: the producer
        retried, and an earlier attempt (timed out, or NOT_ENOUGH_REPLICAS_AFTER_APPEND) may have been
        appended, so even NOT_ENOUGH_REPLICAS at the end proves nothing about the record."""
        send = self.history.invoke_send(self.name, self.topic, handle.partition, value, key)

        def done(h: Any) -> None:
            error = h.exception()
            code = getattr(error, "code", None)
            retried = error is not None and code is not None and is_retriable(int(code))
            self.history.complete_send(send, None if error is not None else h.result().offset, error,
                                       outcome=INFO if retried else None)

        handle.add_done_callback(done)

    async def stop(self, settle_timeout_ms: int) -> None:
        self._stopping = True
        if self._task is not None:
            await self._task
        await self.producer.close(settle_timeout_ms)


class ConsumerLoad:
    def __init__(self, history: History, name: str, bootstrap: list[str], spec: WorkloadSpec, topic: str,
                 partitions: int, index: int) -> None:
        self.history = history
        self.name = name
        self.spec = spec
        self.topic = topic
        self.partitions = partitions
        self.index = index
        self.bootstrap = bootstrap
        self.consumer: Consumer | None = None
        self._task: asyncio.Task | None = None
        self.records = 0
        self.incarnation = 0

    def _new_consumer(self) -> Consumer:
        spec = self.spec
        common = dict(auto_offset_reset="earliest", client_id=f"{self.name}", fetch_max_wait_ms=100,
                      request_timeout_ms=5_000)
        if spec.consumer_mode == "group":
            return Consumer(self.bootstrap, group_id=spec.group, session_timeout_ms=spec.session_timeout_ms,
                            heartbeat_interval_ms=spec.heartbeat_interval_ms,
                            partition_assignment_strategy=spec.assignment_strategy,
                            group_instance_id=f"{self.name}-static" if spec.static_members else None,
                            auto_commit_interval_ms=1000, **common)
        return Consumer(self.bootstrap, **common)

    def start(self) -> None:
        self.incarnation += 1
        self.consumer = self._new_consumer()
        if self.spec.consumer_mode == "group":
            self.consumer.subscribe([self.topic], on_partitions_assigned=self._assigned,
                                    on_partitions_revoked=self._revoked, on_partitions_lost=self._lost)
        else:
            tps = [TopicPartition(self.topic, p) for p in range(self.partitions)]
            self.consumer.assign(tps)
            for tp in tps:
                self.history.record_seek(self.name, tp.topic, tp.partition)
        self._task = asyncio.ensure_future(self._run(self.consumer))

    def _assigned(self, partitions) -> None:
        for tp in sorted(partitions):
            self.history.record_seek(self.name, tp.topic, tp.partition)  # the new owner starts at the commit
        self.history.record_event("client", "PartitionsAssigned", self.name,
                                  partitions=sorted(tp.partition for tp in partitions), **self._generation())

    def _revoked(self, partitions) -> None:
        self.history.record_event("client", "PartitionsRevoked", self.name,
                                  partitions=sorted(tp.partition for tp in partitions), **self._generation())

    def _lost(self, partitions) -> None:
        self.history.record_event("client", "PartitionsLost", self.name,
                                  partitions=sorted(tp.partition for tp in partitions), **self._generation())

    def _generation(self) -> dict:
        try:
            meta = self.consumer.group_metadata()
            return {"generation_id": meta["generation_id"], "protocol": meta["protocol"]}
        except Exception:  # not in a group yet
            return {}

    async def _run(self, consumer: Consumer) -> None:
        # Not `while True`: stop() clears self.consumer before it cancels, and on Python < 3.12
        # asyncio.wait_for (inside poll) can swallow a cancel that lands as its inner call
        # finishes; a loop that only cancellation ends then polls forever and stop() never returns
        # (seen once: a rolling-restart-static run hung after its load).
        while self.consumer is consumer:
            try:
                records = await consumer.poll(timeout_ms=POLL_TIMEOUT_MS)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # e.g. a commit that failed after a rebalance: carry on polling
                self.history.record_event("client", "PollFailed", self.name, error=str(exc))
                await asyncio.sleep(0.1)
                continue
            if records:
                self.records += len(records)
                self.history.record_poll(self.name, records)

    async def stop(self, clean: bool = True) -> None:
        consumer, self.consumer = self.consumer, None
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if consumer is None:
            return
        if clean:
            await consumer.close()
        else:
            await _crash(consumer)

    @property
    def running(self) -> bool:
        return self.consumer is not None


async def _crash(consumer: Consumer) -> None:
    """Stop a consumer the way a crash would: no commit, no LeaveGroup, timers and calls gone.

    The facade has no crash switch (a clean close always leaves the group), so this stops its
    parts directly: the group runner's driver (heartbeats), then the fetch driver and the link.
    """
    group = getattr(consumer, "_group", None)
    if group is not None:
        group._closed = True
        for name in ("_metadata_task",):
            task = getattr(group, name, None)
            if task is not None:
                task.cancel()
        if getattr(group, "_driver", None) is not None:
            await group._driver.close()
    consumer._group = None
    await consumer.close()


class Workload:
    def __init__(self, history: History, bootstrap: list[str], spec: WorkloadSpec, topic: str, partitions: int) -> None:
        self.history = history
        self.spec = spec
        self.topic = topic
        self.partitions = partitions
        rate = spec.rate / max(1, spec.producers)
        self.producers = [ProducerLoad(history, f"producer-{i + 1}", bootstrap, spec, topic, partitions, rate)
                          for i in range(spec.producers)]
        self.consumers = {f"consumer-{i + 1}": ConsumerLoad(history, f"consumer-{i + 1}", bootstrap, spec, topic,
                                                            partitions, i)
                          for i in range(spec.consumers)}

    def consumer_names(self) -> list[str]:
        return list(self.consumers)

    def start(self) -> None:
        for consumer in self.consumers.values():
            consumer.start()
        for producer in self.producers:
            producer.start()

    async def kill_consumer(self, name: str, clean: bool = False) -> None:
        await self.consumers[name].stop(clean=clean)

    async def start_consumer(self, name: str) -> None:
        if not self.consumers[name].running:
            self.consumers[name].start()

    async def stop_producers(self, settle_timeout_ms: int) -> None:
        await asyncio.gather(*(p.stop(settle_timeout_ms) for p in self.producers))

    async def stop_consumers(self) -> None:
        await asyncio.gather(*(c.stop(clean=True) for c in self.consumers.values()), return_exceptions=True)

    def sent(self) -> int:
        return sum(p.sent for p in self.producers)


async def read_back(history: History, bootstrap: list[str], topic: str, partitions: int,
                    timeout_s: float = 30.0, process: str = "read-back") -> dict[int, int]:
    """Read every partition from its start to its end (the high watermark now); returns the ends."""
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    async with Consumer(bootstrap, auto_offset_reset="earliest", client_id=process, request_timeout_ms=5_000,
                        fetch_max_wait_ms=100) as consumer:
        consumer.assign(tps)
        await consumer.seek_to_end(*tps)
        ends = {tp: await consumer.position(tp) for tp in tps}
        await consumer.seek_to_beginning(*tps)
        for tp in tps:
            history.record_seek(process, tp.topic, tp.partition, 0)
        deadline = time.monotonic() + timeout_s
        while True:
            positions = {tp: await consumer.position(tp) for tp in tps}
            if all(positions[tp] >= ends[tp] for tp in tps) or time.monotonic() > deadline:
                return {tp.partition: ends[tp] for tp in tps}
            records = await consumer.poll(timeout_ms=200)
            if records:
                history.record_poll(process, records)
