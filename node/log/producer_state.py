"""Per-partition state of idempotent producers (Kafka's ProducerStateManager), sans-IO.

For every producer id seen in a partition's log: its epoch and the sequence ranges and offsets
of its last ``RETAINED_RUNS`` runs. A run is one or more of the producer's batches that follow
each other both in sequence numbers and in offsets, with nothing else between them in the log
(Kafka keeps the last five *batches*; brokerlab merges back-to-back batches, because one
Produce request may carry several batches of a partition and they are appended together, so
a run covers at least one whole request and the retained window at least five of them).
Within a run, sequence deltas equal offset deltas, so a retried batch anywhere in it gets its
original offsets back.

The leader checks every batch of a produce before anything is appended
(``check_leader_append``), in Kafka's order:

- unknown producer: sequence 0 starts it; anything else -> UNKNOWN_PRODUCER_ID (the producer
  retries when it was reordered behind its first batch, or resets when retention removed its
  state; Kafka >= 2.5 accepts any sequence here, which only holds over an ordered connection);
- epoch older than the producer's -> INVALID_PRODUCER_EPOCH (a fenced producer);
- newer epoch -> must start at sequence 0, else OUT_OF_ORDER_SEQUENCE_NUMBER;
- same epoch: a batch inside a retained run is a duplicate and is answered with its original
  offsets (nothing appended); the next sequence (last + 1, modulo 2**31) is appended; a batch
  wholly before the retained runs -> DUPLICATE_SEQUENCE_NUMBER (benign: written long ago);
  anything else -> OUT_OF_ORDER_SEQUENCE_NUMBER (a gap).

Every append (leader, follower, recovery) then goes through ``append_batch``, which only
follows the log: the state is a pure function of the log's batches, so a follower, a restarted
broker and a new leader all end up with the same runs. Snapshots: producer_snapshot.py.
"""

from __future__ import annotations

from collections import deque
from typing import Iterable, NamedTuple

from brokerlab.errors import ErrorCode
from brokerlab.record_batch import BatchHeader
from node.log.errors import LogError

RETAINED_RUNS = 5  # Kafka's ProducerStateEntry.NUM_BATCHES_TO_RETAIN
SEQUENCE_MODULUS = 1 << 31  # sequences wrap after Int.MaxValue, as in Kafka
HALF_MODULUS = SEQUENCE_MODULUS // 2
# Kafka's producer.id.expiration.ms default: state of a producer silent this long is dropped
# when a snapshot is taken (KIP-360 keeps it past retention until then). "Silent" is measured
# in broker time (when its last batch was appended here), not in the batches' own timestamps.
PRODUCER_ID_EXPIRATION_MS = 24 * 3600 * 1000


class OutOfOrderSequenceError(LogError):
    error_code = ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER


class DuplicateSequenceError(LogError):
    """Written long ago (before the retained runs): the producer counts it as done."""

    error_code = ErrorCode.DUPLICATE_SEQUENCE_NUMBER


class InvalidProducerEpochError(LogError):
    error_code = ErrorCode.INVALID_PRODUCER_EPOCH


class UnknownProducerIdError(LogError):
    error_code = ErrorCode.UNKNOWN_PRODUCER_ID


class InvalidProducerBatchError(LogError):
    """A payload mixing duplicates with new batches (the producer sends retries alone)."""

    error_code = ErrorCode.INVALID_REQUEST


class Duplicate(NamedTuple):
    """Offsets of a produce whose batches were all written before."""

    first_offset: int
    last_offset: int


