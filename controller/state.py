"""The controller's in-memory view of the cluster, changed only by ``replay(record)``.

Commands read this state, decide which ``MetadataRecord``s to write, append them to the journal
and then replay them (Kafka's ControllerResult + replay), so a controller rebuilt from its
journal ends in exactly the same state. Soft state that is not in the journal (heartbeat times,
parked fetches) lives in the core, not here.

Record semantics (brokers replaying the same journal must follow them):

* RegisterBrokerRecord replaces any earlier registration of that broker id; broker_epoch is the
  record's journal offset; ``fenced`` is true for a new registration.
* Fence/UnfenceBrokerRecord apply only when broker_epoch matches the current registration.
* TopicRecord adds a topic; its PartitionRecords follow, each carrying the full partition state.
* PartitionChangeRecord carries the new absolute ``leader_epoch`` and ``partition_epoch``;
  ``leader_id``, ``isr`` and ``replicas`` apply only when their ``*_changed`` flag is set.
* RemoveTopicRecord removes the topic and all its partitions.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from brokerlab.v1.common_pb2 import BrokerDescription, Endpoint
from brokerlab.v1.metadata_pb2 import MetadataRecord

NO_LEADER = -1


@dataclass
class BrokerRegistration:
    broker_id: int
    broker_epoch: int
    host: str
    port: int
    rack: str
    incarnation_id: str
    fenced: bool

    def describe(self) -> BrokerDescription:
        return BrokerDescription(
            broker_id=self.broker_id,
            endpoint=Endpoint(host=self.host, port=self.port),
            rack=self.rack,
            broker_epoch=self.broker_epoch,
            fenced=self.fenced,
        )


@dataclass
class PartitionState:
    replicas: list[int]
    isr: list[int]
    leader_id: int
    leader_epoch: int
    partition_epoch: int


@dataclass
class TopicState:
    name: str
    topic_id: str
    configs: dict[str, str]
    partitions: dict[int, PartitionState] = field(default_factory=dict)


@dataclass
class ControllerState:
    brokers: dict[int, BrokerRegistration] = field(default_factory=dict)
    topics: dict[str, TopicState] = field(default_factory=dict)  # by topic id
    topic_ids: dict[str, str] = field(default_factory=dict)  # name -> topic id
    # Every topic id ever used, so a recreated topic never gets an old id back.
    used_topic_ids: set[str] = field(default_factory=set)
    # Incarnations replaced by a newer one, per broker id: a zombie may not register again.
    retired_incarnations: dict[int, set[str]] = field(default_factory=dict)
    next_producer_id: int = 0
    # Records replayed so far (= the journal end offset once the core is idle).
    applied_records: int = 0

    # ---- queries ----
    def topic_by_name(self, name: str) -> TopicState | None:
        topic_id = self.topic_ids.get(name)
        return None if topic_id is None else self.topics[topic_id]

    def unfenced_brokers(self) -> list[BrokerRegistration]:
        return [b for _, b in sorted(self.brokers.items()) if not b.fenced]

    def is_unfenced(self, broker_id: int) -> bool:
        broker = self.brokers.get(broker_id)
        return broker is not None and not broker.fenced

    # ---- the only way to change the state ----
    def replay(self, record: MetadataRecord) -> None:
        kind = record.WhichOneof("record")
        handler = getattr(self, f"_replay_{kind}", None) if kind else None
        if handler is not None:
            handler(getattr(record, kind))
        # Unknown (future) record kinds are skipped: they still occupy an offset.
        self.applied_records += 1

    def _replay_register_broker(self, r) -> None:
        previous = self.brokers.get(r.broker_id)
        if previous is not None and previous.incarnation_id != r.incarnation_id:
            self.retired_incarnations.setdefault(r.broker_id, set()).add(previous.incarnation_id)
        self.brokers[r.broker_id] = BrokerRegistration(
            broker_id=r.broker_id,
            broker_epoch=r.broker_epoch,
            host=r.endpoint.host,
            port=r.endpoint.port,
            rack=r.rack,
            incarnation_id=r.incarnation_id,
            fenced=r.fenced,
        )

    def _replay_fence_broker(self, r) -> None:
        broker = self.brokers.get(r.broker_id)
        if broker is not None and broker.broker_epoch == r.broker_epoch:
            broker.fenced = True

    def _replay_unfence_broker(self, r) -> None:
        broker = self.brokers.get(r.broker_id)
        if broker is not None and broker.broker_epoch == r.broker_epoch:
            broker.fenced = False

    def _replay_topic(self, r) -> None:
        self.topics[r.topic_id] = TopicState(r.name, r.topic_id, {c.name: c.value for c in r.configs})
        self.topic_ids[r.name] = r.topic_id
        self.used_topic_ids.add(r.topic_id)

    def _replay_partition(self, r) -> None:
        topic = self.topics.get(r.topic_id)
        if topic is not None:
            topic.partitions[r.partition] = PartitionState(
                list(r.replicas), list(r.isr), r.leader_id, r.leader_epoch, r.partition_epoch
            )

    def _replay_partition_change(self, r) -> None:
        topic = self.topics.get(r.topic_id)
        partition = topic.partitions.get(r.partition) if topic is not None else None
        if partition is None:
            return
        if r.replicas_changed:
            partition.replicas = list(r.replicas)
        if r.isr_changed:
            partition.isr = list(r.isr)
        if r.leader_changed:
            partition.leader_id = r.leader_id
        partition.leader_epoch = r.leader_epoch
        partition.partition_epoch = r.partition_epoch

    def _replay_remove_topic(self, r) -> None:
        topic = self.topics.pop(r.topic_id, None)
        if topic is not None and self.topic_ids.get(topic.name) == r.topic_id:
            del self.topic_ids[topic.name]

    def _replay_producer_ids(self, r) -> None:
        self.next_producer_id = max(self.next_producer_id, r.next_producer_id)
