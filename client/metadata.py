"""The client's view of the cluster: brokers, the controller and partition leaders (sans-IO).

Kafka's ``Metadata`` class: filled from MetadataResponses, refreshed when too old
(``metadata.max.age.ms``), when a caller asks for it (after NOT_LEADER_OR_FOLLOWER and friends)
or when a new topic of interest appears. Time comes in as ``now_ms``; the caller does the I/O.
"""

from __future__ import annotations

from typing import Iterable, NamedTuple

from brokerlab.errors import ErrorCode
from brokerlab.ids import TopicPartition


class PartitionInfo(NamedTuple):
    topic: str
    partition: int
    leader_id: int  # -1 when the partition has no leader
    leader_epoch: int
    replicas: tuple[int, ...]
    isr: tuple[int, ...]


class BrokerInfo(NamedTuple):
    broker_id: int
    address: str  # "host:port"
    rack: str
    fenced: bool


class _TopicInfo(NamedTuple):
    topic_id: str
    is_internal: bool
    partitions: tuple[PartitionInfo, ...]  # indexed by partition number


class MetadataCache:
    def __init__(self, metadata_max_age_ms: int = 300_000) -> None:
        self.metadata_max_age_ms = metadata_max_age_ms
        self.cluster_id: str | None = None
        self.controller_id: int | None = None
        self._controller_address: str | None = None
        self._brokers: dict[int, BrokerInfo] = {}
        self._topics: dict[str, _TopicInfo] = {}
        # Topics that came back with an error in the last response that named them.
        self.topic_errors: dict[str, int] = {}
        self._wanted: set[str] = set()
        self._last_update_ms: int | None = None
        self._update_requested = False
        self.update_count = 0

    # ---- updates -------------------------------------------------------------------------

    def update(self, response, now_ms: int, *, full: bool = False) -> None:
        """Apply a MetadataResponse.

        ``full`` says the request asked for every topic, so topics missing from the answer are
        gone. A topic answered with an error is dropped (and its code kept in ``topic_errors``).
        Like Kafka (KIP-320), a partition whose leader epoch went backwards keeps the newer
        entry we already have: a lagging broker must not undo what a fresher one told us.
        """
        self._brokers = {
            b.broker_id: BrokerInfo(b.broker_id, f"{b.endpoint.host}:{b.endpoint.port}", b.rack, b.fenced)
            for b in response.brokers
        }
        self.cluster_id = response.cluster_id or self.cluster_id
        endpoint = response.controller_endpoint
        if response.HasField("controller_endpoint") and endpoint.host:
            self.controller_id = response.controller_id
            self._controller_address = f"{endpoint.host}:{endpoint.port}"
        if full:
            answered = {t.name for t in response.topics}
            for name in list(self._topics):
                if name not in answered:
                    del self._topics[name]
        for topic in response.topics:
            if topic.error_code != ErrorCode.NONE:
                self._topics.pop(topic.name, None)
                self.topic_errors[topic.name] = topic.error_code
                continue
            self.topic_errors.pop(topic.name, None)
            self._topics[topic.name] = self._merge_topic(topic)
        self._last_update_ms = now_ms
        self._update_requested = False
        self.update_count += 1

    def _merge_topic(self, topic) -> _TopicInfo:
        old = self._topics.get(topic.name)
        same_topic = old is not None and old.topic_id == topic.topic_id
        partitions = []
        for p in sorted(topic.partitions, key=lambda p: p.partition):
            info = PartitionInfo(
                topic.name, p.partition, p.leader_id, p.leader_epoch, tuple(p.replicas), tuple(p.isr)
            )
            if same_topic and p.partition < len(old.partitions):
                known = old.partitions[p.partition]
                if known.leader_epoch > info.leader_epoch:
                    info = known
            partitions.append(info)
        return _TopicInfo(topic.topic_id, topic.is_internal, tuple(partitions))

    def add_topics(self, topics: Iterable[str]) -> None:
        """Topics the client uses; a new one makes the next check ask for a refresh."""
        new = set(topics) - self._wanted
        if new:
            self._wanted |= new
            if any(name not in self._topics for name in new):
                self._update_requested = True

    def wanted_topics(self) -> list[str]:
        return sorted(self._wanted)

    def request_update(self) -> None:
        """Ask for a refresh at the next opportunity (leader moved, broker unreachable)."""
        self._update_requested = True

    def needs_update(self, now_ms: int) -> bool:
        if self._update_requested or self._last_update_ms is None:
            return True
        return now_ms - self._last_update_ms >= self.metadata_max_age_ms

    @property
    def update_requested(self) -> bool:
        return self._update_requested

    @property
    def last_update_ms(self) -> int | None:
        return self._last_update_ms

    # ---- lookups -------------------------------------------------------------------------

    def topics(self) -> list[str]:
        return sorted(self._topics)

    def topic_id(self, topic: str) -> str | None:
        info = self._topics.get(topic)
        return None if info is None else info.topic_id

    def is_internal(self, topic: str) -> bool:
        info = self._topics.get(topic)
        return info is not None and info.is_internal

    def partitions_for(self, topic: str) -> list[PartitionInfo] | None:
        info = self._topics.get(topic)
        return None if info is None else list(info.partitions)

    def partition_count(self, topic: str) -> int | None:
        info = self._topics.get(topic)
        return None if info is None else len(info.partitions)

    def partition_info(self, tp: TopicPartition) -> PartitionInfo | None:
        topic, partition = tp  # a TopicPartition or a plain (topic, partition) tuple
        info = self._topics.get(topic)
        if info is None or not 0 <= partition < len(info.partitions):
            return None
        return info.partitions[partition]

    def leader_for(self, tp: TopicPartition) -> int | None:
        """The leader's broker id, or None when unknown or leaderless."""
        partition = self.partition_info(tp)
        if partition is None or partition.leader_id < 0:
            return None
        return partition.leader_id

    def leader_epoch_for(self, tp: TopicPartition) -> int:
        """The known leader epoch (-1 when unknown), sent as current_leader_epoch."""
        partition = self.partition_info(tp)
        return -1 if partition is None else partition.leader_epoch

    def broker_address(self, broker_id: int) -> str | None:
        broker = self._brokers.get(broker_id)
        return None if broker is None else broker.address

    def broker_info(self, broker_id: int) -> BrokerInfo | None:
        return self._brokers.get(broker_id)

    def controller_address(self) -> str | None:
        return self._controller_address

    def brokers(self) -> dict[int, str]:
        """Broker id -> "host:port" for every broker the last response listed."""
        return {broker_id: b.address for broker_id, b in sorted(self._brokers.items())}


