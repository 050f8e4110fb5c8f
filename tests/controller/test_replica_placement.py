"""Replica placement: balance of preferred leaders and replicas, rack spread, determinism, validation."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from brokerlab.errors import ErrorCode, KafkaError
from controller.placement import (
    _partial_round,
    place_replicas,
    rack_alternated,
    rack_unaware,
    validate_manual_assignment,
)


def no_racks(count: int, first_id: int = 1) -> list[tuple[int, str]]:
    return [(first_id + i, "") for i in range(count)]


def spread(counts: Counter, broker_ids) -> int:
    values = [counts.get(b, 0) for b in broker_ids]
    return max(values) - min(values)


def assert_valid(assignment, num_partitions, replication_factor, broker_ids):
    assert len(assignment) == num_partitions
    for replicas in assignment:
        assert len(replicas) == replication_factor
        assert len(set(replicas)) == replication_factor
        assert set(replicas) <= set(broker_ids)


def test_kafka_layout_for_full_rounds():
    # Kafka's AdminUtils example: 5 brokers, 10 partitions, RF 3, start index 0, shift 0.
    assignment = rack_unaware([0, 1, 2, 3, 4], 10, 3, start_index=0, shift=0)
    assert assignment == [
        [0, 1, 2], [1, 2, 3], [2, 3, 4], [3, 4, 0], [4, 0, 1],
        [0, 2, 3], [1, 3, 4], [2, 4, 0], [3, 0, 1], [4, 1, 2],
    ]


def test_partial_round_stays_within_one_where_kafka_would_not():
    # Kafka puts 6 brokers / 2 partitions / RF 3 as {0,1,2},{1,2,3}: broker 1 and 2 hold two, 4 and 5 none.
    assignment = rack_unaware(list(range(6)), 2, 3, start_index=0, shift=0)
    counts = Counter(b for replicas in assignment for b in replicas)
    assert [replicas[0] for replicas in assignment] == [0, 1]
    assert spread(counts, range(6)) <= 1


def test_deterministic_for_a_seed():
    brokers = no_racks(5)
    first = place_replicas(brokers, 12, 3, random.Random(42))
    assert place_replicas(brokers, 12, 3, random.Random(42)) == first
    others = {str(place_replicas(brokers, 12, 3, random.Random(seed))) for seed in range(10)}
    assert len(others) > 1  # the seed matters


def test_three_brokers_six_partitions_rf3():
    assignment = place_replicas(no_racks(3), 6, 3, random.Random(7))
    assert_valid(assignment, 6, 3, [1, 2, 3])
    leaders = Counter(replicas[0] for replicas in assignment)
    assert sorted(leaders.values()) == [2, 2, 2]


@settings(max_examples=300, deadline=None)
@given(
    broker_count=st.integers(1, 12),
    num_partitions=st.integers(1, 60),
    data=st.data(),
    seed=st.integers(0, 2**32),
)
def test_rack_unaware_balance(broker_count, num_partitions, data, seed):
    replication_factor = data.draw(st.integers(1, broker_count), label="replication_factor")
    brokers = no_racks(broker_count, first_id=data.draw(st.integers(0, 100), label="first_id"))
    ids = [b for b, _ in brokers]
    assignment = place_replicas(brokers, num_partitions, replication_factor, random.Random(seed))
    assert_valid(assignment, num_partitions, replication_factor, ids)
    leaders = Counter(replicas[0] for replicas in assignment)
    replicas = Counter(b for rs in assignment for b in rs)
    assert spread(leaders, ids) <= 1
    assert spread(replicas, ids) <= 1


def test_partial_round_exhaustive_small_clusters():
    """The least-slack follower choice never needs its fallback and always balances within one."""
    for count in range(2, 17):
        for replication_factor in range(1, count + 1):
            for rows in range(1, count):
                for shift in range(count - 1):
                    result = _partial_round(count, rows, replication_factor, 0, shift)
                    total = Counter(i for replicas in result for i in replicas)
                    assert spread(total, range(count)) <= 1, (count, replication_factor, rows, shift)
                    assert all(len(set(r)) == replication_factor for r in result)


def test_rack_alternated_list_is_kafkas():
    brokers = [(0, "rack1"), (1, "rack3"), (2, "rack3"), (3, "rack2"), (4, "rack2"), (5, "rack1")]
    assert rack_alternated(brokers) == [0, 3, 1, 5, 4, 2]


@settings(max_examples=200, deadline=None)
@given(
    rack_sizes=st.lists(st.integers(1, 4), min_size=2, max_size=4),
    num_partitions=st.integers(1, 40),
    data=st.data(),
    seed=st.integers(0, 2**32),
)
def test_rack_aware_spread(rack_sizes, num_partitions, data, seed):
    brokers = []
    for rack_index, size in enumerate(rack_sizes):
        for _ in range(size):
            brokers.append((len(brokers) + 1, f"rack-{rack_index}"))
    replication_factor = data.draw(st.integers(1, len(brokers)), label="replication_factor")
    assignment = place_replicas(brokers, num_partitions, replication_factor, random.Random(seed))
    ids = [b for b, _ in brokers]
    assert_valid(assignment, num_partitions, replication_factor, ids)
    rack_of = dict(brokers)
    for replicas in assignment:
        assert len({rack_of[b] for b in replicas}) == min(replication_factor, len(rack_sizes))
    assert spread(Counter(r[0] for r in assignment), ids) <= 1
    if len(set(rack_sizes)) == 1 and num_partitions % len(brokers) == 0:
        # Equal racks and full rounds: every broker holds the same number of replicas.
        assert spread(Counter(b for rs in assignment for b in rs), ids) == 0


def test_brokers_without_rack_share_one_when_others_have_racks():
    brokers = [(1, "a"), (2, "a"), (3, ""), (4, "")]
    assignment = place_replicas(brokers, 4, 2, random.Random(1))
    rack_of = dict(brokers)
    for replicas in assignment:
        assert len({rack_of[b] for b in replicas}) == 2


@pytest.mark.parametrize(
    "partitions, replication_factor, brokers, code",
    [
        (0, 1, 3, ErrorCode.INVALID_PARTITIONS),
        (-5, 1, 3, ErrorCode.INVALID_PARTITIONS),
        (100_001, 1, 3, ErrorCode.INVALID_PARTITIONS),
        (1, 0, 3, ErrorCode.INVALID_REPLICATION_FACTOR),
        (1, 4, 3, ErrorCode.INVALID_REPLICATION_FACTOR),
        (1, 1, 0, ErrorCode.INVALID_REPLICATION_FACTOR),
    ],
)
def test_count_validation(partitions, replication_factor, brokers, code):
    with pytest.raises(KafkaError) as info:
        place_replicas(no_racks(brokers), partitions, replication_factor, random.Random(0))
    assert info.value.code == code


def test_replication_factor_message_names_the_live_brokers():
    with pytest.raises(KafkaError, match="only 2 broker"):
        place_replicas(no_racks(2), 1, 3, random.Random(0))


@pytest.mark.parametrize(
    "assignments, match",
    [
        ([(0, [1, 2]), (0, [2, 3])], "more than once"),
        ([(0, [1, 2]), (2, [2, 3])], "consecutive"),
        ([(1, [1, 2])], "consecutive"),
        ([(0, [])], "empty replica list"),
        ([(0, [1, 1])], "broker 1 more than once"),
        ([(0, [1, 9])], "broker 9, but no such broker"),
        ([(0, [1, 2]), (1, [3])], "not consistent"),
    ],
)
def test_manual_assignment_validation(assignments, match):
    with pytest.raises(KafkaError, match=match) as info:
        validate_manual_assignment(assignments, {1, 2, 3})
    assert info.value.code == ErrorCode.INVALID_REPLICA_ASSIGNMENT


def test_manual_assignment_in_any_order():
    assert validate_manual_assignment([(1, [2, 3]), (0, [3, 1])], {1, 2, 3}) == [[3, 1], [2, 3]]
