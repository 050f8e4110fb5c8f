"""The consumer's fetch state (sans-IO): positions, fetches per leader, offset resets, buffering.

Kafka's ``SubscriptionState`` + ``Fetcher`` for manually assigned partitions. ``tick`` and
``step`` return Fetch/ListOffsets envelopes to send to ``broker-<id>``; responses come back
through ``step``; ``drain`` hands decoded records to the application and moves positions.

Two offsets per partition: ``position`` is the next offset the application gets, and
``fetch_offset`` the next one to ask the leader for. They differ while fetched records wait in
the buffer, which is what lets the next fetch travel while the application works through the
previous one (one fetch in flight per broker, up to ``max_partition_fetch_bytes`` buffered per
partition before the next is sent).

Every seek or reset bumps the partition's ``generation``; fetched data and offset answers made
for an older generation are dropped, so an in-flight fetch can never undo a seek.

Failover: every Fetch, ListOffsets and OffsetForLeaderEpoch carries ``current_leader_epoch``
from metadata (-1 when unknown). NOT_LEADER_OR_FOLLOWER, FENCED_LEADER_EPOCH,
UNKNOWN_LEADER_EPOCH, LEADER_NOT_AVAILABLE and failed calls refresh metadata at once and back
off exponentially (``retry.backoff.ms`` .. ``retry.backoff.max.ms``, jitter from the injected
Random), ending the backoff as soon as metadata names a newer leader epoch. The position is
never moved by a leader change; it is validated against the new leader (validation.py, KIP-320)
and only moved back if that leader's log diverges before it.
"""

from __future__ import annotations

import itertools
from collections import deque
from typing import Iterable

import crc32c

from brokerlab.errors import REFRESH_METADATA, ErrorCode, KafkaError, error_name, is_retriable
from brokerlab.ids import TopicPartition, broker_node
from brokerlab.record_batch import (
    ATTRIBUTES_OFFSET,
    RecordColumns,
    decode_batch_columns,
    iter_headers,
)
from brokerlab.sansio import Effects, Envelope, Random, RequestIds
from brokerlab.v1 import broker_pb2
from client.consumer.fetch_state import (  # noqa: F401  (re-exported)
    AUTO_OFFSET_RESET_CHOICES,
    TRANSITIONS,
    FetchConfig,
    FetchState,
    PartitionState,
)
from client.consumer.records import ConsumerRecord, build_records
from client.consumer.validation import PositionValidation, _Sent
from client.metadata import MetadataCache

EARLIEST_TIMESTAMP = -2  # ListOffsets: the log start offset
LATEST_TIMESTAMP = -1  # ListOffsets: the high watermark
RESET_TIMESTAMPS = {"earliest": EARLIEST_TIMESTAMP, "latest": LATEST_TIMESTAMP}
CONSUMER_REPLICA_ID = -1


def _transport_code(reason: str) -> int:
    """The Kafka code a failed call's reason starts with (``"INVALID_REQUEST: ..."``), else
    NETWORK_EXCEPTION."""
    member = ErrorCode.__members__.get(reason.split(":", 1)[0].strip().upper())
    return ErrorCode.NETWORK_EXCEPTION if member is None or member == ErrorCode.NONE else member
class _Chunk:
    """One decoded batch (or its tail) waiting to be polled."""

    __slots__ = ("tp", "generation", "columns", "cursor", "size_bytes", "leader_epoch")

    def __init__(
        self, tp: TopicPartition, generation: int, columns: RecordColumns, size_bytes: int, leader_epoch: int
    ) -> None:
        self.tp = tp
        self.generation = generation
        self.columns = columns
        self.cursor = 0
        self.size_bytes = size_bytes
        self.leader_epoch = leader_epoch  # the batch's partition leader epoch


