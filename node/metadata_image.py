"""The broker's metadata image: the cluster as the controller's journal describes it.

Built only by ``replay(record)`` of ``brokerlab.v1.MetadataRecord``s in journal order (Kafka's
``MetadataImage`` + ``MetadataDelta``, minus snapshots). The broker core asks it who leads what,
and answers ``Metadata`` requests from it. It never talks to the network or the disk.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from brokerlab.errors import ErrorCode
from brokerlab.ids import TopicPartition
from brokerlab.v1 import broker_pb2, common_pb2, metadata_pb2

NO_LEADER = -1


@dataclass(slots=True)
class BrokerImage:
    broker_id: int
    broker_epoch: int
    host: str
    port: int
    rack: str = ""
    incarnation_id: str = ""
    fenced: bool = True
    # The optional external listener ("" / 0: none), for clients outside the brokers' network.
    external_host: str = ""
    external_port: int = 0

    def describe(self) -> common_pb2.BrokerDescription:
        return common_pb2.BrokerDescription(
            broker_id=self.broker_id,
            endpoint=common_pb2.Endpoint(host=self.host, port=self.port),
            rack=self.rack,
            broker_epoch=self.broker_epoch,
            fenced=self.fenced,
        )


@dataclass(slots=True)
class PartitionImage:
    topic: str
    partition: int
    replicas: list[int]
    isr: list[int]
    leader_id: int
    leader_epoch: int
    partition_epoch: int

    @property
    def topic_partition(self) -> TopicPartition:
        return TopicPartition(self.topic, self.partition)


@dataclass(slots=True)
class TopicImage:
    name: str
    topic_id: str
    configs: dict[str, str] = field(default_factory=dict)
    partitions: dict[int, PartitionImage] = field(default_factory=dict)

    @property
    def is_internal(self) -> bool:
        return self.name.startswith("__")


class MetadataImage:
    """Brokers, topics (by name and id) and partitions, as of ``last_applied_offset``."""

    def __init__(self) -> None:
        self.brokers: dict[int, BrokerImage] = {}
        self.topics_by_name: dict[str, TopicImage] = {}
        self.topics_by_id: dict[str, TopicImage] = {}
        # Journal offset of the last record replayed; -1 before the first.
        self.last_applied_offset = -1

    # ------------------------------------------------------------------ replay

    def replay(self, record: metadata_pb2.MetadataRecord, offset: int | None = None) -> str | None:
        """Apply one record; ``offset`` is its journal offset (default: the next one).

        Returns the record kind (the oneof name) so callers can react, or None when empty.
        Records about unknown topics or brokers are ignored: replay never raises on content.
        """
        self.last_applied_offset = self.last_applied_offset + 1 if offset is None else offset
        kind = record.WhichOneof("record")
        if kind is not None:
            getattr(self, f"_replay_{kind}")(getattr(record, kind))
        return kind

    def _replay_register_broker(self, rec: metadata_pb2.RegisterBrokerRecord) -> None:
        # A new registration (new incarnation) replaces the old one, with its new broker epoch.
        self.brokers[rec.broker_id] = BrokerImage(
            rec.broker_id,
            rec.broker_epoch,
            rec.endpoint.host,
            rec.endpoint.port,
            rec.rack,
            rec.incarnation_id,
            rec.fenced,
            rec.external_endpoint.host,
            rec.external_endpoint.port,
        )

    def _set_fenced(self, broker_id: int, broker_epoch: int, fenced: bool) -> None:
        broker = self.brokers.get(broker_id)
        # A record for an older registration must not fence or unfence the newer one.
        if broker is not None and (broker_epoch in (0, broker.broker_epoch)):
            broker.fenced = fenced

    def _replay_fence_broker(self, rec: metadata_pb2.FenceBrokerRecord) -> None:
        self._set_fenced(rec.broker_id, rec.broker_epoch, True)

    def _replay_unfence_broker(self, rec: metadata_pb2.UnfenceBrokerRecord) -> None:
        self._set_fenced(rec.broker_id, rec.broker_epoch, False)

    def _replay_topic(self, rec: metadata_pb2.TopicRecord) -> None:
        topic = TopicImage(rec.name, rec.topic_id, {c.name: c.value for c in rec.configs})
        self.topics_by_name[rec.name] = topic
        self.topics_by_id[rec.topic_id] = topic

    def _replay_partition(self, rec: metadata_pb2.PartitionRecord) -> None:
        topic = self.topics_by_id.get(rec.topic_id)
        if topic is None:
            return
        topic.partitions[rec.partition] = PartitionImage(
            topic.name,
            rec.partition,
            list(rec.replicas),
            list(rec.isr),
            rec.leader_id,
            rec.leader_epoch,
            rec.partition_epoch,
        )

    def _replay_partition_change(self, rec: metadata_pb2.PartitionChangeRecord) -> None:
        topic = self.topics_by_id.get(rec.topic_id)
        partition = topic.partitions.get(rec.partition) if topic is not None else None
        if partition is None:
            return
        # Unset lists mean "unchanged"; the *_changed flags say when an empty list is meant.
        if rec.replicas_changed or rec.replicas:
            partition.replicas = list(rec.replicas)
        if rec.isr_changed or rec.isr:
            partition.isr = list(rec.isr)
        if rec.leader_changed:
            partition.leader_id = rec.leader_id
        # The controller states the new epochs; if it leaves them at 0, bump them as Kafka's
        # PartitionChangeRecord replay does (leader epoch only when the leader changed).
        if rec.leader_epoch > 0:
            partition.leader_epoch = rec.leader_epoch
        elif rec.leader_changed:
            partition.leader_epoch += 1
        partition.partition_epoch = rec.partition_epoch if rec.partition_epoch > 0 else partition.partition_epoch + 1

    def _replay_remove_topic(self, rec: metadata_pb2.RemoveTopicRecord) -> None:
        topic = self.topics_by_id.pop(rec.topic_id, None)
        if topic is not None and self.topics_by_name.get(topic.name) is topic:
            del self.topics_by_name[topic.name]

    def _replay_producer_ids(self, rec: metadata_pb2.ProducerIdsRecord) -> None:
        pass  # producer id blocks matter to idempotence (a later issue), not to the image

    # ------------------------------------------------------------------ queries

    def broker(self, broker_id: int) -> BrokerImage | None:
        return self.brokers.get(broker_id)

    def live_brokers(self) -> list[BrokerImage]:
        return [b for _, b in sorted(self.brokers.items()) if not b.fenced]

    def topic(self, name: str) -> TopicImage | None:
        return self.topics_by_name.get(name)

    def topic_by_id(self, topic_id: str) -> TopicImage | None:
        return self.topics_by_id.get(topic_id)

    def partition(self, tp: TopicPartition) -> PartitionImage | None:
        topic = self.topics_by_name.get(tp.topic)
        return topic.partitions.get(tp.partition) if topic is not None else None

    def partitions(self) -> list[PartitionImage]:
        return [
            p
            for _, topic in sorted(self.topics_by_name.items())
            for _, p in sorted(topic.partitions.items())
        ]

    def replicas_of(self, broker_id: int) -> list[PartitionImage]:
        """Partitions that ``broker_id`` holds a replica of."""
        return [p for p in self.partitions() if broker_id in p.replicas]

    def leader_of(self, tp: TopicPartition) -> int:
        partition = self.partition(tp)
        return partition.leader_id if partition is not None else NO_LEADER

    # ------------------------------------------------------------------ responses

    def metadata_response(
        self,
        topics: list[str],
        *,
        controller_id: int,
        controller_endpoint: tuple[str, int] | None,
        cluster_id: str = "",
    ) -> broker_pb2.MetadataResponse:
        """Kafka's MetadataResponse: unfenced brokers, and every (or each named) topic.

        A named topic that does not exist gets UNKNOWN_TOPIC_OR_PARTITION; a partition without
        a leader LEADER_NOT_AVAILABLE. ``offline_replicas`` are replicas that are fenced or gone.
        """
        response = broker_pb2.MetadataResponse(
            brokers=[b.describe() for b in self.live_brokers()],
            controller_id=controller_id,
            cluster_id=cluster_id,
            metadata_offset=self.last_applied_offset,
        )
        if controller_endpoint is not None:
            host, port = controller_endpoint
            response.controller_endpoint.CopyFrom(common_pb2.Endpoint(host=host, port=port))
        names = list(topics) if topics else sorted(self.topics_by_name)
        for name in names:
            topic = self.topics_by_name.get(name)
            if topic is None:
                response.topics.add(
                    name=name,
                    error_code=ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
                    error_message=f"topic {name!r} does not exist",
                )
                continue
            out = response.topics.add(name=name, topic_id=topic.topic_id, is_internal=topic.is_internal)
            for _, p in sorted(topic.partitions.items()):
                offline = [r for r in p.replicas if r not in self.brokers or self.brokers[r].fenced]
                out.partitions.add(
                    partition=p.partition,
                    error_code=ErrorCode.LEADER_NOT_AVAILABLE if p.leader_id == NO_LEADER else ErrorCode.NONE,
                    leader_id=p.leader_id,
                    leader_epoch=p.leader_epoch,
                    replicas=p.replicas,
                    isr=p.isr,
                    offline_replicas=offline,
                    partition_epoch=p.partition_epoch,
                )
        return response