class Run:
    __slots__ = ("first_sequence", "last_sequence", "first_offset", "last_offset")

    def __init__(self, first_sequence: int, last_sequence: int, first_offset: int, last_offset: int) -> None:
        self.first_sequence = first_sequence
        self.last_sequence = last_sequence
        self.first_offset = first_offset
        self.last_offset = last_offset

    def __repr__(self) -> str:
        return (f"Run(seq {self.first_sequence}..{self.last_sequence}, "
                f"offsets {self.first_offset}..{self.last_offset})")

    def as_tuple(self) -> tuple[int, int, int, int]:
        return self.first_sequence, self.last_sequence, self.first_offset, self.last_offset

    def find(self, first_sequence: int, last_sequence: int) -> Duplicate | None:
        """The offsets of ``[first_sequence, last_sequence]`` if the run holds that range."""
        length = (self.last_sequence - self.first_sequence) % SEQUENCE_MODULUS
        start = (first_sequence - self.first_sequence) % SEQUENCE_MODULUS
        end = (last_sequence - self.first_sequence) % SEQUENCE_MODULUS
        if start <= end <= length:
            return Duplicate(self.first_offset + start, self.first_offset + end)
        return None


class ProducerStateEntry:
    __slots__ = ("producer_id", "producer_epoch", "runs", "last_timestamp_ms")

    def __init__(self, producer_id: int, producer_epoch: int, last_timestamp_ms: int = -1) -> None:
        self.producer_id = producer_id
        self.producer_epoch = producer_epoch
        self.runs: deque[Run] = deque(maxlen=RETAINED_RUNS)
        self.last_timestamp_ms = last_timestamp_ms

    def __repr__(self) -> str:
        return f"ProducerStateEntry(id={self.producer_id}, epoch={self.producer_epoch}, runs={list(self.runs)})"

    @property
    def last_sequence(self) -> int:
        return self.runs[-1].last_sequence if self.runs else -1

    @property
    def last_offset(self) -> int:
        return self.runs[-1].last_offset if self.runs else -1

    def find_duplicate(self, first_sequence: int, last_sequence: int) -> Duplicate | None:
        for run in self.runs:
            found = run.find(first_sequence, last_sequence)
            if found is not None:
                return found
        return None


def is_idempotent(headers: Iterable[BatchHeader]) -> bool:
    """Does any batch carry a producer id? (Only those touch producer state.)"""
    for header in headers:
        if header.producer_id >= 0:
            return True
    return False


