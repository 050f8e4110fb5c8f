"""The asyncio Admin client: create, delete, list and describe topics; elect leaders; describe the cluster.

Topic changes go to the controller (its endpoint comes with every MetadataResponse);
descriptions come from broker metadata plus each leader's DescribeLogDirs for the log end
offset and high watermark. All calls go through ClusterLink; errors are KafkaError.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

from brokerlab.errors import ErrorCode, KafkaError
from brokerlab.v1 import broker_pb2, controller_pb2, metadata_pb2
from client.group_admin import GroupAdmin, GroupDescription, GroupListing
from client.rpc.cluster_link import ClusterLink


@dataclass(frozen=True)
class NewTopic:
    """A topic to create; -1 partitions / replication factor means the controller's default.

    ``replica_assignment`` (partition -> broker ids, first = preferred leader) overrides placement.
    """

    name: str
    num_partitions: int = -1
    replication_factor: int = -1
    configs: Mapping[str, str] = field(default_factory=dict)
    replica_assignment: Mapping[int, Sequence[int]] | None = None


@dataclass(frozen=True)
class Node:
    """A broker or the controller."""

    node_id: int
    host: str
    port: int
    rack: str = ""
    fenced: bool = False
    broker_epoch: int = -1

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class PartitionDescription:
    partition: int
    leader: int  # -1 when leaderless
    leader_epoch: int
    replicas: tuple[int, ...]
    isr: tuple[int, ...]
    offline_replicas: tuple[int, ...] = ()
    # From the leader's DescribeLogDirs; -1 when the leader did not answer.
    log_start_offset: int = -1
    log_end_offset: int = -1
    high_watermark: int = -1
    size_bytes: int = -1


@dataclass(frozen=True)
class TopicDescription:
    name: str
    topic_id: str
    is_internal: bool
    partitions: tuple[PartitionDescription, ...]


@dataclass(frozen=True)
class ElectionResult:
    """One partition's answer to ``elect_leaders``: ``error`` is None when a leader was elected.

    ELECTION_NOT_NEEDED (already the preferred leader / already led) comes back as an error
    like the others, as in Kafka; ``leader`` and ``leader_epoch`` are the partition's state after.
    """

    topic: str
    partition: int
    error: KafkaError | None
    leader: int
    leader_epoch: int


ELECTION_TYPES = {
    "preferred": controller_pb2.ELECTION_TYPE_PREFERRED,
    "unclean": controller_pb2.ELECTION_TYPE_UNCLEAN,
}


def _election_type(election_type: str | int) -> int:
    if isinstance(election_type, str):
        try:
            return ELECTION_TYPES[election_type.lower()]
        except KeyError:
            raise KafkaError(ErrorCode.INVALID_REQUEST, f"election type must be preferred or unclean, not {election_type!r}") from None
    return int(election_type)


def _topic_partitions(partitions) -> list[controller_pb2.TopicPartitions]:
    """TopicPartition / (topic, partition) pairs, or a bare topic name for all of its partitions."""
    by_topic: dict[str, list[int]] = {}
    for item in partitions:
        if isinstance(item, str):
            by_topic[item] = []
            continue
        topic, partition = item
        if by_topic.get(topic) != []:
            by_topic.setdefault(topic, []).append(partition)
    return [controller_pb2.TopicPartitions(topic=t, partitions=p) for t, p in by_topic.items()]


@dataclass(frozen=True)
class ClusterDescription:
    cluster_id: str
    controller: Node | None
    brokers: tuple[Node, ...]
    metadata_end_offset: int = -1


def _node(description) -> Node:
    return Node(
        description.broker_id,
        description.endpoint.host,
        description.endpoint.port,
        description.rack,
        description.fenced,
        description.broker_epoch,
    )


def _creatable(topic: NewTopic) -> controller_pb2.CreatableTopic:
    creatable = controller_pb2.CreatableTopic(
        name=topic.name, num_partitions=topic.num_partitions, replication_factor=topic.replication_factor
    )
    for name, value in sorted(topic.configs.items()):
        creatable.configs.append(metadata_pb2.TopicConfig(name=name, value=str(value)))
    for partition, broker_ids in sorted((topic.replica_assignment or {}).items()):
        creatable.assignments.add(partition=partition, broker_ids=list(broker_ids))
    return creatable


def _raise_first(results: dict[str, KafkaError | None]) -> None:
    for error in results.values():
        if error is not None:
            raise error


class Admin:
    def __init__(
        self,
        bootstrap: str | Iterable[str],
        *,
        request_timeout_ms: int = 30_000,
        metadata_max_age_ms: int = 300_000,
        client_id: str | None = None,
    ) -> None:
        self.client_id = client_id or "admin"
        self._link = ClusterLink(bootstrap, metadata_max_age_ms, request_timeout_ms)

    async def __aenter__(self) -> "Admin":
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.close()

    # ---- topics ------------------------------------------------------------------------------

    async def create_topics(
        self, topics: Sequence[NewTopic], *, validate_only: bool = False, raise_on_error: bool = True
    ) -> dict[str, KafkaError | None]:
        """Create topics; returns name -> error (None when created).

        With ``raise_on_error`` (the default) the first failure is raised instead, as
        ``KafkaError(TOPIC_ALREADY_EXISTS, "topic 'orders': ...")`` and the like.
        """
        request = controller_pb2.CreateTopicsRequest(
            topics=[_creatable(t) for t in topics], validate_only=validate_only
        )
        response = await self._link.call_controller("CreateTopics", request)
        results = {r.name: self._result_error(r) for r in response.topics}
        self._link.cache.request_update()
        if raise_on_error:
            _raise_first(results)
        return results

    async def delete_topics(
        self, names: Iterable[str], *, raise_on_error: bool = True
    ) -> dict[str, KafkaError | None]:
        """Delete topics; returns name -> error (None when deleted); raises the first by default."""
        request = controller_pb2.DeleteTopicsRequest(names=list(names))
        response = await self._link.call_controller("DeleteTopics", request)
        results = {r.name: self._result_error(r) for r in response.topics}
        self._link.cache.request_update()
        if raise_on_error:
            _raise_first(results)
        return results

    @staticmethod
    def _result_error(result) -> KafkaError | None:
        if result.error_code == ErrorCode.NONE:
            return None
        detail = result.error_message or "failed"
        return KafkaError(result.error_code, f"topic {result.name!r}: {detail}")

    async def list_topics(self, *, include_internal: bool = False) -> list[str]:
        response = await self._link.refresh_metadata(None)
        return sorted(
            t.name
            for t in response.topics
            if t.error_code == ErrorCode.NONE and (include_internal or not t.is_internal)
        )

    async def describe_topics(self, names: Iterable[str] | None = None) -> list[TopicDescription]:
        """Partitions with leader, epoch, replicas, isr and the leader's log offsets.

        ``None`` describes every topic; a named topic that does not exist raises
        UNKNOWN_TOPIC_OR_PARTITION.
        """
        wanted = None if names is None else list(dict.fromkeys(names))
        if wanted == []:
            return []
        response = await self._link.refresh_metadata(wanted)
        topics = []
        for topic in response.topics:
            if topic.error_code != ErrorCode.NONE:
                if wanted is not None:
                    raise KafkaError(topic.error_code, f"topic {topic.name!r}: {topic.error_message or 'unavailable'}")
                continue
            topics.append(topic)
        if wanted is not None:
            missing = [name for name in wanted if name not in {t.name for t in topics}]
            if missing:
                raise KafkaError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"topic {missing[0]!r} does not exist")
            topics.sort(key=lambda t: wanted.index(t.name))
        else:
            topics.sort(key=lambda t: t.name)
        logs = await self._leader_log_infos(topics)
        return [self._describe(topic, logs) for topic in topics]

    async def _leader_log_infos(self, topics) -> dict[tuple[str, int], broker_pb2.ReplicaLogInfo]:
        """DescribeLogDirs from every leader at once; a leader that fails leaves its offsets -1."""
        by_leader: dict[int, set[str]] = {}
        for topic in topics:
            for p in topic.partitions:
                if p.leader_id >= 0:
                    by_leader.setdefault(p.leader_id, set()).add(topic.name)

        async def ask(leader: int, names: set[str]):
            request = broker_pb2.DescribeLogDirsRequest(topics=sorted(names))
            try:
                return leader, await self._link.call_broker(leader, "DescribeLogDirs", request)
            except KafkaError:
                return leader, None

        answers = await asyncio.gather(*(ask(leader, names) for leader, names in sorted(by_leader.items())))
        infos: dict[tuple[str, int], broker_pb2.ReplicaLogInfo] = {}
        leaders = {(t.name, p.partition): p.leader_id for t in topics for p in t.partitions}
        for leader, response in answers:
            if response is None:
                continue
            for replica in response.replicas:
                if leaders.get((replica.topic, replica.partition)) == leader:
                    infos[(replica.topic, replica.partition)] = replica
        return infos

    @staticmethod
    def _describe(topic, logs) -> TopicDescription:
        partitions = []
        for p in sorted(topic.partitions, key=lambda p: p.partition):
            log = logs.get((topic.name, p.partition))
            partitions.append(
                PartitionDescription(
                    partition=p.partition,
                    leader=p.leader_id,
                    leader_epoch=p.leader_epoch,
                    replicas=tuple(p.replicas),
                    isr=tuple(p.isr),
                    offline_replicas=tuple(p.offline_replicas),
                    log_start_offset=-1 if log is None else log.log_start_offset,
                    log_end_offset=-1 if log is None else log.log_end_offset,
                    high_watermark=-1 if log is None else log.high_watermark,
                    size_bytes=-1 if log is None else log.size_bytes,
                )
            )
        return TopicDescription(topic.name, topic.topic_id, topic.is_internal, tuple(partitions))

    async def wait_for_topics(self, names: Iterable[str], timeout_ms: int = 10_000) -> None:
        """Wait until every unfenced broker reports a leader for every partition of ``names``.

        Topic creation is done when the controller commits it; brokers learn it a moment
        later. Scripts that produce right after creating call this first.
        """
        wanted = list(names)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_ms / 1000
        request = broker_pb2.MetadataRequest(topics=wanted)
        while True:
            await self._link.refresh_metadata(wanted)
            brokers = [b for b in self._link.cache.brokers() if not self._link.cache.broker_info(b).fenced]
            answers = await asyncio.gather(
                *(self._link.call_broker(b, "Metadata", request) for b in brokers), return_exceptions=True
            )
            if brokers and all(self._has_leaders(a, wanted) for a in answers):
                return
            if loop.time() >= deadline:
                raise KafkaError(
                    ErrorCode.REQUEST_TIMED_OUT,
                    f"topics {', '.join(wanted)} have no leader on every broker after {timeout_ms} ms",
                )
            await asyncio.sleep(0.05)  # polling the brokers' metadata, at most 20 times a second

    @staticmethod
    def _has_leaders(answer, wanted: list[str]) -> bool:
        if isinstance(answer, BaseException):
            return False
        found = {t.name: t for t in answer.topics if t.error_code == ErrorCode.NONE}
        return all(
            name in found and found[name].partitions and all(p.leader_id >= 0 for p in found[name].partitions)
            for name in wanted
        )

    # ---- leaders -----------------------------------------------------------------------------

    async def elect_leaders(self, election_type: str | int = "preferred", partitions=None) -> list[ElectionResult]:
        """Preferred or unclean leader election (Kafka's ``Admin.electLeaders``), run by the controller.

        ``partitions``: ``TopicPartition``s or ``(topic, partition)`` pairs, a topic name for all
        of its partitions, or None for every partition of every topic (then the partitions that
        needed nothing are left out). Per-partition failures are in the results; a request the
        controller refuses as a whole raises KafkaError.
        """
        request = controller_pb2.ElectLeadersRequest(election_type=_election_type(election_type))
        if partitions is not None:
            request.topic_partitions.extend(_topic_partitions(partitions))
        response = await self._link.call_controller("ElectLeaders", request)
        if response.error_code != ErrorCode.NONE:
            raise KafkaError(response.error_code, response.error_message or "leader election refused")
        self._link.cache.request_update()
        return [
            ElectionResult(
                r.topic,
                r.partition,
                None if r.error_code == ErrorCode.NONE else KafkaError(r.error_code, f"{r.topic}-{r.partition}: {r.error_message}"),
                r.leader_id,
                r.leader_epoch,
            )
            for r in response.results
        ]

    # ---- consumer groups (client/group_admin.py) ----------------------------------------------

    async def list_groups(self, states: Iterable[str] = ()) -> list[GroupListing]:
        """Every group, from every broker (each answers for the groups it coordinates)."""
        return await GroupAdmin(self._link).list_groups(states)

    async def describe_groups(self, group_ids: Iterable[str]) -> list[GroupDescription]:
        admin = GroupAdmin(self._link)
        return [await admin.describe_group(g) for g in group_ids]

    async def list_group_offsets(self, group_id: str, partitions: Iterable | None = None) -> dict:
        """The group's committed offsets (TopicPartition -> offset), every partition by default."""
        return await GroupAdmin(self._link).committed_offsets(group_id, partitions)

    async def alter_group_offsets(self, group_id: str, offsets: Mapping) -> None:
        """Set committed offsets of an inactive (Empty) group, as kafka-consumer-groups --reset-offsets."""
        await GroupAdmin(self._link).alter_offsets(group_id, offsets)

    async def delete_groups(self, group_ids: Iterable[str], *, raise_on_error: bool = True
                            ) -> dict[str, KafkaError | None]:
        results = await GroupAdmin(self._link).delete_groups(group_ids)
        if raise_on_error:
            _raise_first(results)
        return results

    async def list_offsets(self, specs: Mapping) -> dict:
        """TopicPartition -> offset at its leader for -2 (earliest), -1 (latest) or a timestamp."""
        return await GroupAdmin(self._link).list_offsets(specs)

    # ---- cluster -----------------------------------------------------------------------------

    async def describe_cluster(self) -> ClusterDescription:
        response = await self._link.call_controller("DescribeCluster", controller_pb2.DescribeClusterRequest())
        controller = None
        if response.HasField("controller_endpoint") and response.controller_endpoint.host:
            endpoint = response.controller_endpoint
            controller = Node(response.controller_id, endpoint.host, endpoint.port)
        brokers = tuple(sorted((_node(b) for b in response.brokers), key=lambda n: n.node_id))
        return ClusterDescription(response.cluster_id, controller, brokers, response.metadata_end_offset)

    async def close(self) -> None:
        await self._link.close()
