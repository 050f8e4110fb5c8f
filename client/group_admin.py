"""Consumer group administration (what ``kafka-consumer-groups`` does), over ClusterLink.

List (every broker answers for the groups it coordinates), describe (the coordinator's view:
state, protocol, members with their assignments, recent rebalances and why), committed offsets,
offset changes for an inactive group, deletion of empty groups, and ListOffsets lookups for lag
and resets. ``client.admin.Admin`` exposes these as methods.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Iterable, Mapping

from brokerlab.errors import ErrorCode, KafkaError, error_name
from brokerlab.ids import TopicPartition
from brokerlab.topic_partitions import from_group_topic_partitions, partitions_by_topic
from brokerlab.v1 import broker_pb2, group_pb2
from client.consumer.assignors import decode_assignment
from client.rpc.cluster_link import ClusterLink

RETRY = frozenset({ErrorCode.NOT_COORDINATOR, ErrorCode.COORDINATOR_NOT_AVAILABLE,
                   ErrorCode.COORDINATOR_LOAD_IN_PROGRESS, ErrorCode.NETWORK_EXCEPTION, ErrorCode.REQUEST_TIMED_OUT})
EARLIEST, LATEST = -2, -1

LIST_OFFSETS_TIMEOUT_MS = 10_000  # Kafka's default.api.timeout.ms is 60 s; a CLI answers sooner
RETRY_BACKOFF_S = 0.1  # retry.backoff.ms
RETRY_BACKOFF_MAX_S = 1.0  # retry.backoff.max.ms


@dataclass(frozen=True)
class GroupListing:
    group_id: str
    protocol_type: str
    state: str
    coordinator_id: int


@dataclass(frozen=True)
class MemberDescription:
    member_id: str
    group_instance_id: str
    client_id: str
    host: str
    assignment: tuple[TopicPartition, ...]


@dataclass(frozen=True)
class RebalanceInfo:
    generation_id: int
    cause: str
    member_id: str
    detail: str
    started_ms: int
    completed_ms: int
    assigned: dict[str, tuple[TopicPartition, ...]] = field(default_factory=dict)
    revoked: dict[str, tuple[TopicPartition, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class GroupDescription:
    group_id: str
    state: str
    protocol_type: str
    protocol: str  # the assignor the group chose
    coordinator_id: int
    coordinator: str  # host:port
    generation_id: int
    leader: str
    members: tuple[MemberDescription, ...]
    rebalances: tuple[RebalanceInfo, ...]

    @property
    def last_rebalance(self) -> RebalanceInfo | None:
        return self.rebalances[-1] if self.rebalances else None


class GroupAdmin:
    def __init__(self, link: ClusterLink) -> None:
        self.link = link

    async def _deadline(self) -> float:
        return asyncio.get_running_loop().time() + self.link.request_timeout_ms / 1000

    async def coordinator(self, group_id: str) -> tuple[int, str]:
        """(broker id, "host:port") of the group's coordinator; retries while it is being set up."""
        loop = asyncio.get_running_loop()
        deadline = await self._deadline()
        last = ""
        while True:
            if not self.link.cache.brokers():
                await self.link.refresh_metadata(None)
            for _, address in sorted(self.link.cache.brokers().items()):
                try:
                    response = await self.link.call_group_at(
                        address, "FindCoordinator", group_pb2.FindCoordinatorRequest(group_ids=[group_id]))
                except KafkaError as exc:
                    last = exc.message
                    continue
                [found] = response.coordinators
                if found.error_code == ErrorCode.NONE:
                    return found.node_id, f"{found.endpoint.host}:{found.endpoint.port}"
                last = f"{error_name(found.error_code)}: {found.error_message}"
                if found.error_code not in RETRY:
                    raise KafkaError(found.error_code, found.error_message)
                break
            if loop.time() >= deadline:
                raise KafkaError(ErrorCode.COORDINATOR_NOT_AVAILABLE,
                                 f"no coordinator for group {group_id!r}: {last or 'no broker answered'}")
            await asyncio.sleep(RETRY_BACKOFF_S)
            await self.link.refresh_metadata(None)

    async def _call(self, group_id: str, rpc: str, request, error_of) -> tuple[object, int, str]:
        """Call the group's coordinator, finding it again while it moves or loads."""
        loop = asyncio.get_running_loop()
        deadline = await self._deadline()
        while True:
            coordinator_id, address = await self.coordinator(group_id)
            try:
                response = await self.link.call_group_at(address, rpc, request)
                code = error_of(response)
            except KafkaError as exc:
                response, code = None, exc.code
            if code not in RETRY or loop.time() >= deadline:
                if response is None:
                    raise KafkaError(code, f"{rpc} for group {group_id!r} to {address} failed")
                return response, coordinator_id, address
            await asyncio.sleep(RETRY_BACKOFF_S)

    # ---- list / describe -------------------------------------------------------------------

    async def list_groups(self, states: Iterable[str] = ()) -> list[GroupListing]:
        await self.link.refresh_metadata(None)
        brokers = sorted(self.link.cache.brokers().items())

        async def ask(broker_id: int, address: str):
            try:
                return broker_id, await self.link.call_group_at(
                    address, "ListGroups", group_pb2.ListGroupsRequest(states_filter=list(states)))
            except KafkaError as exc:
                return broker_id, exc

        answers = await asyncio.gather(*(ask(b, a) for b, a in brokers))
        out: dict[str, GroupListing] = {}
        for broker_id, answer in answers:
            if isinstance(answer, KafkaError):
                raise KafkaError(answer.code, f"broker {broker_id} did not list its groups: {answer.message}")
            for group in answer.groups:
                out[group.group_id] = GroupListing(group.group_id, group.protocol_type, group.group_state, broker_id)
        return sorted(out.values(), key=lambda g: g.group_id)

    async def describe_group(self, group_id: str) -> GroupDescription:
        response, coordinator_id, address = await self._call(
            group_id, "DescribeGroups", group_pb2.DescribeGroupsRequest(groups=[group_id]),
            lambda r: r.groups[0].error_code)
        [group] = response.groups
        if group.error_code:
            raise KafkaError(group.error_code, group.error_message or f"describing {group_id!r} failed")
        members = tuple(MemberDescription(m.member_id, m.group_instance_id, m.client_id, m.client_host,
                                          decode_assignment(m.member_assignment) if group.protocol_type == "consumer"
                                          else ()) for m in group.members)
        rebalances = tuple(RebalanceInfo(
            r.generation_id, r.cause, r.member_id, r.detail, r.started_ms, r.completed_ms,
            {d.member_id: from_group_topic_partitions(d.assigned) for d in r.diffs if d.assigned},
            {d.member_id: from_group_topic_partitions(d.revoked) for d in r.diffs if d.revoked})
            for r in group.rebalances)
        return GroupDescription(group_id, group.group_state, group.protocol_type, group.protocol_data,
                                coordinator_id, address, group.generation_id, group.leader, members, rebalances)

    # ---- offsets ------------------------------------------------------------------------

    async def committed_offsets(self, group_id: str, partitions: Iterable[TopicPartition] | None = None
                                ) -> dict[TopicPartition, int]:
        request = group_pb2.OffsetFetchRequest(group_id=group_id, topics=[
            group_pb2.OffsetFetchTopic(name=t, partition_indexes=ps)
            for t, ps in partitions_by_topic(partitions or []).items()])
        response, _, _ = await self._call(group_id, "OffsetFetch", request, lambda r: r.error_code)
        if response.error_code:
            raise KafkaError(response.error_code, response.error_message)
        return {TopicPartition(t.name, p.partition_index): p.committed_offset
                for t in response.topics for p in t.partitions if p.committed_offset >= 0}

    async def alter_offsets(self, group_id: str, offsets: Mapping[TopicPartition, int]) -> None:
        """Commit ``offsets`` for the group from outside it (generation -1): the group must be Empty."""
        by_topic: dict[str, list] = {}
        for tp, offset in sorted(offsets.items()):
            by_topic.setdefault(tp.topic, []).append(group_pb2.OffsetCommitPartition(
                partition_index=tp.partition, committed_offset=offset, committed_leader_epoch=-1))
        request = group_pb2.OffsetCommitRequest(group_id=group_id, generation_id=-1, topics=[
            group_pb2.OffsetCommitTopic(name=t, partitions=ps) for t, ps in by_topic.items()])

        def first_error(response) -> int:
            return next((p.error_code for t in response.topics for p in t.partitions if p.error_code), 0)

        response, _, _ = await self._call(group_id, "OffsetCommit", request, first_error)
        for topic in response.topics:
            for p in topic.partitions:
                if p.error_code:
                    raise KafkaError(p.error_code, f"{topic.name}-{p.partition_index}: {p.error_message}")

    async def delete_groups(self, group_ids: Iterable[str]) -> dict[str, KafkaError | None]:
        out: dict[str, KafkaError | None] = {}
        for group_id in group_ids:
            response, _, _ = await self._call(group_id, "DeleteGroups",
                                              group_pb2.DeleteGroupsRequest(groups_names=[group_id]),
                                              lambda r: r.results[0].error_code)
            [result] = response.results
            out[group_id] = KafkaError(result.error_code, result.error_message) if result.error_code else None
        return out

    async def list_offsets(self, specs: Mapping[TopicPartition, int],
                           timeout_ms: int = LIST_OFFSETS_TIMEOUT_MS) -> dict[TopicPartition, int]:
        """ListOffsets at each partition's leader: -2 earliest (log start), -1 latest (high
        watermark), else the first offset with a timestamp at or after it (-1 if none).
        Retriable errors (a leader that moved, OFFSET_NOT_AVAILABLE just after an election) are
        asked again with fresh metadata and a doubling back-off until ``timeout_ms``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_ms / 1000
        backoff_s = RETRY_BACKOFF_S
        while True:
            try:
                return await self._list_offsets_once(specs)
            except KafkaError as exc:
                if not exc.retriable or loop.time() + backoff_s > deadline:
                    raise
            await asyncio.sleep(backoff_s)
            backoff_s = min(backoff_s * 2, RETRY_BACKOFF_MAX_S)

    async def _list_offsets_once(self, specs: Mapping[TopicPartition, int]) -> dict[TopicPartition, int]:
        topics = sorted({tp.topic for tp in specs})
        await self.link.refresh_metadata(topics)
        by_leader: dict[int, list[TopicPartition]] = {}
        for tp in specs:
            leader = self.link.cache.leader_for(tp)
            if leader is None:
                raise KafkaError(ErrorCode.LEADER_NOT_AVAILABLE, f"{tp} has no leader")
            by_leader.setdefault(leader, []).append(tp)

        async def ask(leader: int, tps: list[TopicPartition]):
            request = broker_pb2.ListOffsetsRequest(replica_id=-1, partitions=[
                broker_pb2.ListOffsetsPartition(topic=tp.topic, partition=tp.partition, timestamp_ms=specs[tp],
                                                current_leader_epoch=-1) for tp in tps])
            return await self.link.call_broker(leader, "ListOffsets", request)

        out: dict[TopicPartition, int] = {}
        for response in await asyncio.gather(*(ask(leader, tps) for leader, tps in by_leader.items())):
            for p in response.partitions:
                if p.error_code:
                    raise KafkaError(p.error_code, f"{p.topic}-{p.partition}: {p.error_message}")
                out[TopicPartition(p.topic, p.partition)] = p.offset
        return out


# ---- planning offset resets (kafka-consumer-groups --reset-offsets), pure -------------------------

RESET_STRATEGIES = ("to-earliest", "to-latest", "to-offset", "shift-by", "to-datetime")


def plan_offset_reset(strategy: str, value: int | None, partitions: Iterable[TopicPartition],
                      committed: Mapping[TopicPartition, int], earliest: Mapping[TopicPartition, int],
                      latest: Mapping[TopicPartition, int],
                      by_time: Mapping[TopicPartition, int] | None = None) -> dict[TopicPartition, int]:
    """New committed offsets, clamped to [log start, log end] as Kafka's tool does.

    ``shift-by`` moves the committed offset (the log start when there is none); ``to-datetime``
    takes the first offset at or after the time (the log end when no record is that recent).
    """
    if strategy not in RESET_STRATEGIES:
        raise ValueError(f"unknown reset strategy {strategy!r}")
    out = {}
    for tp in sorted(partitions):
        low, high = earliest[tp], latest[tp]
        if strategy == "to-earliest":
            target = low
        elif strategy == "to-latest":
            target = high
        elif strategy == "to-offset":
            target = int(value)
        elif strategy == "shift-by":
            target = committed.get(tp, low) + int(value)
        else:
            found = (by_time or {}).get(tp, -1)
            target = found if found >= 0 else high
        out[tp] = max(low, min(high, target))
    return out
