"""Choosing a partition for a record (sans-IO).

Order of precedence, as in Kafka's producer: an explicit partition, else the murmur2 hash of
the serialized key over *all* partitions (so keys map exactly as Kafka's default partitioner
maps them), else the built-in sticky partitioner for keyless records. ``round_robin`` is
Kafka's ``RoundRobinPartitioner``: every record without an explicit partition, keyed or not,
goes to the next available partition.

Randomness comes in as an injected ``random.Random``-like object.
"""

from __future__ import annotations

import struct
from typing import Sequence

from brokerlab.sansio import Random

_M = 0x5BD1E995
_SEED = 0x9747B28C
_MASK32 = 0xFFFFFFFF


_UNPACKERS: dict = {}


def murmur2(data: bytes) -> int:
    """Kafka's ``Utils.murmur2``: 32-bit MurmurHash2, seed 0x9747b28c, as a signed Java int.

    Java does this in wrapping signed 32-bit arithmetic with ``>>>`` (logical) shifts; doing it
    on unsigned values masked to 32 bits gives the same bit pattern, converted at the end.
    (``h*m ^ k*m`` is masked once: the low 32 bits of a xor are the xor of the low 32 bits.)
    """
    length = len(data)
    h = _SEED ^ length
    words = length >> 2
    if words:
        unpack = _UNPACKERS.get(words)
        if unpack is None:
            unpack = struct.Struct(f"<{words}I").unpack_from
            if words <= 64:  # keys up to 256 bytes: keep one unpacker per length
                _UNPACKERS[words] = unpack
        for k in unpack(data):
            k = (k * _M) & _MASK32
            k ^= k >> 24
            h = ((h * _M) ^ (k * _M)) & _MASK32
    tail = length & 3
    if tail:
        whole = length - tail
        if tail == 3:
            h ^= data[whole + 2] << 16
        if tail >= 2:
            h ^= data[whole + 1] << 8
        h = ((h ^ data[whole]) * _M) & _MASK32
    h ^= h >> 13
    h = (h * _M) & _MASK32
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def to_positive(number: int) -> int:
    """Kafka's ``Utils.toPositive``: clear the sign bit (not abs: MIN_VALUE maps to 0)."""
    return number & 0x7FFFFFFF


def partition_for_key(key: bytes, num_partitions: int) -> int:
    """Kafka's keyed partitioning: ``toPositive(murmur2(key)) % numPartitions``."""
    return to_positive(murmur2(key)) % num_partitions


class _StickyState:
    __slots__ = ("partition", "start_bytes")

    def __init__(self, partition: int, start_bytes: int) -> None:
        self.partition = partition
        self.start_bytes = start_bytes


class StickyPartitioner:
    """Kafka 3.x's built-in partitioner for keyless records (KIP-794), without adaptive weights.

    Records of a topic stick to one partition. The producer asks :meth:`on_new_batch` whenever
    the next keyless record would open a new batch on that partition (its last batch is full or
    has been sent); the partitioner switches once at least ``batch_size`` bytes went to the
    current partition, so a slow trickle with linger-sent small batches still fills about one
    batch's worth per partition before moving on. The new partition is drawn at random among the
    partitions that have a leader (all partitions when none has), never the one just left when
    there is a choice.
    """

    def __init__(self, batch_size: int, random: Random) -> None:
        self.batch_size = batch_size
        self._random = random
        self._sticky: dict[str, _StickyState] = {}

    def partition(self, topic: str, num_partitions: int, available: Sequence[int]) -> int:
        """The topic's current sticky partition (chosen on first use)."""
        state = self._sticky.get(topic)
        if state is None or state.partition >= num_partitions:
            state = self._sticky[topic] = _StickyState(
                self._choose(num_partitions, available, -1), -1
            )
        return state.partition

    def on_new_batch(
        self, topic: str, partition: int, appended_bytes: int, num_partitions: int, available: Sequence[int]
    ) -> int:
        """The partition the record that needs a new batch should go to.

        ``appended_bytes`` is the running total of bytes appended to ``partition`` (the
        accumulator keeps it); the partitioner remembers it when it picks a partition, so the
        difference is what went there since.
        """
        state = self._sticky.get(topic)
        if state is None or state.partition != partition:
            return partition  # not the sticky partition (explicit/keyed), nothing to decide
        if state.start_bytes < 0:
            # The first new batch on a fresh choice: count from here.
            state.start_bytes = appended_bytes
            return partition
        if appended_bytes - state.start_bytes < self.batch_size:
            return partition
        state.partition = self._choose(num_partitions, available, partition)
        state.start_bytes = -1
        return state.partition

    def _choose(self, num_partitions: int, available: Sequence[int], previous: int) -> int:
        candidates = available if available else range(num_partitions)
        count = len(candidates)
        if count == 1:
            return candidates[0]
        if previous < 0 or previous not in candidates:
            return candidates[self._random.randrange(count)]
        # Uniform over the others: draw from count-1 slots, skipping the previous partition.
        index = self._random.randrange(count - 1)
        choice = candidates[index]
        return candidates[count - 1] if choice == previous else choice


class RoundRobinPartitioner:
    """Kafka's ``RoundRobinPartitioner``: the next available partition, per topic, keys ignored."""

    def __init__(self) -> None:
        self._counters: dict[str, int] = {}

    def partition(self, topic: str, num_partitions: int, available: Sequence[int]) -> int:
        counter = self._counters.get(topic, 0)
        self._counters[topic] = (counter + 1) & 0x7FFFFFFF
        if available:
            return available[counter % len(available)]
        return counter % num_partitions