class FetchCore(PositionValidation):
    def __init__(
        self, config: FetchConfig, metadata: MetadataCache, node: str = "client-consumer",
        random: Random | None = None,
    ) -> None:
        self.config = config
        self.metadata = metadata
        self.node = node
        self._random = random  # backoff jitter
        self._partitions: dict[TopicPartition, PartitionState] = {}
        self._completed: deque[_Chunk] = deque()
        self._buffered_bytes = 0
        self._fetches: dict[int, _Sent] = {}  # request id -> what it asked
        self._list_offsets: dict[int, _Sent] = {}
        self._validations: dict[int, _Sent] = {}
        self._fetching_brokers: set[int] = set()
        self._listing_brokers: set[int] = set()
        self._validating_brokers: set[int] = set()
        self._errors: deque[Exception] = deque()  # raised by the next polls, once each
        self._ids = RequestIds()
        # Generations come from one counter so a partition unassigned and assigned again never
        # reuses a number an old in-flight request still carries.
        self._generations = itertools.count(1)
        self._now_ms = 0
        self._paused: set[TopicPartition] = set()  # pause(): not fetched, not returned

    # ---- assignment and positions (called by the application through the facade) ------------

    def assign(self, partitions: Iterable[TopicPartition]) -> None:
        """Replace the assignment; partitions kept keep their positions and buffered records."""
        wanted = [TopicPartition(*tp) for tp in partitions]
        old = self._partitions
        self._partitions = {}
        for tp in wanted:
            state = old.get(tp)
            if state is None:
                state = PartitionState(tp)
                state.generation = next(self._generations)
                self._set_reset_policy(state)
            self._partitions[tp] = state
        self.metadata.add_topics({tp.topic for tp in wanted})
        self._paused &= set(self._partitions)
        if any(tp not in self._partitions for tp in old):
            self._purge_buffer()

    def pause(self, partitions: Iterable[TopicPartition]) -> None:
        """Stop fetching ``partitions`` and hold back what is buffered (Kafka's pause)."""
        self._paused |= {self._assigned(tp).tp for tp in partitions}

    def resume(self, partitions: Iterable[TopicPartition]) -> None:
        self._paused -= {TopicPartition(*tp) for tp in partitions}

    def paused(self) -> set[TopicPartition]:
        return set(self._paused)

    def assignment(self) -> list[TopicPartition]:
        return list(self._partitions)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        if offset < 0:
            raise ValueError(f"cannot seek {tp} to negative offset {offset}")
        state = self._assigned(tp)
        self._move(state, FetchState.FETCHING)
        state.position = state.fetch_offset = offset
        state.position_epoch = -1  # an explicit offset has no epoch: nothing to validate
        state.reset_strategy = None

    def request_offset_reset(self, tp: TopicPartition, strategy: str) -> None:
        """seek_to_beginning ("earliest") / seek_to_end ("latest"), resolved by ListOffsets."""
        if strategy not in RESET_TIMESTAMPS:
            raise ValueError(f"unknown offset reset strategy {strategy!r}")
        state = self._assigned(tp)
        self._move(state, FetchState.AWAITING_RESET)
        state.position = state.fetch_offset = None
        state.reset_strategy = strategy

    def position(self, tp: TopicPartition) -> int | None:
        """The next offset poll returns for ``tp``; None while a reset is pending or failed."""
        state = self._assigned(tp)
        return state.position if state.state is FetchState.FETCHING else None

    def partition_error(self, tp: TopicPartition) -> KafkaError | None:
        return self._assigned(tp).error

    def high_watermark(self, tp: TopicPartition) -> int:
        """The leader's high watermark from the last fetch (-1 before one); for lag."""
        return self._assigned(tp).high_watermark

    def take_error(self) -> Exception | None:
        """The next error for poll to raise: one-off errors first, then failed partitions."""
        if self._errors:
            return self._errors.popleft()
        for state in self._partitions.values():
            if state.state is FetchState.FAILED and state.error is not None:
                return state.error
        return None

    def buffered_record_count(self) -> int:
        return sum(c.columns.record_count - c.cursor for c in self._completed)

    def _assigned(self, tp: TopicPartition) -> PartitionState:
        state = self._partitions.get(TopicPartition(*tp))
        if state is None:
            raise ValueError(f"partition {tp} is not assigned to this consumer")
        return state

    def _move(self, state: PartitionState, to: FetchState) -> None:
        state.move_to(to, next(self._generations))
        self._purge_buffer()

    def _purge_buffer(self) -> None:
        """Drop buffered chunks of partitions that moved on (seek, reset, unassigned)."""
        if not self._completed:
            return
        kept = deque()
        for chunk in self._completed:
            state = self._partitions.get(chunk.tp)
            if state is not None and state.generation == chunk.generation:
                kept.append(chunk)
            else:
                self._buffered_bytes -= chunk.size_bytes
        self._completed = kept

    def _set_reset_policy(self, state: PartitionState) -> None:
        policy = self.config.auto_offset_reset
        if policy == "none":
            state.state = FetchState.FAILED
            state.error = KafkaError(
                ErrorCode.OFFSET_OUT_OF_RANGE,
                f"no position for {state.tp} and auto.offset.reset is none: seek first",
            )
        else:
            state.reset_strategy = policy

    # ---- draining records (poll) ----------------------------------------------------------

    def drain(self, max_records: int) -> list[ConsumerRecord]:
        """Up to ``max_records`` buffered records, in fetch order; advances positions."""
        out: list[ConsumerRecord] = []
        completed = self._completed
        held: list[_Chunk] = []  # chunks of paused partitions stay buffered, in order
        while completed and len(out) < max_records:
            chunk = completed[0]
            if chunk.tp in self._paused:
                held.append(completed.popleft())
                continue
            state = self._partitions.get(chunk.tp)
            if state is None or state.generation != chunk.generation or state.state is not FetchState.FETCHING:
                completed.popleft()  # left over from before a seek, reset or reassignment
                self._buffered_bytes -= chunk.size_bytes
                continue
            columns = chunk.columns
            start = chunk.cursor
            stop = min(columns.record_count, start + max_records - len(out))
            records, error = build_records(
                chunk.tp, columns, start, stop, self.config.key_deserializer, self.config.value_deserializer
            )
            out.extend(records)
            chunk.cursor = start + len(records)
            if records:
                state.position = records[-1].offset + 1
                state.position_epoch = chunk.leader_epoch
            if error is not None:  # the position stays on the bad record; the next poll raises
                self._errors.append(error)
                break
            if chunk.cursor >= columns.record_count:
                completed.popleft()
                self._buffered_bytes -= chunk.size_bytes
                state.buffered_bytes -= chunk.size_bytes
        completed.extendleft(reversed(held))
        return out

    # ---- the core protocol ----------------------------------------------------------------

    def tick(self, now_ms: int) -> Effects:
        self._now_ms = now_ms
        effects = Effects()
        self._send_requests(now_ms, effects)
        return effects

    def _send_requests(self, now_ms: int, effects: Effects) -> None:
        self._send_list_offsets(now_ms, effects)
        self._send_validations(now_ms, effects)  # first: a moved leader epoch stops fetching
        self._send_fetches(now_ms, effects)

    def step(self, envelope: Envelope, now_ms: int) -> Effects:
        self._now_ms = now_ms
        effects = Effects()
        if envelope.is_response and envelope.rpc == "Fetch":
            self.on_fetch_response(envelope, now_ms, effects)
        elif envelope.is_response and envelope.rpc == "ListOffsets":
            self.on_list_offsets_response(envelope, now_ms, effects)
        elif envelope.is_response and envelope.rpc == "OffsetForLeaderEpoch":
            self.on_offset_for_leader_epoch_response(envelope, now_ms, effects)
        else:
            effects.event("UnexpectedMessageDropped", rpc=envelope.rpc, src=envelope.src)
        self._send_requests(now_ms, effects)
        return effects

    def next_deadline_ms(self) -> int | None:
        """The end of the earliest backoff still running."""
        due = [s.backoff_until_ms for s in self._partitions.values() if s.backoff_until_ms > self._now_ms]
        return min(due) if due else None

    # ---- requests -------------------------------------------------------------------------

    def _ready(self, state: PartitionState, now_ms: int) -> bool:
        """Nothing in flight, backoff over, and the metadata refresh it waits for (if any) done.

        A partition backing off after a leader error keeps asking for metadata, and goes at once
        when metadata shows a newer leader epoch than the one that failed (as the producer does).
        """
        if state.in_flight or self.metadata.update_count < state.metadata_needed:
            return False
        if state.backoff_until_ms <= now_ms:
            return True
        if state.awaiting_leader_change:
            if self.metadata.leader_epoch_for(state.tp) > state.failed_leader_epoch:
                state.backoff_until_ms = 0
                state.awaiting_leader_change = False
                return True
            self.metadata.request_update()
        return False

    def _leader(self, state: PartitionState) -> int | None:
        leader = self.metadata.leader_for(state.tp)
        if leader is None or self.metadata.broker_address(leader) is None:
            self.metadata.request_update()
            return None
        return leader

    def _send_list_offsets(self, now_ms: int, effects: Effects) -> None:
        by_leader: dict[int, list[PartitionState]] = {}
        for state in self._partitions.values():
            if state.state is FetchState.AWAITING_RESET and self._ready(state, now_ms):
                leader = self._leader(state)
                if leader is not None and leader not in self._listing_brokers:
                    by_leader.setdefault(leader, []).append(state)
        for leader, states in by_leader.items():
            request = broker_pb2.ListOffsetsRequest(replica_id=CONSUMER_REPLICA_ID)
            sent = _Sent(leader, {})
            for state in states:
                timestamp = RESET_TIMESTAMPS[state.reset_strategy]
                state.request_epoch = self.metadata.leader_epoch_for(state.tp)
                request.partitions.add(
                    topic=state.tp.topic,
                    partition=state.tp.partition,
                    timestamp_ms=timestamp,
                    current_leader_epoch=state.request_epoch,
                )
                sent.partitions[state.tp] = (state.generation, timestamp)
                state.in_flight = True
            request_id = self._ids.next()
            self._list_offsets[request_id] = sent
            self._listing_brokers.add(leader)
            effects.send(Envelope(self.node, broker_node(leader), "ListOffsets", request, request_id))

    def _send_fetches(self, now_ms: int, effects: Effects) -> None:
        if self._buffered_bytes >= self.config.fetch_max_bytes:
            return  # the application is behind; fetch again once it catches up
        limit = self.config.max_partition_fetch_bytes
        by_leader: dict[int, list[PartitionState]] = {}
        for state in self._partitions.values():
            if state.state is FetchState.FETCHING and state.buffered_bytes < limit and state.tp not in self._paused \
                    and self._ready(state, now_ms):
                leader = self._leader(state)
                if leader is not None and leader not in self._fetching_brokers:
                    by_leader.setdefault(leader, []).append(state)
        for leader, states in by_leader.items():
            request = broker_pb2.FetchRequest(
                replica_id=CONSUMER_REPLICA_ID,
                max_wait_ms=self.config.fetch_max_wait_ms,
                min_bytes=self.config.fetch_min_bytes,
                max_bytes=self.config.fetch_max_bytes,
            )
            sent = _Sent(leader, {})
            for state in states:
                state.request_epoch = state.leader_epoch = self.metadata.leader_epoch_for(state.tp)
                request.partitions.add(
                    topic=state.tp.topic,
                    partition=state.tp.partition,
                    fetch_offset=state.fetch_offset,
                    partition_max_bytes=limit,
                    current_leader_epoch=state.request_epoch,
                    last_fetched_epoch=-1,
                    log_start_offset=-1,
                )
                sent.partitions[state.tp] = (state.generation, state.fetch_offset)
                state.in_flight = True
            request_id = self._ids.next()
            self._fetches[request_id] = sent
            self._fetching_brokers.add(leader)
            effects.send(Envelope(self.node, broker_node(leader), "Fetch", request, request_id))

    # ---- responses ------------------------------------------------------------------------

    def _settle(self, sent: _Sent) -> dict[TopicPartition, PartitionState]:
        """Clear in-flight marks; returns the partitions whose generation is still current."""
        current = {}
        for tp, (generation, _) in sent.partitions.items():
            state = self._partitions.get(tp)
            if state is not None and state.generation == generation:
                state.in_flight = False
                current[tp] = state
            elif state is not None:
                state.in_flight = False
        return current

    def _on_transport_error(self, sent: _Sent, reason: str, rpc: str, effects: Effects) -> None:
        # The broker may be down or no longer there: back off, and route again after a refresh.
        self.metadata.request_update()
        for state in self._settle(sent).values():
            self._back_off(state, refresh=True)
        effects.event(f"{rpc}Failed", broker_id=sent.broker_id, reason=reason)

    def _back_off(self, state: PartitionState, refresh: bool) -> None:
        """Exponential backoff (retry.backoff.ms doubling up to retry.backoff.max.ms, jittered).

        ``refresh``: the leader may have moved; refresh metadata at once, wait for that refresh,
        and end the backoff early once a newer leader epoch shows (see :meth:`_ready`).
        """
        state.failures += 1
        state.backoff_until_ms = self._now_ms + self.config.backoff_ms(state.failures, self._random)
        if refresh:
            self.metadata.request_update()
            state.metadata_needed = self.metadata.update_count + 1
            state.awaiting_leader_change = True
            state.failed_leader_epoch = state.request_epoch

    def on_fetch_response(self, envelope: Envelope, now_ms: int, effects: Effects) -> None:
        sent = self._fetches.pop(envelope.request_id, None)
        if sent is None:
            return
        self._fetching_brokers.discard(sent.broker_id)
        if envelope.transport_error is not None:
            self._on_transport_error(sent, envelope.transport_error, "Fetch", effects)
            return
        current = self._settle(sent)
        record_count = 0
        for part in envelope.message.partitions:
            tp = TopicPartition(part.topic, part.partition)
            state = current.get(tp)
            if state is None or state.state is not FetchState.FETCHING:
                continue  # not asked, or seeked/reset/unassigned since: stale
            _, fetch_offset = sent.partitions[tp]
            if part.error_code == ErrorCode.NONE:
                state.failures = 0
                state.high_watermark = part.high_watermark
                state.log_start_offset = part.log_start_offset
                if part.records:
                    record_count += self._buffer_records(state, fetch_offset, part.records, effects)
            else:
                self._on_partition_error(state, part.error_code, part.error_message, fetch_offset, effects)
        effects.event("RecordsFetched", broker_id=sent.broker_id, record_count=record_count)

    def _buffer_records(self, state: PartitionState, fetch_offset: int, records: bytes, effects: Effects) -> int:
        count = 0
        for position, header in iter_headers(records):
            if header.next_offset <= fetch_offset:
                continue  # a whole batch below the fetch offset
            if self.config.check_crcs:
                end = position + header.size_bytes
                if crc32c.crc32c(memoryview(records)[position + ATTRIBUTES_OFFSET : end]) != header.crc:
                    error = KafkaError(
                        ErrorCode.CORRUPT_MESSAGE,
                        f"record batch at offset {header.base_offset} of {state.tp} failed its CRC32C check",
                    )
                    self._errors.append(error)
                    self._back_off(state, refresh=False)
                    effects.event("CorruptBatchReceived", topic=state.tp.topic, partition=state.tp.partition,
                                  base_offset=header.base_offset)
                    break
            columns = decode_batch_columns(records, position, header, fetch_offset)
            if columns.record_count:
                self._completed.append(
                    _Chunk(state.tp, state.generation, columns, header.size_bytes, header.partition_leader_epoch)
                )
                state.buffered_bytes += header.size_bytes
                self._buffered_bytes += header.size_bytes
                count += columns.record_count
            state.fetch_offset = fetch_offset = header.next_offset
        return count

    def _on_partition_error(
        self, state: PartitionState, code: int, message: str, offset: int, effects: Effects
    ) -> None:
        tp = state.tp
        effects.event("FetchPartitionFailed", topic=tp.topic, partition=tp.partition,
                      error=error_name(code), offset=offset)
        if code == ErrorCode.OFFSET_OUT_OF_RANGE:
            self._on_offset_out_of_range(state, offset, effects)
        elif code in REFRESH_METADATA:
            self._back_off(state, refresh=True)
        elif is_retriable(code):
            self._back_off(state, refresh=False)
        else:
            detail = message or f"fetch at offset {offset} failed"
            self._errors.append(KafkaError(code, f"{tp}: {detail}"))
            self._back_off(state, refresh=False)

    def _on_offset_out_of_range(self, state: PartitionState, offset: int, effects: Effects) -> None:
        """Kafka's auto.offset.reset: earliest / latest ask ListOffsets again; none fails."""
        policy = self.config.auto_offset_reset
        if policy == "none":
            position = state.position
            self._move(state, FetchState.FAILED)
            state.position = state.fetch_offset = position
            state.error = KafkaError(
                ErrorCode.OFFSET_OUT_OF_RANGE,
                f"fetch offset {offset} is out of range for {state.tp} and auto.offset.reset is none",
            )
            return
        self._move(state, FetchState.AWAITING_RESET)
        state.position = state.fetch_offset = None
        state.reset_strategy = policy
        effects.event("OffsetResetRequested", topic=state.tp.topic, partition=state.tp.partition,
                      offset=offset, strategy=policy)

    def on_list_offsets_response(self, envelope: Envelope, now_ms: int, effects: Effects) -> None:
        sent = self._list_offsets.pop(envelope.request_id, None)
        if sent is None:
            return
        self._listing_brokers.discard(sent.broker_id)
        if envelope.transport_error is not None:
            self._on_transport_error(sent, envelope.transport_error, "ListOffsets", effects)
            return
        current = self._settle(sent)
        for part in envelope.message.partitions:
            tp = TopicPartition(part.topic, part.partition)
            state = current.get(tp)
            if state is None or state.state is not FetchState.AWAITING_RESET:
                continue
            code = part.error_code
            if code == ErrorCode.NONE and part.offset >= 0:
                strategy = state.reset_strategy
                self._move(state, FetchState.FETCHING)
                state.position = state.fetch_offset = part.offset
                state.position_epoch = part.leader_epoch if part.leader_epoch >= 0 else -1
                state.leader_epoch = state.request_epoch
                state.reset_strategy = None
                effects.event("OffsetReset", topic=tp.topic, partition=tp.partition,
                              offset=part.offset, strategy=strategy)
            elif code == ErrorCode.NONE:
                self._back_off(state, refresh=False)  # no offset (cannot happen for -2/-1): ask again
            elif code in REFRESH_METADATA:
                self._back_off(state, refresh=True)
            elif is_retriable(code):
                self._back_off(state, refresh=False)
            else:
                self._errors.append(KafkaError(code, f"{tp}: {part.error_message or 'offset lookup failed'}"))
                self._back_off(state, refresh=False)
