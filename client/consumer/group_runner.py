"""The asyncio side of consumer groups: runs the sans-IO GroupMembership for a Consumer.

- A CoreDriver runs the membership core; its timer is Kafka's heartbeat thread (heartbeats and
  the max.poll.interval.ms check go on while the application is busy, as long as the event loop
  runs: SyncConsumer keeps it in a background thread).
- ``on_poll`` is Kafka's ``ConsumerCoordinator.poll``, called at the start of every poll: it
  runs the rebalance callbacks, commits before revoking (auto-commit), lets the join go out,
  applies a new assignment (committed offsets -> positions) and auto-commits on its interval.
- A small task keeps the metadata the group needs fresh (brokers for FindCoordinator, partition
  counts for the leader, every topic for a pattern subscription).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import re
from typing import TYPE_CHECKING, Any, Callable, Iterable

from brokerlab.driver import CoreDriver
from brokerlab.errors import ErrorCode, KafkaError
from brokerlab.ids import TopicPartition, broker_id_of
from brokerlab.sansio import Envelope, TraceEvent
from client.consumer.assignors import RebalanceProtocol
from client.consumer.group import GroupConfig, GroupMembership, MemberState
from client.consumer.group.offsets import RETRIABLE

if TYPE_CHECKING:
    from client.consumer.consumer import Consumer

log = logging.getLogger("brokerlab.client.group")
Callback = Callable[[set[TopicPartition]], Any]


async def _call(callback: Callback | None, partitions: set[TopicPartition]) -> None:
    if callback is None:
        return
    result = callback(set(partitions))
    if inspect.isawaitable(result):
        await result


class GroupRunner:
    def __init__(self, consumer: Consumer, config: GroupConfig) -> None:
        self.consumer = consumer
        self.config = config
        self.link = consumer._link
        self.core = GroupMembership(config, self.link.cache, node=f"client-{config.client_id}")
        self.pattern: re.Pattern | None = None
        self.on_assigned: Callback | None = None
        self.on_revoked: Callback | None = None
        self.on_lost: Callback | None = None
        self._driver: CoreDriver | None = None
        self._changed: asyncio.Event | None = None
        self._metadata_task: asyncio.Task | None = None
        self._async_commits: set[asyncio.Task] = set()
        self._next_auto_commit_ms = 0
        self._pending_fetch: tuple[frozenset, int] | None = None
        self._closed = False

    # ---- subscription --------------------------------------------------------------------

    def subscribe(self, topics: Iterable[str] | None, pattern: str | re.Pattern | None,
                  on_assigned: Callback | None, on_revoked: Callback | None, on_lost: Callback | None) -> None:
        if (topics is None) == (pattern is None):
            raise ValueError("subscribe to a list of topics or to a pattern (exactly one)")
        self.on_assigned, self.on_revoked, self.on_lost = on_assigned, on_revoked, on_lost
        if pattern is not None:
            self.pattern = re.compile(pattern) if isinstance(pattern, str) else pattern
            self._match_pattern()
        else:
            self.pattern = None
            self.core.subscribe(tuple(topics))
        self.kick()

    def _match_pattern(self) -> None:
        cache = self.link.cache
        matched = [t for t in cache.topics() if not cache.is_internal(t) and self.pattern.fullmatch(t)]
        if matched or self.core.subscription:
            self.core.subscribe(matched)

    @property
    def subscribed(self) -> bool:
        return bool(self.core.subscription) or self.pattern is not None

    # ---- running the core ------------------------------------------------------------------

    def kick(self) -> None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return
        if self._driver is None:
            self._changed = asyncio.Event()
            self._driver = CoreDriver(self.core, self.core.node, self._transport, self.link.now_ms, self._on_event)
            self._metadata_task = asyncio.ensure_future(self._keep_metadata_fresh())
        self._driver.execute(self.core.tick(self.link.now_ms()))

    def _on_event(self, event: TraceEvent) -> None:
        level = logging.INFO if event.name in ("GroupJoined", "GroupLeft", "PollIntervalExceeded", "CoordinatorLost",
                                               "GroupMembershipFailed", "CoordinatorDiscovered") else logging.DEBUG
        log.log(level, "%s %s", event.name, event.fields)
        self._changed.set()
        self.consumer._notify()

    async def _transport(self, envelope: Envelope) -> Envelope:
        broker_id = broker_id_of(envelope.dst)
        address = self.core.coordinator_address if (
            envelope.rpc != "FindCoordinator" and broker_id == self.core.coordinator_id) else None
        address = address or self.link.cache.broker_address(broker_id)
        if address is None:
            return envelope.failed(f"no address for broker {broker_id}")
        timeout_ms = self.config.request_timeout_ms
        if envelope.rpc == "JoinGroup":  # parked by the coordinator for up to the rebalance timeout
            timeout_ms = max(timeout_ms, self.config.rebalance_timeout_ms + 5000)
        try:
            response = await self.link.call_group_at(address, envelope.rpc, envelope.message, timeout_ms)
        except KafkaError as exc:
            return envelope.failed(str(exc))
        return envelope.reply(response)

    async def _keep_metadata_fresh(self) -> None:
        cache = self.link.cache
        backoff_ms = self.config.retry_backoff_ms
        last_full_ms: int | None = None  # a pattern needs every topic; other refreshes ask for fewer
        while not self._closed:
            now_ms = self.link.now_ms()
            full_due = self.pattern is not None and (
                last_full_ms is None or now_ms - last_full_ms >= cache.metadata_max_age_ms)
            if self.subscribed and (full_due or cache.needs_update(now_ms)):
                try:
                    topics = None if self.pattern is not None else (cache.wanted_topics() or None)
                    await self.link.refresh_metadata(topics)
                    backoff_ms = self.config.retry_backoff_ms
                    if self.pattern is not None:
                        last_full_ms = now_ms
                        self._match_pattern()
                except Exception as exc:  # keep going: the next attempt may succeed
                    log.debug("group metadata refresh failed: %s", exc)
                    backoff_ms = min(backoff_ms * 2, self.config.retry_backoff_max_ms)
                self._driver.execute(self.core.tick(self.link.now_ms()))
                await asyncio.sleep(backoff_ms / 1000)
                continue
            await asyncio.sleep(self.config.retry_backoff_ms / 1000)  # cheap check, ~10 per second

    async def _wait(self, deadline: float) -> bool:
        timeout = deadline - asyncio.get_running_loop().time()
        if timeout <= 0:
            return False
        self._changed.clear()
        try:
            await asyncio.wait_for(self._changed.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    # ---- the poll path ----------------------------------------------------------------------

    async def on_poll(self, deadline: float) -> None:
        """Everything the group needs from one poll; waits for a join only while nothing is owned."""
        core = self.core
        self.kick()
        core.poll_called(self.link.now_ms())
        while True:
            if core.fatal is not None:
                raise core.fatal
            if core.partitions_lost:
                await self._lose_partitions()
            if core.pending_assignment is not None:
                await self._apply_assignment(deadline)
                if core.pending_assignment is not None:
                    return  # committed offsets not known in time: the next poll goes on
            if core.needs_join and not core.join_allowed:
                await self._prepare_join()
            if not (core.needs_join or core.state is not MemberState.STABLE) or self.consumer.assignment():
                break
            if not await self._wait(deadline):
                return
        await self._maybe_auto_commit()

    async def _prepare_join(self) -> None:
        """Kafka's ``onJoinPrepare``: eager members commit and give everything up first."""
        core = self.core
        if core.protocol is RebalanceProtocol.EAGER and core.owned:
            owned = set(core.owned)
            if self.config.enable_auto_commit:
                await self._commit_quietly(self._positions(owned))
            await _call(self.on_revoked, owned)
            self.consumer._core.assign([])
            core.partitions_released()
        core.allow_join()
        self.kick()

    async def _lose_partitions(self) -> None:
        lost = set(self.core.owned) | set(self.consumer.assignment())
        log.info("group %s: partitions lost (this member left the generation): %s",
                 self.config.group_id, sorted(map(str, lost)))
        if lost:
            await _call(self.on_lost or self.on_revoked, lost)
        self.consumer._core.assign([])
        self.core.partitions_released()

    async def _apply_assignment(self, deadline: float) -> None:
        core = self.core
        new = set(core.pending_assignment)
        owned = set(core.owned)
        revoked = owned - new if core.protocol is RebalanceProtocol.COOPERATIVE else set()
        added = new - owned
        committed = await self._committed_for(added, deadline) if added else {}
        if committed is None:
            return
        if revoked:
            if self.config.enable_auto_commit:
                await self._commit_quietly(self._positions(revoked))
            await _call(self.on_revoked, revoked)
        fetch = self.consumer._core
        fetch.assign(sorted(new))
        for tp, entry in committed.items():
            if entry is not None:
                fetch.seek(tp, entry[0])
        core.assignment_applied(tuple(new))
        if revoked:
            core.request_rejoin(f"member-rejoined: revoked {len(revoked)} partition(s) that move (cooperative)")
        if not new:
            log.warning("group %s: member %s got no partitions (generation %d): the group has more members than "
                        "partitions of its topics; it stays idle until a rebalance gives it some",
                        self.config.group_id, core.member_id, core.generation_id)
        self._next_auto_commit_ms = self.link.now_ms() + self.config.auto_commit_interval_ms
        self.consumer._kick()
        await _call(self.on_assigned, added)

    async def _committed_for(self, added: set[TopicPartition], deadline: float) -> dict | None:
        """The committed offsets of newly assigned partitions. The OffsetFetch outlives a poll that
        ends first (Kafka's pending committed-offset request), so poll(0) loops still progress."""
        key = frozenset(added)
        if self._pending_fetch is None or self._pending_fetch[0] != key:
            self._pending_fetch = (key, self.core.offsets.fetch(sorted(added)))
            self.kick()
        request_id = self._pending_fetch[1]
        results = self.core.offsets.results
        while request_id not in results:
            if not await self._wait(deadline):
                return None
        self._pending_fetch = None
        return self.core.offsets.take_fetch_result(request_id)

    # ---- commits ---------------------------------------------------------------------------

    def _positions(self, partitions: Iterable[TopicPartition] | None = None) -> dict[TopicPartition, int]:
        fetch = self.consumer._core
        out = {}
        for tp in partitions if partitions is not None else fetch.assignment():
            try:
                position = fetch.position(tp)
            except ValueError:
                continue
            if position is not None:
                out[tp] = position
        return out

    async def _result(self, request_id: int, deadline: float) -> Any:
        offsets = self.core.offsets
        self.kick()
        while request_id not in offsets.results:
            if not await self._wait(deadline):
                offsets.cancel(request_id)
                raise KafkaError(ErrorCode.REQUEST_TIMED_OUT, (
                    f"no answer from the coordinator of group {self.config.group_id!r} in time"
                    + (f" (last FindCoordinator error: {self.core.coordinator_problem})"
                       if self.core.coordinator_problem else "")))
        return offsets.results.pop(request_id)

    async def commit(self, offsets: dict[TopicPartition, int] | None, timeout_ms: int | None = None) -> None:
        """commitSync: retries retriable errors (coordinator moved, loading) until the timeout."""
        offsets = self._positions() if offsets is None else {TopicPartition(*tp): o for tp, o in offsets.items()}
        if not offsets:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (timeout_ms or self.config.request_timeout_ms) / 1000
        managed = self.subscribed
        while True:
            outcome = await self._result(self.core.offsets.commit(offsets, group_managed=managed), deadline)
            if outcome is None:
                return
            if outcome.code not in RETRIABLE or loop.time() >= deadline:
                raise outcome
            await asyncio.sleep(self.config.retry_backoff_ms / 1000)

    def commit_async(self, offsets: dict[TopicPartition, int] | None = None,
                     callback: Callable[[dict, Exception | None], Any] | None = None) -> asyncio.Task:
        """commitAsync: one attempt, no retry; the callback (if any) gets (offsets, error or None)."""
        offsets = self._positions() if offsets is None else dict(offsets)

        async def run() -> None:
            error = None
            try:
                if offsets:
                    outcome = await self._result(self.core.offsets.commit(offsets, group_managed=self.subscribed),
                                                 asyncio.get_running_loop().time() + self.config.request_timeout_ms / 1000)
                    error = outcome
            except KafkaError as exc:
                error = exc
            if error is not None:
                log.info("group %s: async commit failed: %s", self.config.group_id, error)
            if callback is not None:
                result = callback(offsets, error)
                if inspect.isawaitable(result):
                    await result

        task = asyncio.ensure_future(run())
        self._async_commits.add(task)
        task.add_done_callback(self._async_commits.discard)
        return task

    async def _commit_quietly(self, offsets: dict[TopicPartition, int]) -> None:
        try:
            await self.commit(offsets)
        except KafkaError as exc:
            log.warning("group %s: commit before revoking failed: %s", self.config.group_id, exc)

    async def _maybe_auto_commit(self) -> None:
        now = self.link.now_ms()
        if self.config.enable_auto_commit and now >= self._next_auto_commit_ms and self.consumer.assignment() \
                and self.core.state is MemberState.STABLE:
            self._next_auto_commit_ms = now + self.config.auto_commit_interval_ms
            self.commit_async()

    async def committed(self, partitions: Iterable[TopicPartition], deadline: float | None = None
                        ) -> dict[TopicPartition, tuple[int, str] | None] | None:
        """Committed offsets (None per partition without one); None if the deadline passed first."""
        wanted = sorted(set(partitions))
        loop = asyncio.get_running_loop()
        final = deadline is None
        deadline = deadline if deadline is not None else loop.time() + self.config.request_timeout_ms / 1000
        while True:
            try:
                outcome = await self._result(self.core.offsets.fetch(wanted), deadline)
            except KafkaError:
                if final:
                    raise
                return None
            if not isinstance(outcome, KafkaError):
                return {tp: outcome.get(tp) for tp in wanted}
            if outcome.code not in RETRIABLE:
                raise outcome
            if loop.time() >= deadline:
                if final:
                    raise outcome
                return None
            await asyncio.sleep(self.config.retry_backoff_ms / 1000)

    # ---- closing -----------------------------------------------------------------------------

    async def close(self, timeout_ms: int = 5000) -> None:
        """Commit (auto-commit), revoke, leave the group (dynamic members), stop the driver."""
        if self._closed:
            return
        try:
            if self._driver is not None and self.core.owned:
                owned = set(self.core.owned)
                if self.config.enable_auto_commit and self.core.state is MemberState.STABLE:
                    await self._commit_quietly(self._positions(owned))
                await _call(self.on_revoked, owned)
            if self._driver is not None:
                fx = self.core.tick(self.link.now_ms())
                request_id = self.core.leave("member-left: the consumer was closed", self.link.now_ms(), fx)
                self._driver.execute(fx)
                loop = asyncio.get_running_loop()
                deadline = loop.time() + timeout_ms / 1000
                while request_id is not None and request_id in self.core._leaves and await self._wait(deadline):
                    pass
        finally:
            self._closed = True
            if self._async_commits:
                await asyncio.gather(*self._async_commits, return_exceptions=True)
            if self._metadata_task is not None:
                self._metadata_task.cancel()
                await asyncio.gather(self._metadata_task, return_exceptions=True)
            if self._driver is not None:
                await self._driver.close()
