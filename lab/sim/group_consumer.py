"""A consumer-group member process on the simulator: the real client cores and the poll loop around them.

What an experiment's group consumer is for real (lab/experiment/workload.py ``ConsumerLoad`` on
the asyncio ``Consumer`` and its ``GroupRunner``), as one sim core on its own node:

- the client's sans-IO cores, as the Consumer facade wires them: ``GroupMembership`` (find the
  coordinator, join, sync, heartbeat, commit, leave) and ``FetchCore`` (positions, fetches,
  offset resets) over one ``MetadataCache``, which this core keeps fresh as the facade's
  metadata task does;
- the application: ``ConsumerLoad``'s loop of ``poll(timeout_ms=100)``, with the poll path of
  client/consumer/group_runner.py (``on_poll``: lost partitions, assignments applied from the
  committed offsets, an eager member's commit and revocation before it joins, auto-commit every
  ``auto.commit.interval.ms``), written as a generator that waits where the asyncio code
  awaits: for an offset request's answer, for any change, or for a time;
- what ``ConsumerLoad`` records in the history: each poll's records, a seek for every newly
  assigned partition (the new owner starts at the commit), ``PartitionsAssigned`` /
  ``PartitionsRevoked`` / ``PartitionsLost`` client events with the generation.

A kill (SIGKILL) is the node crashing: no commit, no LeaveGroup, so the coordinator only notices
at the session timeout; a restart is a new incarnation, a new consumer. A clean close (SIGTERM,
``member_stop``) is ``GroupRunner.close``: commit and revoke what it owns, LeaveGroup (dynamic
members; a static one just goes quiet), then the process exits.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Generator, Iterable

from brokerlab.errors import ErrorCode, KafkaError
from brokerlab.ids import TopicPartition, broker_node
from brokerlab.sansio import Effects, Envelope, RequestIds
from brokerlab.v1 import broker_pb2
from client.consumer.assignors import RebalanceProtocol
from client.consumer.fetcher import FetchConfig, FetchCore
from client.consumer.group import GroupConfig, GroupMembership, MemberState
from client.consumer.group.offsets import RETRIABLE
from client.metadata import MetadataCache
from lab.experiment.scenario import WorkloadSpec

from .node import BootContext, GracefulStop

FETCH_RPCS = frozenset({"Fetch", "ListOffsets", "OffsetForLeaderEpoch"})
# Trace noise the real consumer does not log either (one per fetch answer).
QUIET_EVENTS = frozenset({"RecordsFetched"})
CLOSE_TIMEOUT_MS = 5_000  # GroupRunner.close: how long it waits for the LeaveGroup answer


@dataclass(frozen=True)
class MemberSpec:
    """One consumer of the workload, as ``ConsumerLoad._new_consumer`` configures it."""

    process: str  # its name in the history: "consumer-1"
    topic: str
    brokers: tuple[str, ...]  # the bootstrap list
    group: GroupConfig
    fetch: FetchConfig
    request_timeout_ms: int = 5_000
    poll_timeout_ms: int = 100  # ConsumerLoad polls with timeout_ms=100
    max_poll_records: int = 500
    metadata_max_age_ms: int = 300_000

    @property
    def node(self) -> str:
        return f"client-{self.group.client_id}"

    @classmethod
    def from_workload(cls, spec: WorkloadSpec, index: int, topic: str, brokers: Iterable[str]) -> "MemberSpec":
        name = f"consumer-{index + 1}"
        group = GroupConfig(
            group_id=spec.group, group_instance_id=f"{name}-static" if spec.static_members else "",
            session_timeout_ms=spec.session_timeout_ms, heartbeat_interval_ms=spec.heartbeat_interval_ms,
            partition_assignment_strategy=tuple(spec.assignment_strategy.split(",")),
            auto_commit_interval_ms=1000, request_timeout_ms=5_000, client_id=name)
        fetch = FetchConfig(auto_offset_reset="earliest", fetch_max_wait_ms=100)
        return cls(name, topic, tuple(brokers), group, fetch)

    def call_timeout_ms(self, envelope: Envelope) -> int:
        """The deadlines the facades put on calls: a JoinGroup may be parked for the rebalance
        timeout, a Fetch for its long-poll wait."""
        if envelope.rpc == "JoinGroup":
            return max(self.request_timeout_ms, self.group.rebalance_timeout_ms + 5000)
        if envelope.rpc == "Fetch":
            return self.request_timeout_ms + envelope.message.max_wait_ms
        return self.request_timeout_ms


@dataclass
class _Wait:
    """Where the application waits: until ``until_ms``, or sooner for the answer to offset
    request ``request_id`` or (``on_change``) anything the cores report. Resumes with True when
    woken early, False at ``until_ms``."""

    until_ms: int
    request_id: int | None = None
    on_change: bool = False


class GroupConsumerCore:
    """Step/tick/next_deadline_ms for the node; ``history`` gets what the application saw."""

    def __init__(self, spec: MemberSpec, history: Any, rng: random.Random, now_ms: int) -> None:
        self.spec = spec
        self.history = history
        self.node = spec.node
        self.cache = MetadataCache(spec.metadata_max_age_ms)
        self.fetch = FetchCore(spec.fetch, self.cache, node=self.node, random=rng)
        self.group = GroupMembership(spec.group, self.cache, node=self.node)
        self.group.subscribe([spec.topic])
        self.closed = False
        self._now_ms = now_ms
        self._fx = Effects()
        self._metadata_ids = RequestIds()
        self._metadata_inflight: int | None = None
        self._metadata_due_ms = now_ms
        self._metadata_backoff_ms = spec.fetch.retry_backoff_ms
        self._next_broker = rng.randrange(len(spec.brokers))
        self._next_auto_commit_ms = 0
        self._async_commits: dict[int, int] = {}  # request id -> deadline (commitAsync)
        self._pending_fetch: tuple[frozenset, int] | None = None  # the OffsetFetch a poll left behind
        self._wait: _Wait | None = None  # None: the application has not started (the first tick starts it)
        self._app: Generator[_Wait, bool, None] = self._application()

    # ---- the core contract ------------------------------------------------------------------

    def step(self, envelope: Envelope, now_ms: int) -> Effects:
        self._now_ms, self._fx = now_ms, Effects()
        if envelope.rpc == "Metadata":
            self._on_metadata(envelope)
        elif envelope.rpc in FETCH_RPCS:
            self._fx.extend(self.fetch.step(envelope, now_ms))
        else:
            self._fx.extend(self.group.step(envelope, now_ms))
        return self._run(changed=True)

    def tick(self, now_ms: int) -> Effects:
        self._now_ms, self._fx = now_ms, Effects()
        return self._run(changed=False)

    def next_deadline_ms(self) -> int | None:
        due = [d for d in (self.group.next_deadline_ms(), self.fetch.next_deadline_ms()) if d is not None]
        if self._wait is not None:
            due.append(self._wait.until_ms)
        if self._metadata_inflight is None:
            if self.cache.needs_update(self._now_ms):
                due.append(max(self._metadata_due_ms, self._now_ms + 1))
            elif self.cache.last_update_ms is not None:
                due.append(self.cache.last_update_ms + self.cache.metadata_max_age_ms)
        return min(due) if due else None

    def begin_close(self, now_ms: int) -> Effects:
        """SIGTERM: the poll loop is cancelled, then the consumer closes (``_close``)."""
        self._now_ms, self._fx = now_ms, Effects()
        self._app.close()
        self._app, self._wait = self._close(), None
        return self._run(changed=False)

    def _run(self, changed: bool) -> Effects:
        """The application goes on if it may, then the cores send what became due."""
        now, fx = self._now_ms, self._fx
        fx.extend(self.group.tick(now))
        self._advance(changed)
        self._reap_async_commits()
        fx.extend(self.group.tick(now))
        fx.extend(self.fetch.tick(now))
        self._maybe_refresh_metadata()
        fx.events[:] = [event for event in fx.events if event.name not in QUIET_EVENTS]
        return fx

    def _advance(self, changed: bool) -> None:
        """Resume the application while what it waits for is there (the driver of ``_Wait``)."""
        while not self.closed:
            wait = self._wait
            if wait is None:
                woken = False
            elif (wait.request_id is not None and wait.request_id in self.group.offsets.results) or (
                    wait.on_change and changed):
                woken = True
            elif self._now_ms >= wait.until_ms:
                woken = False
            else:
                return
            changed = False  # one change wakes one wait
            try:
                self._wait = self._app.send(woken if wait is not None else None)
            except StopIteration:
                self._wait = None
                self.closed = True

    # ---- metadata (the facades' metadata tasks) -------------------------------------------------

    def _maybe_refresh_metadata(self) -> None:
        now = self._now_ms
        if self._metadata_inflight is not None or not self.cache.needs_update(now) or now < self._metadata_due_ms:
            return
        known = [broker_node(b) for b in self.cache.brokers()] or list(self.spec.brokers)
        broker = known[self._next_broker % len(known)]
        self._next_broker += 1
        self._metadata_inflight = self._metadata_ids.next()
        self._fx.send(Envelope(self.node, broker, "Metadata", broker_pb2.MetadataRequest(
            topics=self.cache.wanted_topics()), self._metadata_inflight))

    def _on_metadata(self, envelope: Envelope) -> None:
        if envelope.request_id != self._metadata_inflight:
            return
        self._metadata_inflight = None
        if envelope.transport_error is None:
            self.cache.update(envelope.message, self._now_ms)
            self._metadata_backoff_ms = self.spec.fetch.retry_backoff_ms
            self._metadata_due_ms = self._now_ms + self._metadata_backoff_ms  # the refresh backoff
        else:  # the next broker, after an exponential backoff
            self._metadata_due_ms = self._now_ms + self._metadata_backoff_ms
            self._metadata_backoff_ms = min(self._metadata_backoff_ms * 2, self.spec.fetch.retry_backoff_max_ms)

    # ---- the application: ConsumerLoad._run and Consumer.poll -----------------------------------

    def _application(self) -> Generator[_Wait, bool, None]:
        while True:
            try:
                records = yield from self._poll(self.spec.poll_timeout_ms)
            except KafkaError as exc:  # e.g. a commit that failed after a rebalance: carry on polling
                self.history.record_event("client", "PollFailed", self.spec.process, error=str(exc))
                yield _Wait(self._now_ms + 100)
                continue
            if records:
                self.history.record_poll(self.spec.process, records)

    def _poll(self, timeout_ms: int) -> Generator[_Wait, bool, list]:
        deadline = self._now_ms + timeout_ms
        while True:
            yield from self._on_poll(deadline)
            error = self.fetch.take_error()
            if error is not None:
                raise error
            records = self.fetch.drain(self.spec.max_poll_records)
            if records:
                return records
            if not (yield _Wait(deadline, on_change=True)):
                return []

    # ---- the poll path: GroupRunner.on_poll ---------------------------------------------------

    def _on_poll(self, deadline: int) -> Generator[_Wait, bool, None]:
        core = self.group
        core.poll_called(self._now_ms)
        while True:
            if core.fatal is not None:
                raise core.fatal
            if core.partitions_lost:
                self._lose_partitions()
            if core.pending_assignment is not None:
                yield from self._apply_assignment(deadline)
                if core.pending_assignment is not None:
                    return  # committed offsets not known in time: the next poll goes on
            if core.needs_join and not core.join_allowed:
                yield from self._prepare_join()
            if not (core.needs_join or core.state is not MemberState.STABLE) or self.fetch.assignment():
                break
            if not (yield _Wait(deadline, on_change=True)):
                return
        self._maybe_auto_commit()

    def _prepare_join(self) -> Generator[_Wait, bool, None]:
        """Kafka's ``onJoinPrepare``: eager members commit and give everything up first."""
        core = self.group
        if core.protocol is RebalanceProtocol.EAGER and core.owned:
            owned = set(core.owned)
            if self.spec.group.enable_auto_commit:
                yield from self._commit_quietly(self._positions(owned))
            self._record_partitions("PartitionsRevoked", owned)
            self.fetch.assign([])
            core.partitions_released()
        core.allow_join()

    def _lose_partitions(self) -> None:
        lost = set(self.group.owned) | set(self.fetch.assignment())
        if lost:
            self._record_partitions("PartitionsLost", lost)
        self.fetch.assign([])
        self.group.partitions_released()

    def _apply_assignment(self, deadline: int) -> Generator[_Wait, bool, None]:
        core = self.group
        new, owned = set(core.pending_assignment), set(core.owned)
        revoked = owned - new if core.protocol is RebalanceProtocol.COOPERATIVE else set()
        added = new - owned
        committed = (yield from self._committed_for(added, deadline)) if added else {}
        if committed is None:
            return
        if revoked:
            if self.spec.group.enable_auto_commit:
                yield from self._commit_quietly(self._positions(revoked))
            self._record_partitions("PartitionsRevoked", revoked)
        self.fetch.assign(sorted(new))
        for tp, entry in committed.items():
            if entry is not None:
                self.fetch.seek(tp, entry[0])
        core.assignment_applied(tuple(new))
        if revoked:
            core.request_rejoin(f"member-rejoined: revoked {len(revoked)} partition(s) that move (cooperative)")
        self._next_auto_commit_ms = self._now_ms + self.spec.group.auto_commit_interval_ms
        for tp in sorted(added):  # ConsumerLoad._assigned: the new owner starts at the commit
            self.history.record_seek(self.spec.process, tp.topic, tp.partition)
        self._record_partitions("PartitionsAssigned", added)

    def _committed_for(self, added: set[TopicPartition], deadline: int) -> Generator[_Wait, bool, dict | None]:
        """The committed offsets of newly assigned partitions; the OffsetFetch outlives a poll
        that ends first (None: not known yet)."""
        key = frozenset(added)
        if self._pending_fetch is None or self._pending_fetch[0] != key:
            self._pending_fetch = (key, self.group.offsets.fetch(sorted(added)))
        request_id = self._pending_fetch[1]
        if not (yield _Wait(deadline, request_id=request_id)):
            return None
        self._pending_fetch = None
        outcome = self.group.offsets.results.pop(request_id)
        if isinstance(outcome, KafkaError):
            if outcome.code in RETRIABLE:
                return None  # asked again at the next poll
            raise outcome
        return outcome

    # ---- commits ----------------------------------------------------------------------------

    def _positions(self, partitions: Iterable[TopicPartition] | None = None) -> dict[TopicPartition, int]:
        out = {}
        for tp in partitions if partitions is not None else self.fetch.assignment():
            try:
                position = self.fetch.position(tp)
            except ValueError:
                continue
            if position is not None:
                out[tp] = position
        return out

    def _commit(self, offsets: dict[TopicPartition, int]) -> Generator[_Wait, bool, None]:
        """commitSync: retries retriable errors (coordinator moved, loading) until request.timeout.ms."""
        if not offsets:
            return
        deadline = self._now_ms + self.spec.group.request_timeout_ms
        offsets_core = self.group.offsets
        while True:
            request_id = offsets_core.commit(offsets, group_managed=True)
            if not (yield _Wait(deadline, request_id=request_id)):
                offsets_core.cancel(request_id)
                raise KafkaError(ErrorCode.REQUEST_TIMED_OUT,
                                 f"no answer from the coordinator of group {self.spec.group.group_id!r} in time")
            outcome = offsets_core.results.pop(request_id)
            if outcome is None:
                return
            if outcome.code not in RETRIABLE or self._now_ms >= deadline:
                raise outcome
            yield _Wait(self._now_ms + self.spec.group.retry_backoff_ms)

    def _commit_quietly(self, offsets: dict[TopicPartition, int]) -> Generator[_Wait, bool, None]:
        try:
            yield from self._commit(offsets)
        except KafkaError as exc:  # the new owner starts from an older commit: it re-reads
            self._fx.event("CommitBeforeRevokeFailed", group=self.spec.group.group_id, error=str(exc))

    def _maybe_auto_commit(self) -> None:
        now, core = self._now_ms, self.group
        if self.spec.group.enable_auto_commit and now >= self._next_auto_commit_ms and self.fetch.assignment() \
                and core.state is MemberState.STABLE:
            self._next_auto_commit_ms = now + self.spec.group.auto_commit_interval_ms
            offsets = self._positions()
            if offsets:  # commitAsync: one attempt, no retry
                request_id = core.offsets.commit(offsets, group_managed=True)
                self._async_commits[request_id] = now + self.spec.group.request_timeout_ms

    def _reap_async_commits(self) -> None:
        offsets = self.group.offsets
        for request_id, deadline in list(self._async_commits.items()):
            if request_id in offsets.results:
                offsets.results.pop(request_id)
            elif self._now_ms >= deadline:
                offsets.cancel(request_id)
            else:
                continue
            del self._async_commits[request_id]

    # ---- closing: GroupRunner.close -----------------------------------------------------------

    def _close(self) -> Generator[_Wait, bool, None]:
        core = self.group
        if core.owned:
            owned = set(core.owned)
            if self.spec.group.enable_auto_commit and core.state is MemberState.STABLE:
                yield from self._commit_quietly(self._positions(owned))
            self._record_partitions("PartitionsRevoked", owned)
        request_id = core.leave("member-left: the consumer was closed", self._now_ms, self._fx)
        deadline = self._now_ms + CLOSE_TIMEOUT_MS
        while request_id is not None and request_id in core._leaves:
            if not (yield _Wait(deadline, on_change=True)):
                break

    # ---- history ----------------------------------------------------------------------------

    def _record_partitions(self, name: str, partitions: set[TopicPartition]) -> None:
        core = self.group
        self.history.record_event("client", name, self.spec.process,
                                  partitions=sorted(tp.partition for tp in partitions),
                                  generation_id=core.generation_id, protocol=core.protocol_name)


def member_factory(spec: MemberSpec, history: Any):
    """The node's factory: every incarnation is a new consumer (nothing survives a restart)."""

    def factory(context: BootContext) -> GroupConsumerCore:
        return GroupConsumerCore(spec, history, context.random, context.now_ms)

    return factory


def member_stop(spec: MemberSpec) -> GracefulStop:
    """SIGTERM: ``ConsumerLoad.stop(clean=True)``: the close runs, then the process exits."""
    return GracefulStop(begin=lambda core, now_ms: core.begin_close(now_ms),
                        may_stop=lambda core: core.closed, finish=lambda core, now_ms: None,
                        timeout_ms=spec.request_timeout_ms + CLOSE_TIMEOUT_MS + 1000)
