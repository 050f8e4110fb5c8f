"""Partitioner: Kafka's murmur2 (reference vectors), keyed stability, sticky and round robin."""

from __future__ import annotations

import random
from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from client.producer.partitioner import (
    RoundRobinPartitioner,
    StickyPartitioner,
    murmur2,
    partition_for_key,
    to_positive,
)

# Kafka's UtilsTest.testMurmur2: input bytes -> Utils.murmur2 as a signed Java int.
KAFKA_MURMUR2_VECTORS = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    bytes([ord("a"), ord("b"), ord("c")]): 479470107,
}


def test_murmur2_matches_kafka_reference_vectors() -> None:
    for data, expected in KAFKA_MURMUR2_VECTORS.items():
        assert murmur2(data) == expected, data


def _int32(x: int) -> int:
    x &= 0xFFFFFFFF
    return x - (1 << 32) if x >= 1 << 31 else x


def _java_murmur2(data: bytes) -> int:
    """Literal transcription of the Java algorithm in signed-int arithmetic, for the property."""
    length = len(data)
    m = _int32(0x5BD1E995)
    h = _int32(_int32(0x9747B28C) ^ length)

    def ushr(x: int, n: int) -> int:  # Java's >>> on an int
        return (x & 0xFFFFFFFF) >> n

    for i in range(length // 4):
        i4 = i * 4
        k = _int32(data[i4] + (data[i4 + 1] << 8) + (data[i4 + 2] << 16) + (data[i4 + 3] << 24))
        k = _int32(k * m)
        k = _int32(k ^ ushr(k, 24))
        k = _int32(k * m)
        h = _int32(h * m)
        h = _int32(h ^ k)
    rest = length % 4
    base = length & ~3
    if rest >= 3:
        h = _int32(h ^ (data[base + 2] << 16))
    if rest >= 2:
        h = _int32(h ^ (data[base + 1] << 8))
    if rest >= 1:
        h = _int32(h ^ data[base])
        h = _int32(h * m)
    h = _int32(h ^ ushr(h, 13))
    h = _int32(h * m)
    h = _int32(h ^ ushr(h, 15))
    return h


@given(st.binary(max_size=64))
def test_murmur2_equals_java_signed_arithmetic_for_every_tail_length(data: bytes) -> None:
    assert murmur2(data) == _java_murmur2(data)
    assert -(1 << 31) <= murmur2(data) < (1 << 31)


def test_to_positive_clears_the_sign_bit_like_kafka() -> None:
    assert to_positive(-(1 << 31)) == 0  # not abs(): Integer.MIN_VALUE maps to 0
    assert to_positive(-1) == 0x7FFFFFFF
    assert to_positive(10) == 10


def test_partition_for_key_is_to_positive_murmur2_mod_partitions() -> None:
    # foobar -> -790332482 -> & 0x7fffffff = 1357151166 -> % 50 = 16
    assert partition_for_key(b"foobar", 50) == 16
    for data, expected in KAFKA_MURMUR2_VECTORS.items():
        for n in (1, 3, 6, 7, 100):
            assert partition_for_key(data, n) == (expected & 0x7FFFFFFF) % n


def test_keyed_partitioning_is_stable_and_spreads() -> None:
    keys = [f"user-{i}".encode() for i in range(6000)]
    first = [partition_for_key(k, 6) for k in keys]
    assert first == [partition_for_key(k, 6) for k in keys]
    counts = Counter(first)
    assert set(counts) == set(range(6))
    assert min(counts.values()) > 800  # ~1000 each


def test_sticky_stays_until_a_batch_worth_then_switches_to_another_available_partition() -> None:
    sticky = StickyPartitioner(batch_size=1000, random=random.Random(7))
    available = (0, 1, 2, 3)
    p = sticky.partition("t", 4, available)
    assert p in available
    assert all(sticky.partition("t", 4, available) == p for _ in range(10))
    # First new batch on a fresh choice: start counting, stay.
    assert sticky.on_new_batch("t", p, 0, 4, available) == p
    # Less than batch_size bytes went there since: stay (linger-sent small batches).
    assert sticky.on_new_batch("t", p, 400, 4, available) == p
    # A batch worth went there: switch, never to the same partition.
    q = sticky.on_new_batch("t", p, 1000, 4, available)
    assert q != p and q in available
    assert sticky.partition("t", 4, available) == q


def test_sticky_ignores_new_batches_of_other_partitions_and_keeps_topics_apart() -> None:
    sticky = StickyPartitioner(batch_size=10, random=random.Random(1))
    p = sticky.partition("a", 3, (0, 1, 2))
    other = (p + 1) % 3
    assert sticky.on_new_batch("a", other, 10_000, 3, (0, 1, 2)) == other
    assert sticky.partition("a", 3, (0, 1, 2)) == p
    sticky.partition("b", 3, (0, 1, 2))
    sticky.on_new_batch("b", sticky.partition("b", 3, (0, 1, 2)), 0, 3, (0, 1, 2))
    assert sticky.partition("a", 3, (0, 1, 2)) == p


def test_sticky_switching_covers_partitions_uniformly_and_only_available_ones() -> None:
    sticky = StickyPartitioner(batch_size=1, random=random.Random(3))
    available = (1, 3, 4)
    seen = Counter()
    appended = 0
    p = sticky.partition("t", 6, available)
    for _ in range(3000):
        p = sticky.on_new_batch("t", p, appended, 6, available)
        appended += 10
        seen[p] += 1
    assert set(seen) == set(available)
    assert min(seen.values()) > 800


def test_sticky_with_one_partition_or_no_leaders() -> None:
    sticky = StickyPartitioner(batch_size=1, random=random.Random(3))
    assert sticky.partition("one", 1, (0,)) == 0
    sticky.on_new_batch("one", 0, 0, 1, (0,))
    assert sticky.on_new_batch("one", 0, 100, 1, (0,)) == 0
    # No partition has a leader: fall back to all partitions (the batch waits for one).
    assert sticky.partition("none", 3, ()) in (0, 1, 2)


def test_round_robin_cycles_over_available_partitions() -> None:
    rr = RoundRobinPartitioner()
    assert [rr.partition("t", 4, (0, 1, 2, 3)) for _ in range(6)] == [0, 1, 2, 3, 0, 1]
    assert [rr.partition("u", 5, (1, 4)) for _ in range(4)] == [1, 4, 1, 4]
    assert [rr.partition("v", 3, ()) for _ in range(4)] == [0, 1, 2, 0]
