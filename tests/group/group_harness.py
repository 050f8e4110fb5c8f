"""Drive a GroupShard with requests and ``now_ms`` (no sockets, no sleeps).

``ShardHarness`` plays the host: it replays nothing itself (the shard does), parks requests the
shard parks, hands out completions, and keeps every record the shard returned so tests can
rebuild a shard from them (the replay tests).
"""

from __future__ import annotations

from typing import Any

from brokerlab.errors import ErrorCode, error_name
from brokerlab.ids import TopicPartition
from brokerlab.v1 import group_pb2
from node.group.config import GroupConfig
from node.group.coordinator import GroupResult, GroupShard, member_ids
from node.group.offsets import commit_offsets, fetch_offsets

PROTOCOL_TYPE = "consumer"


def subscription(*topics: str, owned: tuple[TopicPartition, ...] = ()) -> bytes:
    by_topic: dict[str, list[int]] = {}
    for tp in owned:
        by_topic.setdefault(tp.topic, []).append(tp.partition)
    return group_pb2.ConsumerProtocolSubscription(
        topics=list(topics),
        owned_partitions=[group_pb2.GroupTopicPartitions(topic=t, partitions=ps) for t, ps in by_topic.items()],
    ).SerializeToString()


def assignment(*tps: TopicPartition) -> bytes:
    by_topic: dict[str, list[int]] = {}
    for tp in tps:
        by_topic.setdefault(tp.topic, []).append(tp.partition)
    return group_pb2.ConsumerProtocolAssignment(assigned_partitions=[
        group_pb2.GroupTopicPartitions(topic=t, partitions=ps) for t, ps in by_topic.items()]).SerializeToString()


def partitions_of(data: bytes) -> list[TopicPartition]:
    parsed = group_pb2.ConsumerProtocolAssignment.FromString(data)
    return sorted(TopicPartition(e.topic, p) for e in parsed.assigned_partitions for p in e.partitions)


