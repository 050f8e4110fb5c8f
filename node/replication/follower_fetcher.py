"""The follower side of replication (Kafka's ReplicaFetcherManager + fetcher threads, sans-IO).

Every partition this broker follows goes through two phases:

==========  ==========================================================================
TRUNCATING  asks the leader (OffsetForLeaderEpoch, one request per leader for every partition
            in this phase) where our latest leader epoch ended, and truncates there
            (``truncation.py``). -> FETCHING when the answer settles it (KIP-279 may take a
            second round, staying here). An empty log needs no question.
FETCHING    replicates: one long-poll Fetch per leader broker covering all its partitions
            in this phase; records appended as they are (opaque batches, offsets and epochs
            kept); the follower high watermark = min(leader's, own log end). -> TRUNCATING when
            the leader says our log diverged or our fetch offset is out of its range.
==========  ==========================================================================

Errors back off (per partition for partition errors, per leader for a failed call). When new
partitions become ready to fetch from a leader while a long-poll to it is out, a new Fetch
covering all of them goes at once; the leader answers the superseded one right away and its
answer is ignored here (only the latest Fetch per leader counts). Answers are applied only if
the partition is still followed from the same leader in the same epoch at the offset asked.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Callable

from brokerlab.errors import ErrorCode, error_name
from brokerlab.ids import TopicPartition, broker_node
from brokerlab.sansio import Effects, Envelope, RequestIds
from brokerlab.v1 import broker_pb2
from node.config import BrokerConfig
from node.lifecycle import Backoff
from node.log.errors import CorruptBatchError, InvalidOffsetError, LogError, OffsetOutOfRangeError
from node.log.manager import LogManager
from node.replication.truncation import restart_at, truncate, truncation_offset

# A follower fetch answer carries at most this much (one gRPC message must hold it).
REPLICA_FETCH_RESPONSE_MAX_BYTES = 10 * 1024 * 1024


class FollowerPhase(enum.Enum):
    TRUNCATING = "truncating"
    FETCHING = "fetching"


TRANSITIONS: dict[FollowerPhase, frozenset[FollowerPhase]] = {
    FollowerPhase.TRUNCATING: frozenset({FollowerPhase.FETCHING}),
    FollowerPhase.FETCHING: frozenset({FollowerPhase.TRUNCATING}),
}


@dataclass(slots=True)
class FollowedPartition:
    tp: TopicPartition
    leader_id: int
    leader_epoch: int
    backoff: Backoff
    phase: FollowerPhase = FollowerPhase.TRUNCATING
    due_ms: int = 0  # backing off until then
    asking: bool = False  # an OffsetForLeaderEpoch about it is in flight

    def move(self, phase: FollowerPhase, now_ms: int) -> None:
        if phase is not self.phase:
            if phase not in TRANSITIONS[self.phase]:
                raise AssertionError(f"invalid follower transition {self.phase.name} -> {phase.name}")
            self.phase = phase
        self.asking = False
        self.due_ms = now_ms

    def failed(self, now_ms: int) -> int:
        wait_ms = self.backoff.failed()
        self.due_ms = now_ms + wait_ms
        return wait_ms


@dataclass(slots=True)
class FetchSession:
    """The follower's long-poll to one leader broker."""

    leader_id: int
    backoff: Backoff
    request_id: int | None = None
    # What the Fetch in flight asked: tp -> (leader epoch, fetch offset).
    sent: dict[TopicPartition, tuple[int, int]] = field(default_factory=dict)
    due_ms: int = 0


