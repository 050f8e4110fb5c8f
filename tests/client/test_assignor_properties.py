"""Property tests for every assignor (Hypothesis over members, subscriptions and topics).

- every partition of a subscribed topic has exactly one owner, and only subscribers own;
- balance within one partition (round-robin, sticky, cooperative-sticky: overall with equal
  subscriptions; range: per topic, which is what Kafka's range promises);
- sticky assignors move the minimum: with equal subscriptions exactly the partitions above their
  owner's share move; a re-run on its own output moves nothing; with unequal subscriptions no
  single move could improve the balance;
- cooperative-sticky never hands out a partition another member still owns, revokes only the
  partitions that move, and the follow-up rebalance completes the assignment without revoking.
"""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from brokerlab.ids import TopicPartition
from client.consumer.assignors import (
    CooperativeStickyAssignor,
    RangeAssignor,
    RoundRobinAssignor,
    StickyAssignor,
    Subscription,
    assignors,
    decode_subscription,
    encode_subscription,
    rebalance_protocol,
)
from client.consumer.assignors.base import RebalanceProtocol

ALL = [RangeAssignor(), RoundRobinAssignor(), StickyAssignor(), CooperativeStickyAssignor()]
TOPICS = ["a", "b", "c"]

topic_counts = st.dictionaries(st.sampled_from(TOPICS), st.integers(0, 12), min_size=1, max_size=3)
member_names = st.lists(st.text("abcdefgh", min_size=1, max_size=3), min_size=1, max_size=7, unique=True)


@st.composite
def groups(draw, homogeneous: bool | None = None):
    counts = draw(topic_counts)
    members = draw(member_names)
    topics = sorted(counts)
    same = draw(st.booleans()) if homogeneous is None else homogeneous
    if same:
        subscribed = tuple(draw(st.lists(st.sampled_from(topics), min_size=1, unique=True)))
        subs = {m: Subscription(tuple(sorted(subscribed))) for m in members}
    else:
        subs = {m: Subscription(tuple(sorted(draw(st.lists(st.sampled_from(topics), min_size=1, unique=True)))))
                for m in members}
    return counts, subs


def check_ownership(counts, subs, result) -> None:
    assert set(result) == set(subs)
    owners = Counter(tp for tps in result.values() for tp in tps)
    assert all(n == 1 for n in owners.values()), "a partition with two owners"
    wanted = {TopicPartition(t, p) for s in subs.values() for t in s.topics for p in range(counts.get(t, 0))}
    assert set(owners) == wanted
    for member, tps in result.items():
        assert all(tp.topic in subs[member].topics for tp in tps)


def spread(result) -> int:
    sizes = [len(tps) for tps in result.values()]
    return max(sizes) - min(sizes)


@settings(max_examples=200, deadline=None)
@given(groups())
def test_every_partition_has_exactly_one_owner(group):
    counts, subs = group
    for assignor in (RangeAssignor(), RoundRobinAssignor(), StickyAssignor()):
        check_ownership(counts, subs, assignor.assign(counts, subs))
    # cooperative with no previous owners hands everything out in one round
    check_ownership(counts, subs, CooperativeStickyAssignor().assign(counts, subs))


@settings(max_examples=200, deadline=None)
@given(groups(homogeneous=True))
def test_balanced_within_one_with_equal_subscriptions(group):
    counts, subs = group
    for assignor in (RoundRobinAssignor(), StickyAssignor(), CooperativeStickyAssignor()):
        assert spread(assignor.assign(counts, subs)) <= 1, assignor.name
    result = RangeAssignor().assign(counts, subs)
    for topic in next(iter(subs.values())).topics:
        sizes = [sum(1 for tp in tps if tp.topic == topic) for tps in result.values()]
        assert max(sizes) - min(sizes) <= 1


@settings(max_examples=100, deadline=None)
@given(groups())
def test_deterministic_whatever_the_member_order(group):
    counts, subs = group
    reordered = dict(reversed(list(subs.items())))
    for assignor in ALL:
        assert assignor.assign(counts, subs) == assignor.assign(counts, reordered)


@st.composite
def previous_and_current(draw, homogeneous: bool):
    """A previous assignment among old members, then a new membership (some stay, some come)."""
    counts, old_subs = draw(groups(homogeneous=homogeneous))
    previous = StickyAssignor().assign(counts, old_subs)
    stay = [m for m in old_subs if draw(st.booleans())]
    new = draw(st.lists(st.text("xyz", min_size=1, max_size=2), max_size=3, unique=True))
    members = stay + [m for m in new if m not in stay]
    if not members:
        members = list(old_subs)[:1]
    topics = next(iter(old_subs.values())).topics if homogeneous else None
    subs = {}
    for m in members:
        mine = topics or old_subs.get(m, Subscription(tuple(sorted(counts)))).topics
        subs[m] = Subscription(mine, owned_partitions=tuple(previous.get(m, ())), generation_id=1)
    return counts, subs, previous


