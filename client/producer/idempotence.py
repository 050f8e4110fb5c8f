"""The idempotent producer's bookkeeping (sans-IO): producer id, epoch, per-partition sequences.

The idempotent half of Kafka's ``TransactionManager`` (KIP-98, KIP-360). The sender asks a
broker for a producer id (InitProducerId) before it drains anything. Each partition numbers its
records: a batch gets ``base_sequence`` = the partition's next sequence when it is first drained
and keeps it (and its bytes) on every retry, so a broker that already wrote it answers with the
original offsets instead of writing it again.

Per partition (``PartitionSequences``) it keeps the identity (producer id, epoch) its sequences
belong to, the next sequence, the last acknowledged sequence and offset, and the *unacked*
batches: sequenced, not yet done, in sequence order (in flight or queued for a retry).

Ordering with up to five requests in flight. Concurrent gRPC calls may reach the broker in any
order (Kafka's single ordered connection does not exist here), so:

- a retried batch is sent only when it is the partition's first unacked batch, and alone in
  its request (its original offsets are one range); new batches may be pipelined behind it;
- each send records whether an earlier batch of the partition was still unacked
  (``sent_behind_unacked``). OUT_OF_ORDER_SEQUENCE_NUMBER or UNKNOWN_PRODUCER_ID for such a
  batch means it overtook its predecessor: it is retried, without backoff, once it is first.
  OUT_OF_ORDER_SEQUENCE_NUMBER for a batch sent first confirms a gap at the broker (it lost
  acknowledged data): the batch fails with that error (Kafka's OutOfOrderSequenceException) and
  the partition is reset. UNKNOWN_PRODUCER_ID for a batch sent first means the broker dropped
  the state of an idle producer (expiration; retention on old brokers): every earlier batch is
  acknowledged, so this one cannot be in the log; the partition is reset and the batch retried
  (KIP-360's resolution).

Reset (Kafka bumps the epoch of an idempotent producer itself, KIP-360): asked for when a
sequenced batch fails (the gap above, a non-retriable error, the delivery timeout) or on
INVALID_PRODUCER_EPOCH. The partition stops numbering new batches; once none of its batches is
on the wire, batches that may have been written are retried in the old identity (a duplicate is
answered with offsets, a gap confirms they were not written); then the epoch is bumped (a new
producer id once the epoch would pass 32767), the remaining batches are renumbered from 0 and
new batches follow. Other partitions finish their unacked batches in the old identity and start
again at 0 in the new one.
"""

from __future__ import annotations

import enum

from brokerlab.errors import ErrorCode
from brokerlab.ids import TopicPartition
from brokerlab.sansio import TraceEvent
from client.producer.batch import ProducerBatch

MAX_EPOCH = (1 << 15) - 1  # producer_epoch is an int16 on the wire
SEQUENCE_MODULUS = 1 << 31
SEQUENCE_ERRORS = frozenset({ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER, ErrorCode.UNKNOWN_PRODUCER_ID,
                             ErrorCode.INVALID_PRODUCER_EPOCH})
MAX_IN_FLIGHT_FOR_IDEMPOTENCE = 5  # Kafka's limit: the broker retains five batches per producer


def resolve_idempotence(enable_idempotence: bool | None, acks: int, max_in_flight: int) -> bool:
    """Kafka's rule: on by default unless acks is not all or more than 5 may be in flight; asked
    for explicitly with such settings, a clear error."""
    conflict = None
    if acks != -1:
        conflict = f"acks='all' (got acks={acks})"
    elif max_in_flight > MAX_IN_FLIGHT_FOR_IDEMPOTENCE:
        conflict = (f"max_in_flight_requests_per_connection <= {MAX_IN_FLIGHT_FOR_IDEMPOTENCE} "
                    f"(got {max_in_flight})")
    if enable_idempotence is None:
        return conflict is None
    if enable_idempotence and conflict is not None:
        raise ValueError(f"enable_idempotence=True needs {conflict}; pass enable_idempotence=False "
                         "for a producer without idempotence")
    return bool(enable_idempotence)