class FollowerFetcher:
    def __init__(self, config: BrokerConfig, ids: RequestIds, logs: LogManager,
                 broker_epoch: Callable[[], int]) -> None:
        self.config = config
        self.broker_id = config.broker_id
        self.node = broker_node(config.broker_id)
        self._ids = ids
        self._logs = logs
        self._broker_epoch = broker_epoch
        self.partitions: dict[TopicPartition, FollowedPartition] = {}
        self.sessions: dict[int, FetchSession] = {}
        self._fetches: dict[int, int] = {}  # Fetch request id -> leader id
        # OffsetForLeaderEpoch request id -> (leader id, {tp: (leader epoch, epoch asked about)})
        self._questions: dict[int, tuple[int, dict[TopicPartition, tuple[int, int]]]] = {}
        self._dirty = False
        self._deadline: int | None = None

    def _backoff(self) -> Backoff:
        return Backoff(self.config.replica_fetch_backoff_ms, self.config.retry_backoff_max_ms)

    # ------------------------------------------------------------------ membership

    def add(self, tp: TopicPartition, leader_id: int, leader_epoch: int, now_ms: int) -> None:
        """Follow ``tp`` from ``leader_id`` in ``leader_epoch``: truncate first, then fetch."""
        self.partitions[tp] = FollowedPartition(tp, leader_id, leader_epoch, self._backoff(), due_ms=now_ms)
        self._dirty = True

    def remove(self, tp: TopicPartition) -> None:
        if self.partitions.pop(tp, None) is not None:
            self._dirty = True

    def phase_of(self, tp: TopicPartition) -> FollowerPhase | None:
        followed = self.partitions.get(tp)
        return followed.phase if followed is not None else None

    # ------------------------------------------------------------------ sends

    def next_deadline_ms(self) -> int | None:
        return self._deadline

    def tick(self, now_ms: int, fx: Effects) -> None:
        if self._deadline is not None and now_ms >= self._deadline:
            self._dirty = True
        self.maybe_send(now_ms, fx)

    def maybe_send(self, now_ms: int, fx: Effects) -> None:
        """Send what is ready; cheap when nothing changed since the last call."""
        if not self._dirty:
            return
        self._dirty = False
        deadlines: list[int] = []
        questions: dict[int, list[FollowedPartition]] = {}
        ready: dict[int, list[FollowedPartition]] = {}
        for followed in self.partitions.values():
            if followed.due_ms > now_ms:
                deadlines.append(followed.due_ms)
                continue
            if followed.phase is FollowerPhase.TRUNCATING:
                if not followed.asking and not self._skip_question(followed, now_ms, fx):
                    questions.setdefault(followed.leader_id, []).append(followed)
                    continue
                if followed.phase is FollowerPhase.TRUNCATING:
                    continue
            ready.setdefault(followed.leader_id, []).append(followed)
        for leader_id, group in questions.items():
            self._ask(leader_id, group, fx)
        for leader_id, group in ready.items():
            session = self.sessions.get(leader_id)
            if session is None:
                session = self.sessions[leader_id] = FetchSession(leader_id, self._backoff())
            if session.request_id is None:
                if session.due_ms > now_ms:
                    deadlines.append(session.due_ms)
                    continue
            elif all(f.tp in session.sent for f in group):
                continue  # the long-poll in flight covers them
            self._fetch(session, group, fx)
        self._deadline = min(deadlines) if deadlines else None

    def _skip_question(self, followed: FollowedPartition, now_ms: int, fx: Effects) -> bool:
        """True (and FETCHING) when there is nothing to ask: a log without leader epochs."""
        log = self._logs.get(followed.tp)
        if log is None or log.leader_epoch_cache.latest_epoch >= 0:
            return False
        if log.log_end_offset > log.log_start_offset:
            # Records with no epoch cannot be checked against the leader; the HW is safe.
            truncate(log, log.high_watermark, "no_leader_epoch", fx, leader=followed.leader_id,
                     leader_epoch=followed.leader_epoch)
        followed.move(FollowerPhase.FETCHING, now_ms)
        return True

    def _ask(self, leader_id: int, group: list[FollowedPartition], fx: Effects) -> None:
        asked: dict[TopicPartition, tuple[int, int]] = {}
        request = broker_pb2.OffsetForLeaderEpochRequest(replica_id=self.broker_id)
        for followed in group:
            log = self._logs.get(followed.tp)
            if log is None:
                continue
            latest = log.leader_epoch_cache.latest_epoch
            request.partitions.add(topic=followed.tp.topic, partition=followed.tp.partition,
                                   current_leader_epoch=followed.leader_epoch, leader_epoch=latest)
            asked[followed.tp] = (followed.leader_epoch, latest)
            followed.asking = True
        if asked:
            request_id = self._ids.next()
            self._questions[request_id] = (leader_id, asked)
            fx.send(Envelope(self.node, broker_node(leader_id), "OffsetForLeaderEpoch", request, request_id))

    def _fetch(self, session: FetchSession, group: list[FollowedPartition], fx: Effects) -> None:
        config = self.config
        request = broker_pb2.FetchRequest(
            replica_id=self.broker_id,
            max_wait_ms=config.replica_fetch_wait_max_ms,
            min_bytes=1,
            max_bytes=REPLICA_FETCH_RESPONSE_MAX_BYTES,
            replica_broker_epoch=self._broker_epoch(),
        )
        sent: dict[TopicPartition, tuple[int, int]] = {}
        add = request.partitions.add
        for followed in group:
            log = self._logs.get(followed.tp)
            if log is None:
                continue
            offset = log.log_end_offset
            add(topic=followed.tp.topic, partition=followed.tp.partition, fetch_offset=offset,
                partition_max_bytes=config.replica_fetch_max_bytes, current_leader_epoch=followed.leader_epoch,
                last_fetched_epoch=log.leader_epoch_cache.latest_epoch, log_start_offset=log.log_start_offset)
            sent[followed.tp] = (followed.leader_epoch, offset)
        if not sent:
            return
        if session.request_id is not None:
            self._fetches.pop(session.request_id, None)  # superseded: its answer is ignored
        request_id = self._ids.next()
        session.request_id = request_id
        session.sent = sent
        self._fetches[request_id] = session.leader_id
        fx.send(Envelope(self.node, broker_node(session.leader_id), "Fetch", request, request_id))

    # ------------------------------------------------------------------ answers

    def _current(self, tp: TopicPartition, leader_id: int, leader_epoch: int,
                 phase: FollowerPhase) -> FollowedPartition | None:
        followed = self.partitions.get(tp)
        if (followed is None or followed.leader_id != leader_id or followed.leader_epoch != leader_epoch
                or followed.phase is not phase):
            return None
        return followed

    def on_fetch_response(self, envelope: Envelope, now_ms: int, fx: Effects) -> None:
        leader_id = self._fetches.pop(envelope.request_id, None)
        session = self.sessions.get(leader_id) if leader_id is not None else None
        if session is None or session.request_id != envelope.request_id:
            return  # superseded or forgotten
        session.request_id = None
        sent, session.sent = session.sent, {}
        self._dirty = True
        if envelope.transport_error is not None:
            wait_ms = session.backoff.failed()
            session.due_ms = now_ms + wait_ms
            if session.backoff.failures == 1:
                fx.event("ReplicaFetchFailed", leader=leader_id, error=envelope.transport_error, retry_in_ms=wait_ms)
            return
        session.backoff.succeeded()
        for part in envelope.message.partitions:
            tp = TopicPartition(part.topic, part.partition)
            asked = sent.get(tp)
            if asked is None:
                continue
            followed = self._current(tp, leader_id, asked[0], FollowerPhase.FETCHING)
            log = self._logs.get(tp)
            if followed is None or log is None or log.log_end_offset != asked[1]:
                continue
            self._apply_fetched(followed, log, part, now_ms, fx)

    def _apply_fetched(self, followed: FollowedPartition, log, part: broker_pb2.FetchPartitionResponse,
                       now_ms: int, fx: Effects) -> None:
        tp = followed.tp
        error = part.error_code
        if error == ErrorCode.NONE:
            if part.HasField("diverging_epoch"):
                followed.move(FollowerPhase.TRUNCATING, now_ms)
                return
            if part.records:
                try:
                    log.append_as_follower(part.records, now_ms)
                except InvalidOffsetError as exc:
                    fx.event("ReplicaAppendFailed", topic=tp.topic, partition=tp.partition, error=str(exc))
                    followed.move(FollowerPhase.TRUNCATING, now_ms)
                    return
                except (CorruptBatchError, LogError, OSError) as exc:
                    wait_ms = followed.failed(now_ms)
                    fx.event("ReplicaAppendFailed", topic=tp.topic, partition=tp.partition,
                             error=f"{type(exc).__name__}: {exc}", retry_in_ms=wait_ms)
                    return
                fx.events.extend(log.drain_events())  # segment rolls
            high_watermark = min(part.high_watermark, log.log_end_offset)
            if high_watermark > log.high_watermark:
                log.high_watermark = high_watermark
            if log.log_start_offset < part.log_start_offset <= log.high_watermark:
                try:
                    log.maybe_increment_log_start_offset(part.log_start_offset)
                except OffsetOutOfRangeError:
                    pass
            followed.backoff.succeeded()
            return
        if error == ErrorCode.OFFSET_OUT_OF_RANGE:
            if part.log_start_offset > log.log_end_offset:
                restart_at(log, part.log_start_offset, "behind_leader_log_start", fx,
                           leader=followed.leader_id, leader_epoch=followed.leader_epoch)
                followed.due_ms = now_ms
            else:
                followed.move(FollowerPhase.TRUNCATING, now_ms)
            return
        wait_ms = followed.failed(now_ms)
        if followed.backoff.failures == 1:
            fx.event("ReplicaFetchFailed", topic=tp.topic, partition=tp.partition, leader=followed.leader_id,
                     error=error_name(error), retry_in_ms=wait_ms)

    def on_offset_for_leader_epoch_response(self, envelope: Envelope, now_ms: int, fx: Effects) -> None:
        entry = self._questions.pop(envelope.request_id, None)
        if entry is None:
            return
        leader_id, asked = entry
        self._dirty = True
        pending: dict[TopicPartition, tuple[FollowedPartition, int]] = {}
        for tp, (leader_epoch, asked_epoch) in asked.items():
            followed = self._current(tp, leader_id, leader_epoch, FollowerPhase.TRUNCATING)
            if followed is not None and followed.asking:
                followed.asking = False
                pending[tp] = (followed, asked_epoch)
        if envelope.transport_error is not None:
            for followed, _ in pending.values():
                wait_ms = followed.failed(now_ms)
            if pending and next(iter(pending.values()))[0].backoff.failures == 1:
                fx.event("ReplicaFetchFailed", leader=leader_id, rpc="OffsetForLeaderEpoch",
                         error=envelope.transport_error, retry_in_ms=wait_ms)
            return
        for result in envelope.message.partitions:
            tp = TopicPartition(result.topic, result.partition)
            if tp not in pending:
                continue
            followed, asked_epoch = pending[tp]
            log = self._logs.get(tp)
            if log is None:
                continue
            if result.error_code != ErrorCode.NONE:
                wait_ms = followed.failed(now_ms)
                if followed.backoff.failures == 1:
                    fx.event("ReplicaFetchFailed", topic=tp.topic, partition=tp.partition, leader=leader_id,
                             rpc="OffsetForLeaderEpoch", error=error_name(result.error_code), retry_in_ms=wait_ms)
                continue
            if log.leader_epoch_cache.latest_epoch != asked_epoch:
                continue  # the log changed under the question: ask again
            cut = truncation_offset(log, result.leader_epoch, result.end_offset)
            truncate(log, cut.offset, "leader_epoch", fx, leader=leader_id, leader_epoch=followed.leader_epoch,
                     leader_answer_epoch=result.leader_epoch, leader_answer_end_offset=result.end_offset)
            if cut.completed:
                followed.backoff.succeeded()
                followed.move(FollowerPhase.FETCHING, now_ms)
            elif log.leader_epoch_cache.latest_epoch == asked_epoch:
                # A second round must ask about an older epoch; asking the same again would
                # spin. Cannot happen with a consistent epoch cache: back off and say so.
                wait_ms = followed.failed(now_ms)
                fx.event("TruncationStalled", topic=tp.topic, partition=tp.partition, leader=leader_id,
                         epoch=asked_epoch, leader_answer_epoch=result.leader_epoch,
                         leader_answer_end_offset=result.end_offset, retry_in_ms=wait_ms)
