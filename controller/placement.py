"""Replica placement: which brokers hold each partition of a new topic, the first one leading.

Pure and deterministic for a given random source. Two variants, as in Kafka's AdminUtils:

* rack-unaware (no broker has a rack): a random start index puts partition p's first replica
  (its preferred leader) on broker ``(start + p) % n``, so preferred leaders go round-robin;
  follower j sits at a shift ``1 + (shift + j) % (n - 1)`` from it, and the shift grows by one
  after every full round of n partitions, so followers do not always trail the same leader.
  Every full round gives each broker exactly ``replication_factor`` replicas. Kafka places the
  last, partial round the same way, which can leave one broker with two replicas more than
  another (6 brokers, 2 partitions, RF 3: {0,1,2}, {1,2,3}). brokerlab keeps Kafka's leaders for
  that round but picks followers so every broker ends within one replica of every other (see
  ``_partial_round``); when partitions are a multiple of brokers the result is exactly Kafka's.
* rack-aware (some broker has a rack; brokers without one share the rack ""): Kafka's
  algorithm over a rack-alternated broker list, skipping a candidate while a rack without a
  replica, or a broker without one, remains. Preferred leaders still go round-robin and every
  partition spans min(replication_factor, racks) racks.
"""

from __future__ import annotations

from typing import Collection, Sequence

from brokerlab.errors import ErrorCode, KafkaError
from brokerlab.sansio import Random

# brokerlab's guard against a request that would make the controller and brokers build an
# absurd number of partitions at once (Kafka only has quotas for this).
MAX_PARTITIONS_PER_TOPIC = 10_000


def check_counts(num_partitions: int, replication_factor: int, live_brokers: int) -> None:
    """Kafka's checks on a requested partition count and replication factor."""
    if num_partitions <= 0:
        raise KafkaError(ErrorCode.INVALID_PARTITIONS, "Number of partitions was set to an invalid non-positive value.")
    if num_partitions > MAX_PARTITIONS_PER_TOPIC:
        raise KafkaError(
            ErrorCode.INVALID_PARTITIONS,
            f"Number of partitions {num_partitions} exceeds the limit of {MAX_PARTITIONS_PER_TOPIC} per topic.",
        )
    if replication_factor <= 0:
        raise KafkaError(
            ErrorCode.INVALID_REPLICATION_FACTOR,
            "Replication factor must be larger than 0, or -1 to use the default value.",
        )
    if replication_factor > live_brokers:
        raise KafkaError(
            ErrorCode.INVALID_REPLICATION_FACTOR,
            f"Unable to replicate the partition {replication_factor} time(s): The target replication factor "
            f"of {replication_factor} cannot be reached because only {live_brokers} broker(s) are registered.",
        )


def place_replicas(
    brokers: Sequence[tuple[int, str]], num_partitions: int, replication_factor: int, random: Random
) -> list[list[int]]:
    """Replica lists (preferred leader first) for partitions 0..num_partitions-1.

    ``brokers`` are the live (unfenced) brokers as ``(broker_id, rack)``, rack "" when unknown.
    Raises KafkaError(INVALID_PARTITIONS / INVALID_REPLICATION_FACTOR).
    """
    check_counts(num_partitions, replication_factor, len(brokers))
    count = len(brokers)
    start_index = random.randrange(count)
    replica_shift = random.randrange(count)
    if any(rack for _, rack in brokers):
        return rack_aware(brokers, num_partitions, replication_factor, start_index, replica_shift)
    ids = sorted(broker_id for broker_id, _ in brokers)
    return rack_unaware(ids, num_partitions, replication_factor, start_index, replica_shift)


def _replica_index(first_index: int, shift: int, j: int, count: int) -> int:
    """Kafka's AdminUtils.replicaIndex: the j-th follower position after the first replica."""
    return (first_index + 1 + (shift + j) % (count - 1)) % count


def rack_unaware(ids: Sequence[int], num_partitions: int, replication_factor: int, start_index: int, shift: int) -> list[list[int]]:
    count = len(ids)
    full_rounds_end = num_partitions - num_partitions % count
    assignment: list[list[int]] = []
    for partition in range(num_partitions):
        if partition > 0 and partition % count == 0:
            shift += 1
        if partition == full_rounds_end:
            break
        first = (partition + start_index) % count
        followers = [_replica_index(first, shift, j, count) for j in range(replication_factor - 1)]
        assignment.append([ids[first]] + [ids[index] for index in followers])
    remaining = num_partitions - full_rounds_end
    if remaining:
        for replicas in _partial_round(count, remaining, replication_factor, start_index, shift):
            assignment.append([ids[index] for index in replicas])
    return assignment