class ShardHarness:
    def __init__(self, now_ms: int = 1_000, **config: Any) -> None:
        config.setdefault("initial_rebalance_delay_ms", 100)
        self.config = GroupConfig(**config)
        self.shard = GroupShard(0, self.config, member_ids("test"))
        self.now_ms = now_ms
        self.records: list = []
        self.events: list = []
        self.parked: dict[tuple, str] = {}  # park key -> handle
        self.answers: dict[str, Any] = {}  # handle -> response (for parked requests)
        self._handles = 0

    # ---- plumbing
    def _absorb(self, result: GroupResult, handle: str | None = None) -> Any:
        self.records.extend(result.records)
        self.events.extend(result.events)
        if handle is not None and result.response is None and result.park_key is not None:
            old = self.parked.pop(result.park_key, None)
            if old is not None:
                self.answers[old] = "superseded"
            self.parked[result.park_key] = handle
        for key, response in result.completions:
            waiting = self.parked.pop(key, None)
            if waiting is not None:
                self.answers[waiting] = response
        return result.response

    def _handle(self) -> str:
        self._handles += 1
        return f"h{self._handles}"

    def advance(self, ms: int) -> None:
        self.now_ms += ms
        self._absorb(self.shard.expire(self.now_ms))

    def run_until_idle(self, limit_ms: int = 600_000) -> None:
        """Advance through every due deadline up to ``now + limit_ms``."""
        end = self.now_ms + limit_ms
        while True:
            due = self.shard.next_deadline_ms()
            if due is None or due > end:
                return
            self.now_ms = max(self.now_ms, due)
            self._absorb(self.shard.expire(self.now_ms))

    def event_names(self) -> list[str]:
        return [e.name for e in self.events]

    # ---- requests: each returns (handle, response or None when parked)
    def join(self, group: str = "g", member_id: str = "", instance: str = "", topics: tuple[str, ...] = ("t",),
             protocols: tuple[str, ...] = ("range",), session_ms: int = 10_000, rebalance_ms: int = 30_000,
             reason: str = "", client_id: str = "c", metadata: bytes | None = None,
             protocol_type: str = PROTOCOL_TYPE) -> tuple[str, Any]:
        meta = subscription(*topics) if metadata is None else metadata
        request = group_pb2.JoinGroupRequest(
            group_id=group, member_id=member_id, group_instance_id=instance, session_timeout_ms=session_ms,
            rebalance_timeout_ms=rebalance_ms, protocol_type=protocol_type, reason=reason, client_id=client_id,
            client_host="/127.0.0.1", protocols=[group_pb2.JoinGroupProtocol(name=p, metadata=meta) for p in protocols])
        handle = self._handle()
        return handle, self._absorb(self.shard.join_group(request, self.now_ms), handle)

    def join_dynamic(self, group: str = "g", **kwargs: Any) -> tuple[str, Any]:
        """MEMBER_ID_REQUIRED round trip, then the real join (parked or answered)."""
        _, first = self.join(group, **kwargs)
        assert first.error_code == ErrorCode.MEMBER_ID_REQUIRED, error_name(first.error_code)
        return self.join(group, member_id=first.member_id, **kwargs)

    def sync(self, member_id: str, generation: int, group: str = "g", instance: str = "",
             assignments: dict[str, bytes] | None = None) -> tuple[str, Any]:
        request = group_pb2.SyncGroupRequest(
            group_id=group, member_id=member_id, generation_id=generation, group_instance_id=instance,
            protocol_type=PROTOCOL_TYPE,
            assignments=[group_pb2.SyncGroupAssignment(member_id=m, assignment=a) for m, a in (assignments or {}).items()])
        handle = self._handle()
        return handle, self._absorb(self.shard.sync_group(request, self.now_ms), handle)

    def heartbeat(self, member_id: str, generation: int, group: str = "g", instance: str = "") -> int:
        request = group_pb2.HeartbeatRequest(group_id=group, member_id=member_id, generation_id=generation,
                                             group_instance_id=instance)
        return self._absorb(self.shard.heartbeat(request, self.now_ms)).error_code

    def leave(self, member_id: str, group: str = "g", instance: str = "", reason: str = "") -> Any:
        request = group_pb2.LeaveGroupRequest(group_id=group, members=[
            group_pb2.MemberIdentity(member_id=member_id, group_instance_id=instance, reason=reason)])
        return self._absorb(self.shard.leave_group(request, self.now_ms))

    def commit(self, member_id: str, generation: int, offsets: dict[TopicPartition, int], group: str = "g",
               instance: str = "") -> dict[TopicPartition, int]:
        by_topic: dict[str, list] = {}
        for tp, offset in offsets.items():
            by_topic.setdefault(tp.topic, []).append(group_pb2.OffsetCommitPartition(
                partition_index=tp.partition, committed_offset=offset, committed_leader_epoch=-1))
        request = group_pb2.OffsetCommitRequest(group_id=group, member_id=member_id, generation_id=generation,
                                                group_instance_id=instance, topics=[
            group_pb2.OffsetCommitTopic(name=t, partitions=ps) for t, ps in by_topic.items()])
        response = self._absorb(commit_offsets(self.shard, request, self.now_ms))
        return {TopicPartition(t.name, p.partition_index): p.error_code for t in response.topics for p in t.partitions}

    def fetch(self, group: str = "g") -> dict[TopicPartition, int]:
        response = self._absorb(fetch_offsets(self.shard, group_pb2.OffsetFetchRequest(group_id=group)))
        return {TopicPartition(t.name, p.partition_index): p.committed_offset for t in response.topics
                for p in t.partitions}

    def answer(self, handle: str) -> Any:
        return self.answers.get(handle)

    def group(self, group: str = "g"):
        return self.shard.groups[group]

    # ---- a whole rebalance
    def form_group(self, count: int, partitions: int = 6, group: str = "g", **kwargs: Any) -> dict[str, bytes]:
        """``count`` dynamic members join; the leader assigns round-robin; all sync. Returns
        member id -> assignment bytes."""
        handles = [self.join_dynamic(group, client_id=f"c{i}", **kwargs)[0] for i in range(count)]
        self.run_until_idle(self.config.initial_rebalance_delay_ms)
        joins = [self.answer(h) for h in handles]
        assert all(j is not None and j.error_code == 0 for j in joins), joins
        return self.complete_sync(joins, partitions, group)

    def complete_sync(self, joins: list, partitions: int = 6, group: str = "g") -> dict[str, bytes]:
        leader = next(j for j in joins if j.leader == j.member_id)
        members = sorted(m.member_id for m in leader.members)
        plan = {m: [] for m in members}
        for p in range(partitions):
            plan[members[p % len(members)]].append(TopicPartition("t", p))
        assignments = {m: assignment(*tps) for m, tps in plan.items()}
        sync_handles = {}
        for join in sorted(joins, key=lambda j: j.member_id != j.leader):  # the leader first
            handle, response = self.sync(join.member_id, join.generation_id, group,
                                         assignments=assignments if join.member_id == join.leader else None)
            sync_handles[join.member_id] = response if response is not None else handle
        out = {}
        for member_id, got in sync_handles.items():
            response = self.answer(got) if isinstance(got, str) else got
            assert response is not None and response.error_code == 0, response
            out[member_id] = response.assignment
        return out
