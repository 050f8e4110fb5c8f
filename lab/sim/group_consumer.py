"""A consumer-group member process on the simulator: the real client cores and the poll loop around them.

What an experiment's group consumer is for real (lab/experiment/workload.py ``ConsumerLoad`` on
the asyncio ``Consumer`` and its ``GroupRunner``), as one sim core on its own node:

- the client's sans-IO cores, as the Consumer facade wires them: ``GroupMembership`` (find the
  coordinator, join, sync, heartbeat, commit, leave) next to the ``FetchCore`` (positions,
  fetches, offset resets) and the ``MetadataCache`` that ``consumer_core.ConsumerCore`` (the
  fetch path and poll loop every sim consumer shares) drives;
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
from dataclasses import dataclass, field
from typing import Any, Generator, Iterable

from brokerlab.errors import ErrorCode, KafkaError
from brokerlab.ids import TopicPartition
from brokerlab.sansio import Effects, Envelope
from client.consumer.assignors import RebalanceProtocol
from client.consumer.fetcher import FetchConfig
from client.consumer.group import GroupConfig, GroupMembership, MemberState
from client.consumer.group.offsets import RETRIABLE
from lab.experiment.scenario import WorkloadSpec

from .consumer_core import ConsumerCore, ConsumerSpec, Wait
from .node import BootContext, GracefulStop

CLOSE_TIMEOUT_MS = 5_000  # GroupRunner.close: how long it waits for the LeaveGroup answer


@dataclass(frozen=True)
class MemberSpec(ConsumerSpec):
    """One group member of the workload, as ``ConsumerLoad._new_consumer`` configures it."""

    group: GroupConfig = field(kw_only=True)

    @classmethod
    def from_workload(cls, spec: WorkloadSpec, index: int, topic: str, brokers: Iterable[str]) -> "MemberSpec":
        name = f"consumer-{index + 1}"
        group = GroupConfig(
            group_id=spec.group, group_instance_id=f"{name}-static" if spec.static_members else "",
            session_timeout_ms=spec.session_timeout_ms, heartbeat_interval_ms=spec.heartbeat_interval_ms,
            partition_assignment_strategy=tuple(spec.assignment_strategy.split(",")),
            auto_commit_interval_ms=1000, request_timeout_ms=5_000, client_id=name)
        fetch = FetchConfig(auto_offset_reset="earliest", fetch_max_wait_ms=100)
        return cls(name, topic, tuple(brokers), fetch, group=group)

    def call_timeout_ms(self, envelope: Envelope) -> int:
        """A JoinGroup may be parked for the rebalance timeout."""
        if envelope.rpc == "JoinGroup":
            return max(self.request_timeout_ms, self.group.rebalance_timeout_ms + 5000)
        return super().call_timeout_ms(envelope)


class GroupConsumerCore(ConsumerCore):
    """``ConsumerCore`` with ``GroupMembership`` and the group runner's poll path."""

    def __init__(self, spec: MemberSpec, history: Any, rng: random.Random, now_ms: int) -> None:
        super().__init__(spec, history, rng, now_ms)
        self.spec: MemberSpec = spec
        self.group = GroupMembership(spec.group, self.cache, node=self.node)
        self.group.subscribe([spec.topic])
        self._next_auto_commit_ms = 0
        self._async_commits: dict[int, int] = {}  # request id -> deadline (commitAsync)
        self._pending_fetch: tuple[frozenset, int] | None = None  # the OffsetFetch a poll left behind

    def begin_close(self, now_ms: int) -> Effects:
        """SIGTERM: the poll loop is cancelled, then the consumer closes (``_close``)."""
        self._now_ms, self._fx = now_ms, Effects()
        self._app.close()
        self._app, self._wait = self._close(), None
        return self._run(changed=False)

    # ---- the group core inside ConsumerCore's driver -------------------------------------------

    def _step_other(self, envelope: Envelope) -> None:
        self._fx.extend(self.group.step(envelope, self._now_ms))

    def _tick_cores(self, before_app: bool) -> None:
        if not before_app:
            self._reap_async_commits()
        self._fx.extend(self.group.tick(self._now_ms))

    def _deadlines(self) -> Iterable[int | None]:
        return (self.group.next_deadline_ms(),)

    def _answered(self, request_id: int) -> bool:
        return request_id in self.group.offsets.results

    # ---- the poll path: GroupRunner.on_poll ---------------------------------------------------

    def _on_poll(self, deadline: int) -> Generator[Wait, bool, None]:
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
            if not (yield Wait(deadline, on_change=True)):
                return
        self._maybe_auto_commit()

    def _prepare_join(self) -> Generator[Wait, bool, None]:
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

    def _apply_assignment(self, deadline: int) -> Generator[Wait, bool, None]:
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

    def _committed_for(self, added: set[TopicPartition], deadline: int) -> Generator[Wait, bool, dict | None]:
        """The committed offsets of newly assigned partitions; the OffsetFetch outlives a poll
        that ends first (None: not known yet)."""
        key = frozenset(added)
        if self._pending_fetch is None or self._pending_fetch[0] != key:
            self._pending_fetch = (key, self.group.offsets.fetch(sorted(added)))
        request_id = self._pending_fetch[1]
        if not (yield Wait(deadline, request_id=request_id)):
            return None
        self._pending_fetch = None
        return self.group.offsets.take_fetch_result(request_id)

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

    def _commit(self, offsets: dict[TopicPartition, int]) -> Generator[Wait, bool, None]:
        """commitSync: retries retriable errors (coordinator moved, loading) until request.timeout.ms."""
        if not offsets:
            return
        deadline = self._now_ms + self.spec.group.request_timeout_ms
        offsets_core = self.group.offsets
        while True:
            request_id = offsets_core.commit(offsets, group_managed=True)
            if not (yield Wait(deadline, request_id=request_id)):
                offsets_core.cancel(request_id)
                raise KafkaError(ErrorCode.REQUEST_TIMED_OUT,
                                 f"no answer from the coordinator of group {self.spec.group.group_id!r} in time")
            outcome = offsets_core.results.pop(request_id)
            if outcome is None:
                return
            if outcome.code not in RETRIABLE or self._now_ms >= deadline:
                raise outcome
            yield Wait(self._now_ms + self.spec.group.retry_backoff_ms)

    def _commit_quietly(self, offsets: dict[TopicPartition, int]) -> Generator[Wait, bool, None]:
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

    def _close(self) -> Generator[Wait, bool, None]:
        core = self.group
        if core.owned:
            owned = set(core.owned)
            if self.spec.group.enable_auto_commit and core.state is MemberState.STABLE:
                yield from self._commit_quietly(self._positions(owned))
            self._record_partitions("PartitionsRevoked", owned)
        request_id = core.leave("member-left: the consumer was closed", self._now_ms, self._fx)
        deadline = self._now_ms + CLOSE_TIMEOUT_MS
        while request_id is not None and request_id in core._leaves:
            if not (yield Wait(deadline, on_change=True)):
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
