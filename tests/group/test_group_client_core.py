"""The client's GroupMembership cores against the real coordinator host, in one process (sans-IO).

``World`` routes the members' envelopes to a GroupCoordinatorHost (over the fake broker) and its
answers back, with a virtual clock; ``poll`` plays the asyncio runner's poll path (revoke,
allow the join, apply assignments). No sockets, no sleeps.
"""

from __future__ import annotations

from collections import deque

from host_fakes import FakeBroker

from brokerlab.errors import ErrorCode
from brokerlab.ids import TopicPartition
from brokerlab.sansio import Effects, Envelope
from brokerlab.v1 import broker_pb2, common_pb2
from client.consumer.assignors import RebalanceProtocol
from client.consumer.group import CommitFailedError, GroupConfig, GroupMembership, MemberState
from client.metadata import MetadataCache
from node.group.config import GroupConfig as CoordinatorConfig
from node.group.host import GroupCoordinatorHost


def metadata_response(partitions: int) -> broker_pb2.MetadataResponse:
    response = broker_pb2.MetadataResponse(brokers=[common_pb2.BrokerDescription(
        broker_id=1, endpoint=common_pb2.Endpoint(host="127.0.0.1", port=9001))])
    topic = response.topics.add(name="t", topic_id="tid")
    for p in range(partitions):
        topic.partitions.add(partition=p, leader_id=1, leader_epoch=0, replicas=[1], isr=[1])
    return response


class World:
    def __init__(self, partitions: int = 6) -> None:
        self.broker = FakeBroker(partitions=4)
        self.host = GroupCoordinatorHost(CoordinatorConfig(initial_rebalance_delay_ms=0,
                                                           offsets_topic_num_partitions=4), self.broker, "w")
        self.now = 1_000
        self.partitions = partitions
        self.members: dict[str, GroupMembership] = {}
        self.caches: dict[str, MetadataCache] = {}
        self.events: list = []
        self.host.after(self.now, Effects())

    def add(self, name: str, **config) -> GroupMembership:
        config.setdefault("session_timeout_ms", 3000)
        config.setdefault("heartbeat_interval_ms", 300)
        cache = MetadataCache()
        cache.update(metadata_response(self.partitions), self.now)
        core = GroupMembership(GroupConfig(group_id="g", client_id=name, **config), cache, node=f"client-{name}")
        core.subscribe(["t"])
        core.poll_called(self.now)
        self.members[f"client-{name}"] = core
        self.caches[name] = cache
        return core

    def grow(self, partitions: int) -> None:
        self.partitions = partitions
        for cache in self.caches.values():
            cache.update(metadata_response(partitions), self.now)

    def _route(self, queue: deque) -> None:
        while queue:
            envelope = queue.popleft()
            if envelope.is_response:
                core = self.members.get(envelope.dst)
                if core is None:
                    continue
                fx = core.step(envelope, self.now)
                self.events += fx.events
                queue.extend(fx.sends)
            else:
                fx = Effects()
                self.host.handle(Envelope(envelope.src, "broker-1", envelope.rpc, envelope.message,
                                          envelope.request_id), self.now, fx)
                self.host.after(self.now, fx)
                self.events += fx.events
                queue.extend(fx.replies)

    def tick(self, name: str | None = None) -> None:
        queue: deque = deque()
        for node, core in self.members.items():
            if name is None or node == f"client-{name}":
                fx = core.tick(self.now)
                self.events += fx.events
                queue.extend(fx.sends)
        self._route(queue)

    def advance(self, ms: int, step_ms: int = 50, polling: tuple[str, ...] | None = None) -> None:
        """Time passes in steps; members in ``polling`` (default: all) poll at every step."""
        end = self.now + ms
        while self.now < end:
            self.now = min(end, self.now + step_ms)
            fx = Effects()
            self.host.tick(self.now, fx)
            self.events += fx.events
            self._route(deque(fx.replies))
            for node in list(self.members):
                name = node.removeprefix("client-")
                if polling is None or name in polling:
                    self.poll(name)
            self.tick()

    def poll(self, name: str) -> None:
        """The runner's poll path: lost partitions, new assignments, eager revocation, join."""
        core = self.members[f"client-{name}"]
        core.poll_called(self.now)
        if core.partitions_lost:
            core.partitions_released()
        if core.pending_assignment is not None:
            new, owned = set(core.pending_assignment), set(core.owned)
            revoked = owned - new if core.protocol is RebalanceProtocol.COOPERATIVE else set()
            core.assignment_applied(tuple(new))
            if revoked:
                core.request_rejoin(f"member-rejoined: revoked {len(revoked)}")
        if core.needs_join and not core.join_allowed:
            if core.protocol is RebalanceProtocol.EAGER:
                core.partitions_released()
            core.allow_join()
        self.tick(name)

    def core(self, name: str) -> GroupMembership:
        return self.members[f"client-{name}"]

    def owners(self) -> dict[TopicPartition, list[str]]:
        out: dict[TopicPartition, list[str]] = {}
        for node, core in self.members.items():
            for tp in core.owned:
                out.setdefault(tp, []).append(node)
        return out

    def stable(self) -> bool:
        cores = list(self.members.values())
        return all(c.state is MemberState.STABLE and not c.rejoin_needed and c.pending_assignment is None
                   for c in cores) and len({c.generation_id for c in cores}) == 1