def _partial_round(count: int, rows: int, replication_factor: int, start_index: int, shift: int) -> list[list[int]]:
    """The last ``rows`` (< count) partitions, as broker indexes.

    Leaders stay Kafka's (consecutive from ``start_index``). The round's ``rows * rf`` replicas
    are spread as evenly as possible: broker k places from the round's first leader gets
    ``floor`` or ``ceil`` of ``rows * rf / count``, leaders counted first, so each broker has a
    follower demand. Each partition then takes the followers with the least slack (rows still
    able to take that broker minus its remaining demand), ties in Kafka's shift order. Least
    slack first never strands demand on a broker that only its own partition could have taken
    (checked exhaustively up to 24 brokers in the tests); should it ever fall short, the rest of
    that partition falls back to Kafka's order.
    """
    total = rows * replication_factor
    base, extra = divmod(total, count)
    demand = [0] * count
    for k in range(count):
        index = (start_index + k) % count
        demand[index] = base + (1 if k < extra else 0) - (1 if k < rows else 0)
    def slack(index: int, row: int) -> int:
        # Rows from ``row`` on that may still take ``index`` (not the one it leads) minus its demand.
        leads_later_row = row <= (index - start_index) % count < rows
        return (rows - row) - (1 if leads_later_row else 0) - demand[index]

    out: list[list[int]] = []
    for row in range(rows):
        leader = (start_index + row) % count
        order = [_replica_index(leader, shift, j, count) for j in range(count - 1)]
        candidates = [index for index in order if demand[index] > 0]
        wanted = sorted(candidates, key=lambda index: slack(index, row))[: replication_factor - 1]
        for index in order:  # fallback, never needed in practice (see above)
            if len(wanted) >= replication_factor - 1:
                break
            if index not in wanted:
                wanted.append(index)
        for index in wanted:
            demand[index] -= 1
        out.append([leader] + wanted)
    return out


def rack_alternated(brokers: Sequence[tuple[int, str]]) -> list[int]:
    """Kafka's getRackAlternatedBrokerList: racks in name order, taking one broker from each in turn."""
    by_rack: dict[str, list[int]] = {}
    for broker_id, rack in brokers:
        by_rack.setdefault(rack, []).append(broker_id)
    queues = [sorted(by_rack[rack], reverse=True) for rack in sorted(by_rack)]
    out: list[int] = []
    rack_index = 0
    while len(out) < len(brokers):
        queue = queues[rack_index]
        if queue:
            out.append(queue.pop())
        rack_index = (rack_index + 1) % len(queues)
    return out


def rack_aware(
    brokers: Sequence[tuple[int, str]], num_partitions: int, replication_factor: int, start_index: int, shift: int
) -> list[list[int]]:
    rack_of = dict(brokers)
    arranged = rack_alternated(brokers)
    count = len(arranged)
    rack_count = len(set(rack_of.values()))
    assignment: list[list[int]] = []
    for partition in range(num_partitions):
        if partition > 0 and partition % count == 0:
            shift += 1
        first = (partition + start_index) % count
        leader = arranged[first]
        replicas = [leader]
        racks_used = {rack_of[leader]}
        k = 0
        while len(replicas) < replication_factor:
            broker = arranged[_replica_index(first, shift * rack_count, k, count)]
            k += 1
            rack = rack_of[broker]
            # Skip while some rack has no replica yet, or the broker already holds one.
            if (rack not in racks_used or len(racks_used) == rack_count) and broker not in replicas:
                replicas.append(broker)
                racks_used.add(rack)
        assignment.append(replicas)
    return assignment


def validate_manual_assignment(
    assignments: Sequence[tuple[int, Sequence[int]]], registered: Collection[int]
) -> list[list[int]]:
    """Explicit replica lists from a CreateTopics request, checked as Kafka's controller does.

    Returns the lists by partition index; raises KafkaError(INVALID_REPLICA_ASSIGNMENT).
    """

    def invalid(message: str) -> KafkaError:
        return KafkaError(ErrorCode.INVALID_REPLICA_ASSIGNMENT, message)

    by_partition: dict[int, list[int]] = {}
    for partition, replicas in assignments:
        if partition in by_partition:
            raise invalid(f"The manual partition assignment includes partition {partition} more than once.")
        by_partition[partition] = list(replicas)
    if sorted(by_partition) != list(range(len(by_partition))):
        raise invalid("Partitions should be a consecutive 0-based integer sequence.")
    if len(by_partition) > MAX_PARTITIONS_PER_TOPIC:
        raise KafkaError(ErrorCode.INVALID_PARTITIONS, f"Number of partitions exceeds the limit of {MAX_PARTITIONS_PER_TOPIC} per topic.")
    out = [by_partition[partition] for partition in range(len(by_partition))]
    for partition, replicas in enumerate(out):
        if not replicas:
            raise invalid(f"The manual partition assignment includes an empty replica list for partition {partition}.")
        if len(set(replicas)) != len(replicas):
            duplicate = next(b for b in replicas if replicas.count(b) > 1)
            raise invalid(f"The manual partition assignment includes the broker {duplicate} more than once.")
        for broker_id in replicas:
            if broker_id not in registered:
                raise invalid(
                    f"The manual partition assignment includes broker {broker_id}, but no such broker is registered."
                )
        if len(replicas) != len(out[0]):
            raise invalid(
                f"The manual partition assignment includes a partition with {len(replicas)} replica(s), but this "
                f"is not consistent with previous partitions, which have {len(out[0])} replica(s)."
            )
    return out