# A Metadata call silent this long gets a second one to the next candidate (first answer wins).
METADATA_HEDGE_MS = 250
# A broker whose Metadata call failed goes to the end of the candidates for this long.
FAILED_ADDRESS_MEMORY_MS = 5_000


class MetadataBrokerOrder:
    """Whom to ask for metadata, in order: the known brokers (a different one first each time),
    then the bootstrap addresses; those whose Metadata call failed within
    ``FAILED_ADDRESS_MEMORY_MS`` go last. Pure, for the gRPC link and the simulator alike."""

    def __init__(self, bootstrap: Iterable[str]) -> None:
        self.bootstrap = list(bootstrap)
        self._next_broker = 0
        self._failed_at: dict[str, int] = {}  # address -> when a Metadata call to it last failed

    def candidates(self, known: list[str], now_ms: int) -> list[str]:
        if known:
            start = self._next_broker % len(known)
            self._next_broker += 1
            known = known[start:] + known[:start]
        candidates = list(dict.fromkeys(known + self.bootstrap))
        failed = {a for a, at in self._failed_at.items() if now_ms - at < FAILED_ADDRESS_MEMORY_MS}
        return [a for a in candidates if a not in failed] + [a for a in candidates if a in failed]

    def answered(self, address: str) -> None:
        self._failed_at.pop(address, None)

    def failed(self, address: str, now_ms: int) -> None:
        self._failed_at[address] = now_ms