class Decision(enum.Enum):
    """What to do with a batch after an error answer (None from ``on_error``: the usual rules)."""

    RETRY_NOW = "retry_now"  # not written; send again (same or new sequence) without backoff
    FAIL = "fail"


class PartitionSequences:
    __slots__ = ("tp", "producer_id", "producer_epoch", "next_sequence", "last_acked_sequence",
                 "last_acked_offset", "unacked", "reset_requested", "gap_confirmed")

    def __init__(self, tp: TopicPartition) -> None:
        self.tp = tp
        self.producer_id = -1
        self.producer_epoch = -1
        self.next_sequence = 0
        self.last_acked_sequence = -1
        self.last_acked_offset = -1
        self.unacked: list[ProducerBatch] = []
        # A sequenced batch failed (or the broker fenced us): renumber under a new epoch.
        self.reset_requested = False
        # The broker confirmed the first unacked batch is not in its log: neither is any later one.
        self.gap_confirmed = False

    def __repr__(self) -> str:
        return (f"<PartitionSequences {self.tp} id={self.producer_id} epoch={self.producer_epoch} "
                f"next={self.next_sequence} acked={self.last_acked_sequence} unacked={len(self.unacked)}"
                f"{' reset' if self.reset_requested else ''}>")


class IdempotenceManager:
    def __init__(self) -> None:
        self.producer_id = -1
        self.producer_epoch = -1
        self.partitions: dict[TopicPartition, PartitionSequences] = {}
        self.events: list[TraceEvent] = []  # drained by the sender into its Effects
        self.epoch_bumps = 0

    # ---- identity --------------------------------------------------------------------------

    @property
    def needs_producer_id(self) -> bool:
        return self.producer_id < 0

    def set_producer_id(self, producer_id: int, producer_epoch: int) -> None:
        self.producer_id, self.producer_epoch = producer_id, producer_epoch
        self._event("ProducerIdInitialized", producer_id=producer_id, producer_epoch=producer_epoch)

    def _bump_epoch(self, tp: TopicPartition) -> None:
        self.epoch_bumps += 1
        if self.producer_epoch >= MAX_EPOCH:
            # Kafka resets the producer id when the epoch would overflow: ask for a new one.
            self._event("ProducerIdExhausted", producer_id=self.producer_id, topic=tp.topic, partition=tp.partition)
            self.producer_id = self.producer_epoch = -1
            return
        self.producer_epoch += 1
        self._event("ProducerEpochBumped", producer_id=self.producer_id, producer_epoch=self.producer_epoch,
                    topic=tp.topic, partition=tp.partition)

    def partition(self, tp: TopicPartition) -> PartitionSequences:
        ps = self.partitions.get(tp)
        if ps is None:
            ps = self.partitions[tp] = PartitionSequences(tp)
        return ps

    def _current(self, ps: PartitionSequences) -> bool:
        return ps.producer_id == self.producer_id and ps.producer_epoch == self.producer_epoch

    # ---- the drain gate and numbering --------------------------------------------------------

    def may_send(self, head: ProducerBatch, on_wire: int) -> bool:
        """May the first queued batch of its partition go now? ``on_wire``: the partition's
        batches in requests without an answer yet. May renumber the partition (a reset)."""
        if self.producer_id < 0:
            return False
        ps = self.partition(head.tp)
        if ps.reset_requested or not self._current(ps):
            if on_wire:
                return False  # every answer first: it may say a batch was written
            if not ps.unacked or ps.gap_confirmed or not ps.unacked[0].sequence_sent:
                return self._renumber(ps)
            return head is ps.unacked[0]  # may be written: retry it in its old identity first
        if head.base_sequence < 0 or not head.sequence_sent:
            return True
        return head is ps.unacked[0]

    @staticmethod
    def may_add(batch: ProducerBatch) -> bool:
        """May ``batch`` follow another batch of its partition in one request? Only if it was
        never sent with its sequence (a retry's original offsets must be one range)."""
        return batch.base_sequence < 0 or not batch.sequence_sent

    def _renumber(self, ps: PartitionSequences) -> bool:
        """Start the partition again at sequence 0 under the current (or a bumped) identity;
        every unacked batch is known not to be written. False while a new producer id is needed."""
        if ps.reset_requested and self._current(ps):
            self._bump_epoch(ps.tp)
        if self.producer_id < 0:
            return False
        sequence = 0
        for batch in ps.unacked:
            batch.set_producer_state(self.producer_id, self.producer_epoch, sequence)
            sequence = (sequence + batch.record_count) % SEQUENCE_MODULUS
        if ps.reset_requested or ps.unacked:
            self._event("PartitionSequencesReset", topic=ps.tp.topic, partition=ps.tp.partition,
                        producer_id=self.producer_id, producer_epoch=self.producer_epoch,
                        renumbered_batches=len(ps.unacked))
        ps.producer_id, ps.producer_epoch = self.producer_id, self.producer_epoch
        ps.next_sequence = sequence
        ps.last_acked_sequence = ps.last_acked_offset = -1
        ps.reset_requested = ps.gap_confirmed = False
        return True

    def on_send(self, batch: ProducerBatch) -> None:
        """The batch goes into a request now: number it if new (before its bytes are built)."""
        ps = self.partition(batch.tp)
        if batch.base_sequence < 0:
            # The partition's identity, not the producer's: another partition's reset may have
            # bumped the epoch between this batch's may_send and now (one drain checks every
            # partition first, then builds). The partition finishes its old identity in order.
            batch.set_producer_state(ps.producer_id, ps.producer_epoch, ps.next_sequence)
            ps.next_sequence = (ps.next_sequence + batch.record_count) % SEQUENCE_MODULUS
            ps.unacked.append(batch)
            batch.add_done_callback(self._on_done)
        batch.sequence_sent = True
        batch.sent_behind_unacked = ps.unacked[0] is not batch

    # ---- answers -----------------------------------------------------------------------------

    def on_error(self, batch: ProducerBatch, code: int) -> Decision | None:
        """A sequence error decides here; None: the sender's usual retry rules apply (same
        sequence), and a batch that fails anyway asks for a reset through its done-callback."""
        if code not in SEQUENCE_ERRORS or batch.base_sequence < 0:
            return None
        ps = self.partition(batch.tp)
        if code != ErrorCode.INVALID_PRODUCER_EPOCH and batch.sent_behind_unacked:
            return Decision.RETRY_NOW  # it overtook an earlier batch: again once that one is settled
        resetting = ps.reset_requested
        ps.reset_requested = ps.gap_confirmed = True
        if resetting:
            return Decision.RETRY_NOW  # not written, and renumbered by the reset under way
        if code == ErrorCode.UNKNOWN_PRODUCER_ID:
            return Decision.RETRY_NOW  # the broker forgot an idle producer: renumber and retry
        return Decision.FAIL

    def _on_done(self, batch: ProducerBatch) -> None:
        ps = self.partitions.get(batch.tp)
        if ps is None:
            return
        try:
            ps.unacked.remove(batch)
        except ValueError:
            pass
        if batch.producer_id != ps.producer_id or batch.producer_epoch != ps.producer_epoch:
            return  # numbered under an identity the partition has left
        if batch.error is None:
            ps.last_acked_sequence = (batch.base_sequence + batch.record_count - 1) % SEQUENCE_MODULUS
            if batch.base_offset >= 0:
                ps.last_acked_offset = batch.base_offset + batch.record_count - 1
        else:
            # A hole in the sequence (written or not, nobody knows): the next batches cannot follow it.
            ps.reset_requested = True

    def _event(self, name: str, **fields) -> None:
        self.events.append(TraceEvent(name, fields))

    def drain_events(self) -> list[TraceEvent]:
        events, self.events = self.events, []
        return events
