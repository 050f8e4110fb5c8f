"""The asyncio Consumer: assign or subscribe (consumer groups), seek, poll, position, commit.

A thin facade: the sans-IO FetchCore decides what to fetch and holds positions; the kernel's
CoreDriver runs it, sending its envelopes through ClusterLink; a background task keeps the
metadata fresh. poll() drains what the core buffered and lets the next fetches go out before
returning, so fetching overlaps with the application's work (Kafka's fetcher pipelining).
With a ``group_id``, ``subscribe`` hands partition assignment to the group (GroupRunner in
client/consumer/group_runner.py: heartbeats, rebalances, commits, callbacks).
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
from typing import Any, Callable, Iterable

from brokerlab.driver import CoreDriver
from brokerlab.errors import ErrorCode, KafkaError, error_name
from brokerlab.ids import TopicPartition, broker_id_of
from brokerlab.sansio import Envelope, TraceEvent
from client import serde
from client.consumer.assignors import DEFAULT_STRATEGY
from client.consumer.fetcher import FetchConfig, FetchCore
from client.consumer.group import GroupConfig
from client.consumer.group_runner import Callback, GroupRunner
from client.consumer.records import ConsumerRecord
from client.rpc.cluster_link import ClusterLink

log = logging.getLogger("brokerlab.client.consumer")

DeserializerSpec = "Callable[[bytes | None], Any] | str | None"


def resolve_deserializer(spec: Any) -> Callable[[Any], Any] | None:
    """A callable, a serde name ("bytes", "str", "json", ...) or None (raw bytes)."""
    if spec is None or spec == "bytes" or spec is serde.deserialize_bytes:
        return None  # records already carry bytes: skip a call per record
    if isinstance(spec, str):
        return serde.deserializer(spec)
    if not callable(spec):
        raise TypeError(f"a deserializer must be callable or a name, not {type(spec).__name__}")
    return spec


class Consumer:
    def __init__(
        self,
        bootstrap: str | Iterable[str],
        *,
        key_deserializer: Any = None,
        value_deserializer: Any = None,
        auto_offset_reset: str = "latest",
        fetch_min_bytes: int = 1,
        fetch_max_wait_ms: int = 500,
        fetch_max_bytes: int = 50 * 1024 * 1024,
        max_partition_fetch_bytes: int = 1024 * 1024,
        max_poll_records: int = 500,
        client_id: str | None = None,
        request_timeout_ms: int = 30_000,
        retry_backoff_ms: int = 100,
        retry_backoff_max_ms: int = 1000,
        metadata_max_age_ms: int = 300_000,
        check_crcs: bool = True,
        group_id: str | None = None,
        group_instance_id: str | None = None,
        session_timeout_ms: int = 6000,
        heartbeat_interval_ms: int = 1000,
        max_poll_interval_ms: int = 300_000,
        partition_assignment_strategy: str | Iterable[str] = DEFAULT_STRATEGY,
        enable_auto_commit: bool = True,
        auto_commit_interval_ms: int = 5000,
    ) -> None:
        if max_poll_records < 1:
            raise ValueError("max_poll_records must be at least 1")
        self.max_poll_records = max_poll_records
        self.request_timeout_ms = request_timeout_ms
        self.retry_backoff_ms = retry_backoff_ms
        self.retry_backoff_max_ms = max(retry_backoff_max_ms, retry_backoff_ms)
        self._refresh_backoff_ms = retry_backoff_ms
        self.client_id = client_id or "consumer"
        self._link = ClusterLink(bootstrap, metadata_max_age_ms, request_timeout_ms)
        config = FetchConfig(
            auto_offset_reset=auto_offset_reset,
            fetch_min_bytes=fetch_min_bytes,
            fetch_max_wait_ms=fetch_max_wait_ms,
            fetch_max_bytes=fetch_max_bytes,
            max_partition_fetch_bytes=max_partition_fetch_bytes,
            retry_backoff_ms=retry_backoff_ms,
            retry_backoff_max_ms=self.retry_backoff_max_ms,
            check_crcs=check_crcs,
            key_deserializer=resolve_deserializer(key_deserializer),
            value_deserializer=resolve_deserializer(value_deserializer),
        )
        self._core = FetchCore(config, self._link.cache, node=f"client-{self.client_id}", random=random.Random())
        self._driver: CoreDriver | None = None
        self._runner: asyncio.Task | None = None
        self._changed: asyncio.Event | None = None  # the core reported something (poll waits on it)
        self._metadata_wanted: asyncio.Event | None = None  # wakes the metadata task
        self._closed = False
        self._last_refresh_ms: int | None = None
        self._group: GroupRunner | None = None
        if group_id:
            strategy = partition_assignment_strategy
            self._group = GroupRunner(self, GroupConfig(
                group_id=group_id, group_instance_id=group_instance_id or "", session_timeout_ms=session_timeout_ms,
                heartbeat_interval_ms=heartbeat_interval_ms, max_poll_interval_ms=max_poll_interval_ms,
                partition_assignment_strategy=tuple(strategy.split(",") if isinstance(strategy, str) else strategy),
                enable_auto_commit=enable_auto_commit, auto_commit_interval_ms=auto_commit_interval_ms,
                retry_backoff_ms=retry_backoff_ms, retry_backoff_max_ms=self.retry_backoff_max_ms,
                request_timeout_ms=request_timeout_ms, client_id=self.client_id))

    async def __aenter__(self) -> "Consumer":
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.close()

    # ---- assignment --------------------------------------------------------------------------

    def assign(self, partitions: Iterable[TopicPartition]) -> None:
        self._check_open()
        if self._group is not None and self._group.subscribed:
            raise ValueError("assign() cannot be mixed with subscribe(): the group assigns the partitions")
        self._core.assign(TopicPartition(*tp) for tp in partitions)
        self._kick()

    def assignment(self) -> set[TopicPartition]:
        return set(self._core.assignment())

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self._check_open()
        self._core.seek(TopicPartition(*tp), offset)
        self._kick()

    async def seek_to_beginning(self, *partitions: TopicPartition) -> None:
        await self._seek_to("earliest", partitions)

    async def seek_to_end(self, *partitions: TopicPartition) -> None:
        await self._seek_to("latest", partitions)

    async def _seek_to(self, strategy: str, partitions: tuple[TopicPartition, ...]) -> None:
        """Ask the leaders (ListOffsets -2 / -1) and wait until every position is known."""
        self._check_open()
        tps = [TopicPartition(*tp) for tp in partitions] or self._core.assignment()
        for tp in tps:
            self._core.request_offset_reset(tp, strategy)
        self._kick()
        await self._wait_for_positions(tps)

    async def position(self, tp: TopicPartition) -> int:
        """The offset of the next record poll returns; resolves a pending reset first."""
        self._check_open()
        tp = TopicPartition(*tp)
        if self._core.position(tp) is None:
            self._kick()
            await self._wait_for_positions([tp])
        return self._core.position(tp)

    def high_watermark(self, tp: TopicPartition) -> int:
        """The leader's high watermark as of the last fetch of ``tp`` (-1 before one)."""
        return self._core.high_watermark(TopicPartition(*tp))

    async def _wait_for_positions(self, tps: list[TopicPartition]) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.request_timeout_ms / 1000
        while True:
            missing = [tp for tp in tps if self._core.position(tp) is None]
            if not missing:
                return
            for tp in missing:
                error = self._core.partition_error(tp)
                if error is not None:
                    raise error
            error = self._core.take_error()
            if error is not None:
                raise error
            if not await self._wait_changed(deadline - loop.time()):
                topic_errors = self._link.cache.topic_errors
                why = "; ".join(
                    f"{topic}: {error_name(topic_errors[topic])}"
                    for topic in sorted({tp.topic for tp in missing})
                    if topic in topic_errors
                )
                raise KafkaError(
                    ErrorCode.REQUEST_TIMED_OUT,
                    f"no offset for {', '.join(map(str, missing))} within {self.request_timeout_ms} ms"
                    + (f" ({why})" if why else ""),
                )

    # ---- consumer groups ---------------------------------------------------------------------

    def _group_runner(self) -> GroupRunner:
        if self._group is None:
            raise ValueError("this consumer has no group_id: pass group_id=... to use consumer groups")
        return self._group

    def subscribe(self, topics: Iterable[str] | None = None, *, pattern: str | re.Pattern | None = None,
                  on_partitions_assigned: Callback | None = None, on_partitions_revoked: Callback | None = None,
                  on_partitions_lost: Callback | None = None) -> None:
        """Join the group for ``topics`` (or every topic matching ``pattern``); poll() drives it.

        Callbacks get a set of TopicPartitions (and may be coroutines); they run inside poll(),
        as in Kafka. ``on_partitions_lost`` (default: the revoked callback) is for partitions
        taken away without a chance to commit (this member was removed from the group).
        """
        self._check_open()
        if topics is not None and isinstance(topics, str):
            topics = [topics]
        if self._core.assignment() and not self._group_runner().subscribed:
            raise ValueError("subscribe() cannot be mixed with assign(): unassign first")
        self._group_runner().subscribe(topics, pattern, on_partitions_assigned, on_partitions_revoked,
                                       on_partitions_lost)

    def subscription(self) -> set[str]:
        return set(self._group.core.subscription) if self._group is not None else set()

    async def commit(self, offsets: dict[TopicPartition, int] | None = None, timeout_ms: int | None = None) -> None:
        """Commit ``offsets`` (next offset to read, per partition), or every current position;
        waits for the coordinator's acks=all answer. CommitFailedError: the group moved on."""
        self._check_open()
        await self._group_runner().commit(offsets, timeout_ms)

    def commit_async(self, offsets: dict[TopicPartition, int] | None = None,
                     callback: Callable[[dict, Exception | None], Any] | None = None) -> asyncio.Task:
        self._check_open()
        return self._group_runner().commit_async(offsets, callback)

    async def committed(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int | None]:
        """The group's committed offset of each partition (None when it has none)."""
        self._check_open()
        found = await self._group_runner().committed([TopicPartition(*tp) for tp in partitions])
        return {tp: (entry[0] if entry is not None else None) for tp, entry in found.items()}

    def pause(self, *partitions: TopicPartition) -> None:
        self._core.pause(TopicPartition(*tp) for tp in partitions)

    def resume(self, *partitions: TopicPartition) -> None:
        self._core.resume(partitions)
        self._kick()

    def paused(self) -> set[TopicPartition]:
        return self._core.paused()

    def group_metadata(self) -> dict[str, Any]:
        """The member's view: group id, member id, generation, state, coordinator, protocol."""
        core = self._group_runner().core
        return {"group_id": core.config.group_id, "member_id": core.member_id, "generation_id": core.generation_id,
                "state": core.state.name, "coordinator_id": core.coordinator_id, "protocol": core.protocol_name,
                "rebalance_protocol": core.protocol.value}

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()

    # ---- poll --------------------------------------------------------------------------------

    async def poll(self, timeout_ms: int = 0, max_records: int | None = None) -> list[ConsumerRecord]:
        """Up to ``max_poll_records`` records, waiting at most ``timeout_ms`` for the first."""
        self._check_open()
        limit = max_records or self.max_poll_records
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_ms / 1000
        self._kick()
        group = self._group if self._group is not None and self._group.subscribed else None
        while True:
            if group is not None:
                await group.on_poll(deadline)
            error = self._core.take_error()
            if error is not None:
                raise error
            records = self._core.drain(limit)
            if records:
                # Room freed in the buffer: let the next fetches travel while the app works.
                self._driver.execute(self._core.tick(self._link.now_ms()))
                return records
            if not await self._wait_changed(deadline - loop.time()):
                return []

    async def _wait_changed(self, timeout_s: float) -> bool:
        if timeout_s <= 0:
            return False
        self._changed.clear()
        try:
            await asyncio.wait_for(self._changed.wait(), timeout_s)
        except asyncio.TimeoutError:
            return False
        return True

    # ---- running the core --------------------------------------------------------------------

    def _kick(self) -> None:
        """Start the driver on first use, then run a tick so new work goes out at once.

        Outside an event loop (assign() before asyncio.run) it does nothing: poll kicks again.
        """
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return
        if self._driver is None:
            self._changed = asyncio.Event()
            self._metadata_wanted = asyncio.Event()
            self._driver = CoreDriver(
                self._core, self._core.node, self._transport, self._link.now_ms, self._on_event
            )
            self._runner = asyncio.ensure_future(self._keep_metadata_fresh())
        self._driver.execute(self._core.tick(self._link.now_ms()))
        self._metadata_wanted.set()  # the assignment may need a refresh

    def _on_event(self, event: TraceEvent) -> None:
        if event.name != "RecordsFetched":
            log.debug("%s %s", event.name, event.fields)
        self._changed.set()
        if self._link.cache.update_requested:
            self._metadata_wanted.set()

    async def _transport(self, envelope: Envelope) -> Envelope:
        timeout_ms = self.request_timeout_ms
        if envelope.rpc == "Fetch":
            timeout_ms += envelope.message.max_wait_ms  # a long-poll may legitimately wait that long
        try:
            response = await self._link.call_broker(
                broker_id_of(envelope.dst), envelope.rpc, envelope.message, timeout_ms
            )
        except KafkaError as exc:
            return envelope.failed(str(exc))
        return envelope.reply(response)

    async def _keep_metadata_fresh(self) -> None:
        """Refresh metadata when the core asks (leader moved, broker gone) or it grew old."""
        cache = self._link.cache
        while not self._closed:
            now_ms = self._link.now_ms()
            if self._core.assignment() and cache.needs_update(now_ms):
                since = None if self._last_refresh_ms is None else now_ms - self._last_refresh_ms
                if since is not None and since < self._refresh_backoff_ms:
                    await asyncio.sleep((self._refresh_backoff_ms - since) / 1000)  # refresh backoff
                    continue
                self._last_refresh_ms = now_ms
                try:
                    await self._link.refresh_metadata(cache.wanted_topics())
                    self._refresh_backoff_ms = self.retry_backoff_ms
                except Exception as exc:  # keep the task alive: the next attempt may succeed
                    if self._refresh_backoff_ms == self.retry_backoff_ms:
                        log.warning("metadata refresh failed (retrying): %s", exc)
                    # Exponential, up to retry.backoff.max.ms, while no broker answers.
                    self._refresh_backoff_ms = min(self._refresh_backoff_ms * 2, self.retry_backoff_max_ms)
                self._driver.execute(self._core.tick(self._link.now_ms()))
                self._changed.set()  # a poll or position() waiting on a leader may go on
                continue
            wait_s = cache.metadata_max_age_ms / 1000
            if cache.last_update_ms is not None:
                wait_s = max(0.0, (cache.last_update_ms + cache.metadata_max_age_ms - now_ms) / 1000)
            self._metadata_wanted.clear()
            try:
                await asyncio.wait_for(self._metadata_wanted.wait(), wait_s)
            except asyncio.TimeoutError:
                pass

    # ---- closing -----------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise KafkaError(ErrorCode.NETWORK_EXCEPTION, "the consumer is closed")

    async def close(self) -> None:
        if self._closed:
            return
        if self._group is not None:
            try:
                await self._group.close()
            except Exception as exc:  # closing must finish: the leave is best effort, as in Kafka
                log.warning("leaving the group on close failed: %s", exc)
        self._closed = True
        if self._runner is not None:
            self._runner.cancel()
            await asyncio.gather(self._runner, return_exceptions=True)
        if self._driver is not None:
            await self._driver.close()
        await self._link.close()
