"""Consumer groups in the deterministic simulator, over many seeds.

Three real broker cores (with their group coordinators) and a controller; group members are
sim nodes running the client's sans-IO ``GroupMembership`` with the runner's poll path. Each seed
draws network latencies and faults (loss, duplication, reordering), member crashes and restarts,
and a crash of the coordinator's broker. Invariant after every simulated event: no two members
of one generation own the same partition. At the end, with the faults healed, the group owns
every partition exactly once.
"""

from __future__ import annotations

import random
import time

import pytest

from brokerlab.errors import ErrorCode
from brokerlab.ids import TopicPartition, broker_node
from brokerlab.sansio import Effects, Envelope
from brokerlab.v1 import broker_pb2
from client.consumer.assignors import RebalanceProtocol
from client.consumer.group import GroupConfig, GroupMembership, MemberState
from client.metadata import MetadataCache
from lab.sim import InvariantViolation
from lab.sim.cores import ClusterSpec, build_cluster, wait_ready
from lab.sim.network import NetworkConfig
from lab.sim.scheduler import derive_seed
from node.group.config import OFFSETS_TOPIC
from node.group.records import partition_for

TOPIC, PARTITIONS, BROKERS = "t", 6, 3
METADATA_REQUEST_ID = 1 << 40  # far from the membership core's own ids


class SimMember:
    """A group member as a sim core: GroupMembership, the metadata it keeps fresh itself, and the
    poll path of client/consumer/group_runner.py (revoke, allow the join, apply assignments)."""

    def __init__(self, name: str, config: GroupConfig, ledger: dict) -> None:
        self.name = name
        self.cache = MetadataCache(metadata_max_age_ms=1000)
        self.core = GroupMembership(config, self.cache, node=name)
        self.core.subscribe([TOPIC])
        self.ledger = ledger  # generation -> {partition: member}
        self._metadata_id = METADATA_REQUEST_ID
        self._metadata_inflight: int | None = None
        self._next_poll_ms = 0
        self._broker = 0

    def step(self, envelope: Envelope, now_ms: int) -> Effects:
        if envelope.rpc == "Metadata":
            if envelope.request_id == self._metadata_inflight:
                self._metadata_inflight = None
                if envelope.message is not None:
                    self.cache.update(envelope.message, now_ms)
                else:
                    self.cache.request_update()
            return self._poll(now_ms, self.core.tick(now_ms))
        return self._poll(now_ms, self.core.step(envelope, now_ms))

    def tick(self, now_ms: int) -> Effects:
        return self._poll(now_ms, self.core.tick(now_ms))

    def next_deadline_ms(self) -> int | None:
        due = [d for d in (self.core.next_deadline_ms(), self._next_poll_ms) if d is not None]
        return min(due)

    def _poll(self, now_ms: int, fx: Effects) -> Effects:
        if self._metadata_inflight is None and self.cache.needs_update(now_ms):
            self._metadata_id += 1
            self._metadata_inflight = self._metadata_id
            self._broker += 1
            fx.send(Envelope(self.name, broker_node(1 + self._broker % BROKERS), "Metadata",
                             broker_pb2.MetadataRequest(topics=[TOPIC]), self._metadata_inflight))
        if now_ms >= self._next_poll_ms:
            self._next_poll_ms = now_ms + 100  # the application polls every 100 ms
            core = self.core
            core.poll_called(now_ms)
            if core.partitions_lost:
                core.partitions_released()
            if core.pending_assignment is not None:
                new, owned = set(core.pending_assignment), set(core.owned)
                revoked = owned - new if core.protocol is RebalanceProtocol.COOPERATIVE else set()
                core.assignment_applied(tuple(new))
                if revoked:
                    core.request_rejoin(f"member-rejoined: revoked {len(revoked)}")
                owners = self.ledger.setdefault(core.generation_id, {})
                for tp in new:
                    if owners.get(tp.partition, self.name) != self.name:
                        raise InvariantViolation(f"{tp} owned by {owners[tp.partition]} and {self.name} "
                                                 f"in generation {core.generation_id}")
                    owners[tp.partition] = self.name
            if core.needs_join and not core.join_allowed:
                if core.protocol is RebalanceProtocol.EAGER:
                    core.partitions_released()
                core.allow_join()
            fx.extend(core.tick(now_ms))
        return fx


def member_timeout(envelope: Envelope) -> int:
    return 40_000 if envelope.rpc == "JoinGroup" else 5_000