class ProducerStateManager:
    def __init__(self, clock_ms: int = -1) -> None:
        self.producers: dict[int, ProducerStateEntry] = {}
        # Broker time of the latest append (a replay of the log stamps entries with it).
        self.clock_ms = clock_ms

    def __len__(self) -> int:
        return len(self.producers)

    def entry(self, producer_id: int) -> ProducerStateEntry | None:
        return self.producers.get(producer_id)

    def clear(self) -> None:
        self.producers.clear()

    # ------------------------------------------------------------------ the leader's checks

    def check_leader_append(self, headers: list[BatchHeader]) -> Duplicate | None:
        """Check a produce payload before it is appended; raises the error to answer with.

        Returns the original offsets when every batch was written before (nothing is to be
        appended), None when the batches are to be appended.
        """
        pending: dict[int, tuple[int, int]] = {}  # producer id -> (epoch, last sequence) after earlier batches
        duplicates: list[Duplicate] = []
        fresh = False
        for header in headers:
            producer_id = header.producer_id
            if producer_id < 0:
                fresh = True
                continue
            epoch, first = header.producer_epoch, header.base_sequence
            if epoch < 0 or first < 0:
                raise InvalidProducerBatchError(
                    f"producer {producer_id}: a batch with a producer id needs an epoch and a sequence")
            last = header.last_sequence
            entry = None
            if producer_id in pending:
                current_epoch, current_last = pending[producer_id]
            else:
                entry = self.producers.get(producer_id)
                current_epoch, current_last = (-1, -1) if entry is None else (entry.producer_epoch,
                                                                              entry.last_sequence)
            if current_epoch < 0:
                if first != 0:
                    raise UnknownProducerIdError(
                        f"producer {producer_id} has no state in this partition and sequence {first} is not 0")
            elif epoch < current_epoch:
                raise InvalidProducerEpochError(
                    f"producer {producer_id}: epoch {epoch} is older than the current {current_epoch}")
            elif epoch > current_epoch:
                if first != 0:
                    raise OutOfOrderSequenceError(
                        f"producer {producer_id}: new epoch {epoch} must start at sequence 0, not {first}")
            else:
                if entry is not None:
                    duplicate = entry.find_duplicate(first, last)
                    if duplicate is not None:
                        duplicates.append(duplicate)
                        continue
                if first != (current_last + 1) % SEQUENCE_MODULUS:
                    if entry is not None and 0 < (current_last - last) % SEQUENCE_MODULUS < HALF_MODULUS:
                        raise DuplicateSequenceError(
                            f"producer {producer_id}: sequences {first}..{last} were written before the "
                            f"last {RETAINED_RUNS} runs (last sequence {current_last})")
                    raise OutOfOrderSequenceError(
                        f"producer {producer_id} epoch {epoch}: sequence {first} does not follow "
                        f"{current_last}")
            pending[producer_id] = (epoch, last)
            fresh = True
        if not duplicates:
            return None
        contiguous = all(b.first_offset == a.last_offset + 1 for a, b in zip(duplicates, duplicates[1:]))
        if fresh or not contiguous:
            raise InvalidProducerBatchError(
                "a produce payload mixes batches written before with new ones (retry them alone)")
        return Duplicate(duplicates[0].first_offset, duplicates[-1].last_offset)

    # ------------------------------------------------------------------ following the log

    def append_batch(self, producer_id: int, producer_epoch: int, first_sequence: int, last_sequence: int,
                     first_offset: int, last_offset: int, timestamp_ms: int) -> None:
        """One batch written to the log (leader, follower or a replay of the log)."""
        entry = self.producers.get(producer_id)
        if entry is None:
            entry = self.producers[producer_id] = ProducerStateEntry(producer_id, producer_epoch)
        elif entry.producer_epoch != producer_epoch:
            entry.producer_epoch = producer_epoch  # the log says so, even a lower one (as Kafka's followers)
            entry.runs.clear()
        entry.last_timestamp_ms = max(entry.last_timestamp_ms, timestamp_ms)
        runs = entry.runs
        if runs:
            run = runs[-1]
            if (first_sequence == (run.last_sequence + 1) % SEQUENCE_MODULUS
                    and first_offset == run.last_offset + 1
                    and (last_sequence - run.first_sequence) % SEQUENCE_MODULUS == last_offset - run.first_offset):
                run.last_sequence, run.last_offset = last_sequence, last_offset
                return
        runs.append(Run(first_sequence, last_sequence, first_offset, last_offset))

    def append_headers(self, headers: Iterable[BatchHeader], first_offsets: Iterable[int] | None = None,
                       now_ms: int | None = None) -> int:
        """``append_batch`` for each idempotent batch; ``first_offsets`` when the headers do not
        carry their final offsets yet (the leader's append). Returns how many were applied."""
        if now_ms is not None:
            self.clock_ms = max(self.clock_ms, now_ms)
        applied = 0
        offsets = first_offsets if first_offsets is not None else (h.base_offset for h in headers)
        for header, first_offset in zip(headers, offsets):
            if header.producer_id < 0 or header.base_sequence < 0:
                continue
            self.append_batch(header.producer_id, header.producer_epoch, header.base_sequence,
                              header.last_sequence, first_offset, first_offset + header.last_offset_delta,
                              self.clock_ms)
            applied += 1
        return applied

    def remove_expired(self, now_ms: int, expiration_ms: int = PRODUCER_ID_EXPIRATION_MS) -> int:
        """Drop producers whose last batch is older than ``expiration_ms``; returns how many."""
        expired = [pid for pid, e in self.producers.items() if now_ms - e.last_timestamp_ms >= expiration_ms]
        for producer_id in expired:
            del self.producers[producer_id]
        return len(expired)