def test_members_join_and_share_the_partitions():
    world = World()
    world.add("a")
    world.add("b")
    world.advance(1000)
    assert world.stable()
    owners = world.owners()
    assert sorted(owners) == [TopicPartition("t", p) for p in range(6)]
    assert all(len(v) == 1 for v in owners.values())
    leader = [c for c in world.members.values() if c.leader_id == c.member_id]
    assert len(leader) == 1 and {c.protocol_name for c in world.members.values()} == {"range"}


def test_new_member_triggers_rebalance_through_heartbeats():
    world = World()
    world.add("a")
    world.add("b")
    world.advance(1000)
    generation = world.core("a").generation_id
    world.add("c")
    world.advance(1500)
    assert world.stable() and world.core("a").generation_id > generation
    assert sorted(len(c.owned) for c in world.members.values()) == [2, 2, 2]
    assert any(e.name == "GroupRebalanceNoticed" for e in world.events)


def test_poll_interval_exceeded_leaves_and_commit_fails_clearly():
    world = World()
    world.add("a", max_poll_interval_ms=2000)
    world.add("b", max_poll_interval_ms=2000)
    world.advance(1000)
    a = world.core("a")
    world.advance(2500, polling=("b",))  # a stops polling; its timer notices
    assert a.state is MemberState.UNJOINED and a.generation_id == -1 and a.member_id == ""
    assert any(e.name == "PollIntervalExceeded" for e in world.events)
    assert sorted(tp.partition for tp in world.core("b").owned) == list(range(6))
    request_id = a.offsets.commit({TopicPartition("t", 0): 3})
    error = a.offsets.results[request_id]
    assert isinstance(error, CommitFailedError) and "max.poll.interval.ms=2000" in error.message
    world.advance(1500)  # a polls again: it rejoins
    assert world.stable() and a.owned


def test_commit_and_fetch_round_trip_through_the_coordinator():
    world = World()
    world.add("a")
    world.advance(500)
    a = world.core("a")
    request_id = a.offsets.commit({TopicPartition("t", 0): 7})
    world.tick("a")
    assert a.offsets.results.pop(request_id) is None
    request_id = a.offsets.fetch([TopicPartition("t", 0), TopicPartition("t", 1)])
    world.tick("a")
    assert a.offsets.results.pop(request_id) == {TopicPartition("t", 0): (7, ""), TopicPartition("t", 1): None}


def test_cooperative_rebalance_revokes_only_movers_in_two_rounds():
    world = World()
    world.add("a", partition_assignment_strategy=("cooperative-sticky",))
    world.advance(1000)
    a = world.core("a")
    assert len(a.owned) == 6
    world.add("b", partition_assignment_strategy=("cooperative-sticky",))
    kept_throughout = set(a.owned)
    for _ in range(60):
        world.advance(50)
        kept_throughout &= set(a.owned)
        owners = world.owners()
        assert all(len(v) == 1 for v in owners.values()), "a partition with two owners"
    assert world.stable()
    assert sorted(len(c.owned) for c in world.members.values()) == [3, 3]
    assert len(kept_throughout) == 3, "a kept its three partitions all along"


def test_coordinator_moves_and_members_rediscover_it():
    world = World()
    world.add("a")
    world.advance(1000)
    a = world.core("a")
    generation = a.generation_id
    world.broker.led = {}  # this broker stops coordinating: NOT_COORDINATOR from now on
    world.broker.offset += 1
    world.advance(400)
    assert any(e.name == "CoordinatorLost" for e in world.events)
    world.broker.led = {p: 1 for p in range(4)}  # ...and leads again (a new epoch: reload)
    world.broker.offset += 1
    world.advance(1000)
    assert a.state is MemberState.STABLE and a.generation_id == generation, "the loaded group knew the member"


def test_metadata_change_makes_the_leader_rejoin():
    world = World(partitions=4)
    world.add("a")
    world.add("b")
    world.advance(1000)
    world.grow(8)
    world.advance(3000)
    assert world.stable()
    assert sum(len(c.owned) for c in world.members.values()) == 8
    shard = next(iter(world.host.slots[s].shard for s in world.host.slots if world.host.slots[s].shard.groups))
    assert shard.groups["g"].rebalances[-1].cause == "metadata-change"


def test_fenced_static_member_fails():
    world = World()
    world.add("a", group_instance_id="i1")
    world.advance(500)
    old = world.core("a")
    world.members["client-a2"] = GroupMembership(GroupConfig(group_id="g", client_id="a2", group_instance_id="i1",
                                                             session_timeout_ms=3000, heartbeat_interval_ms=300),
                                                 old.metadata, node="client-a2")
    world.core("a2").subscribe(["t"])
    world.core("a2").poll_called(world.now)
    world.advance(1000)
    assert old.fatal is not None and old.fatal.code == ErrorCode.FENCED_INSTANCE_ID
    assert world.core("a2").state is MemberState.STABLE
