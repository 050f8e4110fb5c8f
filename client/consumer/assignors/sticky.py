"""Kafka's StickyAssignor (eager) and CooperativeStickyAssignor (KIP-54, KIP-429).

Both compute the same assignment: as balanced as the subscriptions allow, moving as few
partitions as possible from their current owners.

1. Claims: what each member owned (cooperative: ``owned_partitions``; eager: the previous
   assignment it carries in its user data, since it revoked everything before joining). When
   members claim one partition, the higher generation wins; a tie voids the claim.
2. Every member keeps its claimed partitions that still exist and that it still subscribes to.
3. Unowned partitions go, most constrained first, to the subscriber with the fewest partitions.
4. While some member has at least two more partitions than another member that could take one
   of them, one partition moves (preferring partitions the giver did not own before). Each move
   lowers the sum of squared counts, so this ends; with equal subscriptions it ends balanced
   within one, having moved only partitions above their owner's share.

Cooperative: a partition whose new owner differs from a current owner that is still in the group
is left out of this round's assignment. Its owner sees it missing, revokes it and rejoins, and
the next rebalance (where it is unowned) assigns it. Nothing is ever owned by two members.
"""

from __future__ import annotations

from typing import Iterable, Mapping

from brokerlab.ids import TopicPartition
from client.consumer.assignors.base import (
    Assignment,
    RebalanceProtocol,
    Subscription,
    all_partitions,
    decode_sticky_user_data,
    encode_sticky_user_data,
    member_order,
)


def claims_of(subscriptions: Mapping[str, Subscription]) -> tuple[dict[TopicPartition, str], set[TopicPartition]]:
    """(partition -> its one valid claimant, partitions claimed by several of the top generation)."""
    best: dict[TopicPartition, tuple[int, list[str]]] = {}
    for member in sorted(subscriptions):
        subscription = subscriptions[member]
        owned, generation = subscription.owned_partitions, subscription.generation_id
        if not owned and subscription.user_data:
            owned, previous_generation = decode_sticky_user_data(subscription.user_data)
            generation = max(generation, previous_generation)
        for tp in set(owned):
            top, members = best.get(tp, (-2, []))
            if generation > top:
                best[tp] = (generation, [member])
            elif generation == top:
                members.append(member)
    claims = {tp: members[0] for tp, (_, members) in best.items() if len(members) == 1}
    contested = {tp for tp, (_, members) in best.items() if len(members) > 1}
    return claims, contested


def sticky_assign(partitions_per_topic: Mapping[str, int], subscriptions: Mapping[str, Subscription],
                  cooperative: bool) -> Assignment:
    order = member_order(subscriptions)
    rank = {m: i for i, m in enumerate(order)}
    topics_of = {m: set(subscriptions[m].topics) for m in order}
    partitions = all_partitions(partitions_per_topic, (t for m in order for t in topics_of[m]))
    consumers = {tp: [m for m in order if tp.topic in topics_of[m]] for tp in partitions}
    claims, contested = claims_of(subscriptions)
    out: Assignment = {m: [] for m in order}
    kept: set[TopicPartition] = set()
    for tp in partitions:
        owner = claims.get(tp)
        if owner is not None and tp.topic in topics_of[owner]:
            out[owner].append(tp)
            kept.add(tp)
    unassigned = sorted((tp for tp in partitions if tp not in kept and consumers[tp]),
                        key=lambda tp: (len(consumers[tp]), tp))
    for tp in unassigned:
        member = min(consumers[tp], key=lambda m: (len(out[m]), rank[m]))
        out[member].append(tp)
    while True:
        move = _next_move(out, order, rank, topics_of, claims)
        if move is None:
            break
        tp, giver, taker = move
        out[giver].remove(tp)
        out[taker].append(tp)
    if cooperative:
        def withheld(tp: TopicPartition, member: str) -> bool:
            owner = claims.get(tp)
            return tp in contested or (owner is not None and owner != member and owner in out)

        for member in order:
            out[member] = [tp for tp in out[member] if not withheld(tp, member)]
    return {m: sorted(tps) for m, tps in out.items()}


def _next_move(out: Assignment, order: list[str], rank: dict[str, int], topics_of: dict[str, set[str]],
               claims: dict[TopicPartition, str]) -> tuple[TopicPartition, str, str] | None:
    givers = sorted(order, key=lambda m: (-len(out[m]), rank[m]))
    takers = sorted(order, key=lambda m: (len(out[m]), rank[m]))
    for giver in givers:
        for taker in takers:
            if len(out[giver]) - len(out[taker]) < 2:
                break  # takers only get fuller from here
            # Newly placed partitions first, then the highest: a giver keeps its lowest ones.
            for tp in sorted(sorted(out[giver], reverse=True), key=lambda tp: claims.get(tp) == giver):
                if tp.topic in topics_of[taker]:
                    return tp, giver, taker
    return None


class StickyAssignor:
    name = "sticky"
    supported_protocols = (RebalanceProtocol.EAGER,)

    def user_data(self, assigned: Iterable[TopicPartition], generation_id: int) -> bytes:
        return encode_sticky_user_data(assigned, generation_id)

    def assign(self, partitions_per_topic: Mapping[str, int], subscriptions: Mapping[str, Subscription]) -> Assignment:
        return sticky_assign(partitions_per_topic, subscriptions, cooperative=False)


class CooperativeStickyAssignor:
    name = "cooperative-sticky"
    # Kafka lists both: a group may move from eager to cooperative with a rolling upgrade.
    supported_protocols = (RebalanceProtocol.COOPERATIVE, RebalanceProtocol.EAGER)

    def user_data(self, assigned: Iterable[TopicPartition], generation_id: int) -> bytes:
        return b""  # the generation travels in the subscription itself

    def assign(self, partitions_per_topic: Mapping[str, int], subscriptions: Mapping[str, Subscription]) -> Assignment:
        return sticky_assign(partitions_per_topic, subscriptions, cooperative=True)