def run_seed(seed: int, cooperative: bool) -> dict:
    rng = random.Random(derive_seed(seed, "groups"))
    network = NetworkConfig.from_seed(random.Random(derive_seed(seed, "network-knobs")), faults=True)
    cluster = build_cluster(seed, ClusterSpec(brokers=BROKERS, broker_config={
        "group.initial.rebalance.delay.ms": "50", "offsets.topic.num.partitions": "4"}), network)
    wait_ready(cluster)
    client = cluster.client()
    for _ in range(100):  # a lossy network may keep a broker from registering for a while
        created = client.create_topic(TOPIC, partitions=PARTITIONS, replication_factor=3)
        if created.error_code in (ErrorCode.NONE, ErrorCode.TOPIC_ALREADY_EXISTS):
            break
        cluster.run_for(200)
    assert created.error_code in (ErrorCode.NONE, ErrorCode.TOPIC_ALREADY_EXISTS), created
    ledger: dict[int, dict[int, str]] = {}
    strategy = ("cooperative-sticky",) if cooperative else ("range",)

    def factory(context):
        config = GroupConfig(group_id="g", client_id=context.name, session_timeout_ms=3000,
                             heartbeat_interval_ms=300, max_poll_interval_ms=30_000,
                             partition_assignment_strategy=strategy)
        return SimMember(context.name, config, ledger)

    names = [f"client-m{i}" for i in range(3)]
    for name in names:
        cluster.add_node(name, factory, call_timeout=member_timeout)
    faults = []
    for _ in range(rng.randrange(1, 4)):
        cluster.run_for(rng.randrange(500, 4000))
        kind = rng.choice(["crash-member", "restart-member", "crash-coordinator"])
        if kind == "crash-coordinator":
            coordinator = client.leader_of(OFFSETS_TOPIC, partition_for("g", 4))
            if coordinator is not None and cluster.node(coordinator).alive:
                cluster.crash(coordinator)
                faults.append(f"crash {coordinator}")
                cluster.run_for(rng.randrange(500, 3000))
                cluster.start(coordinator)
                continue
        victim = rng.choice(names)
        if cluster.node(victim).alive:
            cluster.crash(victim)
            faults.append(f"crash {victim}")
            if kind == "restart-member":
                cluster.run_for(rng.randrange(100, 5000))
                cluster.start(victim)
                faults.append(f"start {victim}")
    live = [n for n in names if cluster.node(n).alive]

    def settled() -> bool:
        cores = [cluster.core(n).core for n in live]
        owned = [tp for c in cores for tp in c.owned]
        return all(c.state is MemberState.STABLE and not c.rejoin_needed and c.pending_assignment is None
                   for c in cores) and sorted(owned) == [TopicPartition(TOPIC, p) for p in range(PARTITIONS)] \
            and len({c.generation_id for c in cores}) == 1

    cluster.network.config = NetworkConfig(min_latency_ms=1, max_latency_ms=5)  # faults healed
    assert cluster.run_until(settled, 60_000), (
        f"seed {seed}: the group never settled after {faults}: "
        + str({n: (cluster.core(n).core.state.name, sorted(tp.partition for tp in cluster.core(n).core.owned))
               for n in live}))
    return {"faults": faults, "generations": len(ledger)}


SWEEP_SEEDS = 20


@pytest.mark.parametrize("cooperative", [False, True], ids=["eager", "cooperative"])
def test_group_seed_sweep(cooperative: bool, sim_seed_override: int | None, sim_seed_count: int | None) -> None:
    seeds = [sim_seed_override] if sim_seed_override is not None else list(range(sim_seed_count or SWEEP_SEEDS))
    started = time.perf_counter()
    failures = []
    for seed in seeds:
        try:
            run_seed(seed, cooperative)
        except Exception as exc:  # noqa: BLE001 - every failing seed is reported with its command
            failures.append(f"seed {seed}: {type(exc).__name__}: {exc}\n  replay: .venv/bin/python -m pytest "
                            f"tests/sim/test_sim_groups.py -k {'cooperative' if cooperative else 'eager'} "
                            f"--sim-seed {seed}")
    print(f"group sweep ({'cooperative' if cooperative else 'eager'}): {len(seeds)} seeds in "
          f"{time.perf_counter() - started:.1f} s wall")
    assert not failures, "\n".join(failures)
