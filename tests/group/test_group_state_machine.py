"""A Hypothesis state machine over one group: random joins, syncs, heartbeats, leaves, crashes and
time, with clients that follow the protocol (the leader assigns with a real assignor).

Invariants after every step: the group's state obeys the transition table (replay checks each
move), no two members of one generation are ever handed the same partition, every member handed
an assignment for generation g got it from the one assignment installed for g, and the shard
rebuilt from its records equals the live one.
"""

from __future__ import annotations

from group_harness import ShardHarness
from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from brokerlab.errors import ErrorCode
from brokerlab.ids import TopicPartition
from client.consumer.assignors import (
    CooperativeStickyAssignor,
    RangeAssignor,
    Subscription,
    decode_assignment,
    decode_subscription,
    encode_assignment,
    encode_subscription,
)
from node.group.config import GroupConfig
from node.group.coordinator import GroupShard, member_ids

PARTITIONS = 5
SESSION_MS = 3000
REBALANCE_MS = 4000


class Client:
    def __init__(self, name: str) -> None:
        self.name = name
        self.member_id = ""
        self.generation = -1
        self.owned: tuple[TopicPartition, ...] = ()
        self.join_handle: str | None = None
        self.sync_handle: str | None = None
        self.alive = True


class GroupMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.h = ShardHarness(initial_rebalance_delay_ms=50)
        self.clients: list[Client] = []
        self.assignor = None
        # generation -> partition -> member handed it
        self.handed: dict[int, dict[TopicPartition, str]] = {}
        self.installed: dict[int, dict[str, bytes]] = {}

    @initialize(cooperative=st.booleans())
    def choose_assignor(self, cooperative: bool) -> None:
        self.assignor = CooperativeStickyAssignor() if cooperative else RangeAssignor()

    def _metadata(self, client: Client) -> bytes:
        return encode_subscription(Subscription(("t",), owned_partitions=client.owned,
                                                generation_id=client.generation))

    def _join(self, client: Client) -> None:
        name = self.assignor.name if self.assignor else "range"
        handle, response = self.h.join(member_id=client.member_id, client_id=client.name, session_ms=SESSION_MS,
                                       rebalance_ms=REBALANCE_MS, protocols=(name,),
                                       metadata=self._metadata(client))
        if response is None:
            client.join_handle = handle
        else:
            self._on_join(client, response)

    def _on_join(self, client: Client, response) -> None:
        client.join_handle = None
        if response == "superseded" or response.error_code in (ErrorCode.REBALANCE_IN_PROGRESS,):
            return
        if response.error_code == ErrorCode.MEMBER_ID_REQUIRED:
            client.member_id = response.member_id
            self._join(client)
            return
        if response.error_code != 0:
            client.member_id, client.generation = "", -1
            return
        client.member_id = response.member_id
        assignments = None
        if response.leader == client.member_id and not response.skip_assignment:
            subs = {m.member_id: decode_subscription(m.metadata) for m in response.members}
            plan = (self.assignor or RangeAssignor()).assign({"t": PARTITIONS}, subs)
            assignments = {m: encode_assignment(tps) for m, tps in plan.items()}
            self.installed.setdefault(response.generation_id, assignments)
        handle, sync = self.h.sync(client.member_id, response.generation_id, assignments=assignments)
        client.generation = response.generation_id
        if sync is None:
            client.sync_handle = handle
        else:
            self._on_sync(client, sync)

    def _on_sync(self, client: Client, response) -> None:
        client.sync_handle = None
        if response == "superseded" or response.error_code != 0:
            if response != "superseded" and response.error_code == ErrorCode.UNKNOWN_MEMBER_ID:
                client.member_id = ""
            return
        owned = decode_assignment(response.assignment)
        generation = client.generation
        expected = self.installed.get(generation)
        assert expected is not None, f"an assignment for generation {generation} that no leader installed"
        assert response.assignment == expected.get(client.member_id, b""), "not the installed assignment"
        handed = self.handed.setdefault(generation, {})
        for tp in owned:
            other = handed.get(tp)
            assert other in (None, client.member_id), f"{tp} handed to {other} and {client.member_id} in gen {generation}"
            handed[tp] = client.member_id
        client.owned = owned
        event(f"assignment installed (generation {min(generation, 3)}{'+' if generation > 3 else ''})")

    # ---- rules
    @rule()
    def new_client(self) -> None:
        if len(self.clients) < 6:
            client = Client(f"c{len(self.clients)}")
            self.clients.append(client)
            self._join(client)
        self._settle()

    @rule(index=st.integers(0, 5))
    def rejoin(self, index: int) -> None:
        client = self._live(index)
        if client is not None and client.join_handle is None:
            self._join(client)
        self._settle()

    @rule(index=st.integers(0, 5))
    def heartbeat(self, index: int) -> None:
        client = self._live(index)
        if client is not None and client.member_id and client.generation >= 0:
            code = self.h.heartbeat(client.member_id, client.generation)
            if code in (ErrorCode.REBALANCE_IN_PROGRESS, ErrorCode.ILLEGAL_GENERATION) and client.join_handle is None:
                self._join(client)
            elif code == ErrorCode.UNKNOWN_MEMBER_ID:
                client.member_id, client.generation, client.owned = "", -1, ()
        self._settle()

    @rule(index=st.integers(0, 5))
    def leave(self, index: int) -> None:
        client = self._live(index)
        if client is not None and client.member_id:
            self.h.leave(client.member_id)
            client.alive = False
        self._settle()

    @rule(index=st.integers(0, 5))
    def crash(self, index: int) -> None:
        client = self._live(index)
        if client is not None:
            client.alive = False

    @rule(ms=st.integers(1, 2500))
    def time_passes(self, ms: int) -> None:
        self.h.advance(ms)
        self._settle()

    def _settle(self) -> None:
        for _ in range(5):
            self.deliver()

    def deliver(self) -> None:
        """Clients act on every answer that arrived (the network is prompt here)."""
        for client in self.clients:
            if client.join_handle is not None:
                answer = self.h.answer(client.join_handle)
                if answer is not None:
                    if client.alive:
                        self._on_join(client, answer)
                    else:
                        client.join_handle = None
            if client.sync_handle is not None:
                answer = self.h.answer(client.sync_handle)
                if answer is not None:
                    if client.alive:
                        self._on_sync(client, answer)
                    else:
                        client.sync_handle = None

    def _live(self, index: int) -> Client | None:
        live = [c for c in self.clients if c.alive]
        return live[index % len(live)] if live else None

    # ---- invariants
    @invariant()
    def replay_matches(self) -> None:
        shard = GroupShard(0, GroupConfig(), member_ids("x"))
        for record in self.h.records:
            shard.replay(record)
        assert shard.groups == self.h.shard.groups

    @invariant()
    def installed_assignments_are_disjoint(self) -> None:
        group = self.h.shard.groups.get("g")
        if group is None:
            return
        seen: dict[TopicPartition, str] = {}
        for member in group.members.values():
            for tp in decode_assignment(member.assignment):
                assert tp not in seen, f"{tp} installed for {seen[tp]} and {member.member_id}"
                seen[tp] = member.member_id


TestGroupMachine = GroupMachine.TestCase
TestGroupMachine.settings = settings(max_examples=100, stateful_step_count=50, deadline=None)