def minimal_moves(counts, subs) -> int:
    """Equal subscriptions: the fewest owned partitions that must change owner."""
    members = list(subs)
    topics = next(iter(subs.values())).topics
    total = sum(counts.get(t, 0) for t in topics)
    floor, extra = divmod(total, len(members))
    kept = sorted((sum(1 for tp in subs[m].owned_partitions if tp.topic in topics and tp.partition < counts.get(tp.topic, 0))
                   for m in members), reverse=True)
    quotas = [floor + 1] * extra + [floor] * (len(members) - extra)
    return sum(max(0, k - q) for k, q in zip(kept, quotas))


def moved(subs, result) -> int:
    return sum(1 for m, s in subs.items() for tp in s.owned_partitions if tp not in result.get(m, ())
               and any(tp in tps for tps in result.values()))


@settings(max_examples=200, deadline=None)
@given(previous_and_current(homogeneous=True))
def test_sticky_moves_the_minimum_with_equal_subscriptions(case):
    counts, subs, _ = case
    result = StickyAssignor().assign(counts, subs)
    check_ownership(counts, subs, result)
    assert spread(result) <= 1
    assert moved(subs, result) == minimal_moves(counts, subs)


@settings(max_examples=150, deadline=None)
@given(previous_and_current(homogeneous=False))
def test_sticky_is_stable_and_locally_balanced(case):
    counts, subs, _ = case
    result = StickyAssignor().assign(counts, subs)
    check_ownership(counts, subs, result)
    for tps in result.values():
        for taker, mine in result.items():
            if len(tps) - len(mine) >= 2:
                assert not any(tp.topic in subs[taker].topics for tp in tps), "a move would improve the balance"
    again = {m: Subscription(s.topics, owned_partitions=tuple(result[m]), generation_id=2) for m, s in subs.items()}
    assert StickyAssignor().assign(counts, again) == result, "a re-run moves nothing"


@settings(max_examples=200, deadline=None)
@given(previous_and_current(homogeneous=True))
def test_cooperative_revokes_only_movers_and_completes_in_a_second_round(case):
    counts, subs, _ = case
    cooperative = CooperativeStickyAssignor()
    target = StickyAssignor().assign(counts, subs)
    first = cooperative.assign(counts, subs)
    owners = {tp: m for m, s in subs.items() for tp in s.owned_partitions}
    for member, tps in first.items():
        for tp in tps:
            assert owners.get(tp, member) == member, f"{tp} handed to {member} while {owners[tp]} owns it"
        revoked = set(subs[member].owned_partitions) - set(tps)
        valid = {tp for tp in revoked if tp.partition < counts.get(tp.topic, 0)}
        assert all(tp not in target[member] for tp in valid), "revoked a partition that does not move"
    # Round two: members own what round one gave them.
    second_subs = {m: Subscription(s.topics, owned_partitions=tuple(first[m]), generation_id=2) for m, s in subs.items()}
    second = cooperative.assign(counts, second_subs)
    check_ownership(counts, second_subs, second)
    assert spread(second) <= 1
    for member in second:
        assert set(first[member]) <= set(second[member]), "round two revoked something"


def test_cooperative_example_only_the_moving_partition_is_revoked():
    counts = {"t": 4}
    subs = {
        "a": Subscription(("t",), owned_partitions=(TopicPartition("t", 0), TopicPartition("t", 1)), generation_id=3),
        "b": Subscription(("t",), owned_partitions=(TopicPartition("t", 2), TopicPartition("t", 3)), generation_id=3),
        "c": Subscription(("t",)),
    }
    first = CooperativeStickyAssignor().assign(counts, subs)
    # a gives up t-1 (the only mover); b keeps both; c waits for round two.
    assert first == {"a": [TopicPartition("t", 0)], "b": [TopicPartition("t", 2), TopicPartition("t", 3)], "c": []}
    subs2 = {m: Subscription(("t",), owned_partitions=tuple(first[m]), generation_id=4) for m in subs}
    assert CooperativeStickyAssignor().assign(counts, subs2)["c"] == [TopicPartition("t", 1)]


def test_range_and_roundrobin_match_kafka_examples():
    # Kafka's RangeAssignor javadoc: C0, C1 on t0, t1 with 3 partitions each.
    subs = {"C0": Subscription(("t0", "t1")), "C1": Subscription(("t0", "t1"))}
    counts = {"t0": 3, "t1": 3}
    assert RangeAssignor().assign(counts, subs) == {
        "C0": [TopicPartition("t0", 0), TopicPartition("t0", 1), TopicPartition("t1", 0), TopicPartition("t1", 1)],
        "C1": [TopicPartition("t0", 2), TopicPartition("t1", 2)]}
    assert RoundRobinAssignor().assign(counts, subs) == {
        "C0": [TopicPartition("t0", 0), TopicPartition("t0", 2), TopicPartition("t1", 1)],
        "C1": [TopicPartition("t0", 1), TopicPartition("t1", 0), TopicPartition("t1", 2)]}


def test_negotiation_helpers():
    default = assignors("range,cooperative-sticky")
    assert [a.name for a in default] == ["range", "cooperative-sticky"]
    assert rebalance_protocol(default) is RebalanceProtocol.EAGER
    assert rebalance_protocol(assignors(["cooperative-sticky"])) is RebalanceProtocol.COOPERATIVE
    sub = Subscription(("a", "b"), b"x", (TopicPartition("a", 1),), 7, "r1")
    assert decode_subscription(encode_subscription(sub)) == sub
