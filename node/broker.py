"""BrokerCore: the broker as a sans-IO state machine (a thin router).

It follows the controller's metadata journal (through ``BrokerLifecycle``), keeps a
``MetadataImage``, creates and deletes local partition logs as the image says, and turns the
image's leaders and followers into roles for the ``ReplicaManager`` (node/replication/), which
serves Produce, Fetch, ListOffsets and OffsetForLeaderEpoch and replicates. Metadata and
DescribeLogDirs are answered here. Disk only through the LogManager; time only as ``now_ms``;
the network only as envelopes in ``Effects``.

Controlled shutdown: ``begin_controlled_shutdown`` (SIGTERM) makes the heartbeats ask the
controller to move our leaderships away; ``controlled_shutdown_complete`` turns true (and
``ControlledShutdownCompleted`` is logged) once the controller said ``should_shut_down`` and
our image shows no partition that we lead while another live ISR member could take it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from brokerlab.errors import ErrorCode
from brokerlab.ids import TopicPartition, broker_node
from brokerlab.sansio import BlockingJob, Effects, Envelope, RequestIds
from brokerlab.v1 import broker_pb2, metadata_pb2
from node.config import BrokerConfig, log_topic_configs
from node.group.broker_port import BrokerGroupPort
from node.group.host import GroupCoordinatorHost
from node.lifecycle import BrokerLifecycle, BrokerState
from node.metadata_image import MetadataImage
from node.producer_ids import ProducerIdManager
from node.purgatory import Purgatory
from node.replication.replica_manager import ReplicaManager
from node.response_delay import DelayedProduceAnswers

if TYPE_CHECKING:  # typing only: the core gets its LogManager from whoever builds it
    from node.log.manager import LogManager
    from node.log.partition_log import PartitionLog


@dataclass(slots=True)
class LocalReplica:
    """What this broker last acted on for a partition it holds a replica of."""

    is_leader: bool
    leader_id: int
    leader_epoch: int


class BrokerCore:
    def __init__(
        self,
        config: BrokerConfig,
        log_manager: LogManager,
        endpoint: tuple[str, int],
        rack: str = "",
        incarnation_id: str = "",
    ) -> None:
        self.config = config
        self.broker_id = config.broker_id
        self.node = broker_node(config.broker_id)
        self.log_manager = log_manager
        self.image = MetadataImage()
        # One request id space for every call this broker makes (controller and peers).
        ids = RequestIds()
        self.lifecycle = BrokerLifecycle(config, endpoint, rack, incarnation_id, ids)
        self.replica_manager = ReplicaManager(
            config, log_manager, lambda: self.image, ids,
            broker_epoch=lambda: self.lifecycle.broker_epoch,
            serving=lambda: self.lifecycle.initial_catch_up_done,
        )
        # InitProducerId: producer ids from blocks the controller allocates (KIP-730).
        self.producer_ids = ProducerIdManager(config, ids, lambda: self.lifecycle.broker_epoch)
        # Test-only fault knob test.produce.response.delay.ms: a broker that acknowledges slowly.
        self.delayed_answers = (DelayedProduceAnswers(config.test_produce_response_delay_ms,
                                                      config.test_produce_response_delay_every)
                                if config.test_produce_response_delay_ms > 0 else None)
        self.replicas: dict[TopicPartition, LocalReplica] = {}
        # Partitions the image changed before the broker may act on it (initial catch-up,
        # see node/lifecycle.py); synced all at once when it may.
        self._unsynced: set[TopicPartition] = set()
        self._shutdown_started_ms: int | None = None
        self.controlled_shutdown_complete = False
        rm = self.replica_manager
        self._handlers: dict[str, Callable[[Envelope, int, Effects], None]] = {
            "Produce": self.handle_produce,
            "Fetch": self.handle_fetch,
            "ListOffsets": rm.handle_list_offsets,
            "OffsetForLeaderEpoch": rm.handle_offset_for_leader_epoch,
            "Metadata": self.handle_metadata,
            "DescribeLogDirs": self.handle_describe_log_dirs,
            "InitProducerId": self.producer_ids.handle_init_producer_id,
        }
        # Answers to the lifecycle's calls (it tracks which one is the latest of each kind).
        self._lifecycle_handlers: dict[str, Callable[[Envelope, int, Effects], None]] = {
            "RegisterBroker": self.on_register_broker_response,
            "BrokerHeartbeat": self.on_broker_heartbeat_response,
            "FetchMetadataRecords": self.on_fetch_metadata_records_response,
            "DescribeCluster": self.lifecycle.on_describe_cluster_response,
        }
        # Answers to replication calls (their owners match request ids themselves).
        self._replication_handlers: dict[str, Callable[[Envelope, int, Effects], None]] = {
            "Fetch": rm.fetcher.on_fetch_response,
            "OffsetForLeaderEpoch": rm.fetcher.on_offset_for_leader_epoch_response,
            "AlterPartition": rm.on_alter_partition_response,
            "AllocateProducerIds": self.producer_ids.on_allocate_producer_ids_response,
        }
        # Consumer groups (node/group/): GroupService requests, __consumer_offsets loads and writes.
        self.groups = GroupCoordinatorHost(config.group_config, BrokerGroupPort(self), incarnation_id)
        self._handlers.update(self.groups.handlers())

    # ------------------------------------------------------------------ core contract

    @property
    def is_ready(self) -> bool:
        """Registered, unfenced and caught up with the metadata journal."""
        return self.lifecycle.is_ready

    @property
    def state(self) -> BrokerState:
        return self.lifecycle.state

    @property
    def fetches(self) -> Purgatory[Envelope]:
        """Parked Fetch long-polls (consumers and followers)."""
        return self.replica_manager.fetches

    def step(self, envelope: Envelope, now_ms: int) -> Effects:
        fx = Effects()
        if envelope.is_response:
            handler = self._lifecycle_handlers.get(envelope.rpc)
            if handler is not None:
                if self.lifecycle.accepts(envelope):
                    handler(envelope, now_ms, fx)
            else:
                handler = self._replication_handlers.get(envelope.rpc)
                if handler is not None:
                    handler(envelope, now_ms, fx)
                elif self.groups.owns(envelope):
                    self.groups.on_response(envelope, now_ms, fx)
        else:
            handler = self._handlers.get(envelope.rpc)
            if handler is None:
                raise ValueError(f"broker does not serve rpc {envelope.rpc!r}")
            handler(envelope, now_ms, fx)
        self.lifecycle.maybe_send(now_ms, self.image.last_applied_offset, fx)
        self.replica_manager.maybe_send(now_ms, fx)
        self.producer_ids.maybe_send(now_ms, fx)
        self.groups.after(now_ms, fx)  # leadership of __consumer_offsets, internal writes' answers
        if self.delayed_answers is not None:
            self.delayed_answers.hold(fx, now_ms)
        return fx

    def tick(self, now_ms: int) -> Effects:
        fx = Effects()
        self.lifecycle.maybe_send(now_ms, self.image.last_applied_offset, fx)
        self.replica_manager.tick(now_ms, fx)
        self.producer_ids.tick(now_ms, fx)
        self.groups.tick(now_ms, fx)
        # Rolled segments' fsyncs and periodic checkpoint writes leave as blocking jobs: the
        # driver runs them off the event loop.
        fx.events.extend(self.log_manager.tick(now_ms, fx.blocking))
        if self.delayed_answers is not None:
            self.delayed_answers.hold(fx, now_ms)  # acks=all answers released by this tick
            self.delayed_answers.release(now_ms, fx)
        return fx

    def on_blocking_done(self, job: BlockingJob, now_ms: int) -> Effects:
        """A job from ``Effects.blocking`` ran (brokerlab/sansio.py): a roll flush, which may
        advance the log's recovery point, or a periodic checkpoint write."""
        fx = Effects()
        fx.events.extend(self.log_manager.on_blocking_done(job, now_ms))
        return fx

    def next_deadline_ms(self) -> int | None:
        # Called after every step (driver contract): plain comparisons, no temporary lists.
        due = self.lifecycle.next_deadline_ms()
        for d in (self.replica_manager.next_deadline_ms(), self.log_manager.next_deadline_ms(),
                  self.groups.next_deadline_ms(), self.producer_ids.next_deadline_ms()):
            if d is not None and (due is None or d < due):
                due = d
        if self.delayed_answers is not None:
            d = self.delayed_answers.next_deadline_ms()
            if d is not None and (due is None or d < due):
                due = d
        return due

    # ------------------------------------------------------------------ controlled shutdown

    def begin_controlled_shutdown(self, now_ms: int) -> Effects:
        """SIGTERM: ask the controller to move our leaderships away before we stop."""
        fx = Effects()
        if self._shutdown_started_ms is None:
            self._shutdown_started_ms = now_ms
            fx.event("ControlledShutdownStarted", broker_epoch=self.lifecycle.broker_epoch,
                     leaders=sum(1 for r in self.replicas.values() if r.is_leader))
            self.lifecycle.begin_controlled_shutdown(now_ms, fx)
            self.lifecycle.maybe_send(now_ms, self.image.last_applied_offset, fx)
            self._maybe_finish_shutdown(now_ms, fx)
        return fx

    def on_broker_heartbeat_response(self, envelope: Envelope, now_ms: int, fx: Effects) -> None:
        self.lifecycle.on_broker_heartbeat_response(envelope, now_ms, fx)
        self._maybe_finish_shutdown(now_ms, fx)

    def _maybe_finish_shutdown(self, now_ms: int, fx: Effects) -> None:
        if self.controlled_shutdown_complete or self.lifecycle.state is not BrokerState.SHUTTING_DOWN:
            return
        if self.lifecycle.broker_epoch >= 0 and self._leads_partitions_others_could_take():
            return  # the controller's records moving them are on their way to our image
        self.controlled_shutdown_complete = True
        started = self._shutdown_started_ms if self._shutdown_started_ms is not None else now_ms
        fx.event("ControlledShutdownCompleted", duration_ms=now_ms - started,
                 metadata_offset=self.image.last_applied_offset)

    def _leads_partitions_others_could_take(self) -> bool:
        image = self.image
        for partition in image.partitions():
            if partition.leader_id != self.broker_id:
                continue
            for broker_id in partition.isr:
                broker = image.broker(broker_id)
                if broker_id != self.broker_id and broker is not None and not broker.fenced:
                    return True
        return False

    # ------------------------------------------------------------------ metadata

    def on_fetch_metadata_records_response(self, envelope: Envelope, now_ms: int, fx: Effects) -> None:
        response = envelope.message
        if response is not None and response.error_code == ErrorCode.OFFSET_OUT_OF_RANGE:
            # We are ahead of the controller's journal (it was wiped or lost a tail): rebuild the
            # image from offset 0. Local logs stay; replaying the journal re-syncs them.
            fx.event("MetadataImageReset", last_applied_offset=self.image.last_applied_offset,
                     journal_end_offset=response.end_offset)
            self.image = MetadataImage()
        base_offset, records = self.lifecycle.on_fetch_metadata_records_response(envelope, now_ms, fx)
        applied = 0
        touched: set[TopicPartition] = set()
        for index, record in enumerate(records):
            offset = base_offset + index
            if offset <= self.image.last_applied_offset:
                continue  # already applied (a retried fetch)
            if offset != self.image.last_applied_offset + 1:
                break  # a gap: refetch from where we are
            touched.update(self._replay(record, offset))
            applied += 1
        if applied:
            fx.event("MetadataApplied", offset=self.image.last_applied_offset, records=applied,
                     end_offset=self.lifecycle.journal_end_offset)
        # Act on the image as it stands after the whole answer, not record by record, and not
        # before it holds our own registration: a restarted broker replaying the journal must
        # not "lead" at its previous incarnation's epoch.
        self._unsynced.update(touched)
        self._metadata_applied(now_ms, fx)
        self._maybe_finish_shutdown(now_ms, fx)

    def on_register_broker_response(self, envelope: Envelope, now_ms: int, fx: Effects) -> None:
        self.lifecycle.on_register_broker_response(envelope, now_ms, fx)
        # Our registration record may already be in the image (the metadata answer came first).
        self._metadata_applied(now_ms, fx)

    def _metadata_applied(self, now_ms: int, fx: Effects) -> None:
        last_applied_offset = self.image.last_applied_offset
        if self._unsynced and self.lifecycle.may_act_on_image(last_applied_offset):
            unsynced, self._unsynced = self._unsynced, set()
            for tp in sorted(unsynced):
                self._sync_replica(tp, now_ms, fx)
        self.lifecycle.metadata_applied(last_applied_offset, self.image.broker(self.broker_id), now_ms, fx)

    def _replay(self, record: metadata_pb2.MetadataRecord, offset: int) -> list[TopicPartition]:
        """Replay one record into the image; returns the partitions whose replica may change."""
        kind = record.WhichOneof("record")
        if kind == "remove_topic":
            removed = self.image.topic_by_id(record.remove_topic.topic_id)
            self.image.replay(record, offset)
            return [TopicPartition(removed.name, p) for p in removed.partitions] if removed else []
        self.image.replay(record, offset)
        if kind in ("partition", "partition_change"):
            change = getattr(record, kind)
            topic = self.image.topic_by_id(change.topic_id)
            if topic is not None and change.partition in topic.partitions:
                return [TopicPartition(topic.name, change.partition)]
        return []

    def _sync_replica(self, tp: TopicPartition, now_ms: int, fx: Effects) -> None:
        """Make the local replica match the image: create or delete its log, take or give up leadership."""
        topic = self.image.topic(tp.topic)
        partition = topic.partitions.get(tp.partition) if topic is not None else None
        if partition is None:
            self._delete_replica(tp, fx, reason="topic deleted")
            return
        if self.broker_id not in partition.replicas:
            self._delete_replica(tp, fx, reason="no longer a replica")
            return
        before = self.log_manager.get(tp)
        log = self._create_log(tp, topic.topic_id, topic.configs, now_ms, fx)
        previous = self.replicas.get(tp)
        if log is not before:  # new, or a deleted topic's log of the same name replaced
            previous = None
            fx.event("PartitionCreated", topic=tp.topic, partition=tp.partition, topic_id=topic.topic_id,
                     replicas=partition.replicas, leader_id=partition.leader_id, replaced=before is not None)
        is_leader = partition.leader_id == self.broker_id
        self.replicas[tp] = LocalReplica(is_leader, partition.leader_id, partition.leader_epoch)
        if previous is not None and (previous.is_leader, previous.leader_id, previous.leader_epoch) == (
            is_leader, partition.leader_id, partition.leader_epoch
        ):
            # An ISR or replica-set change that does not touch this broker's role.
            self.replica_manager.update_partition(tp, partition, now_ms, fx)
        elif is_leader:
            self.replica_manager.become_leader(tp, log, partition, now_ms, fx)
        else:
            self.replica_manager.become_follower(tp, log, partition, now_ms, fx)

    def _create_log(self, tp: TopicPartition, topic_id: str, topic_configs: dict[str, str], now_ms: int,
                    fx: Effects) -> PartitionLog:
        """The partition's log, created if missing (or replacing a deleted topic's log of the same
        name, which the log manager recognises by the topic id); topic configs re-applied."""
        try:
            return self.log_manager.get_or_create(tp, now_ms, log_topic_configs(topic_configs), topic_id=topic_id)
        except ValueError as exc:
            # A topic config the log does not understand must not stop the metadata follower:
            # keep the broker's defaults for this partition and say so.
            fx.event("PartitionConfigRejected", topic=tp.topic, partition=tp.partition, reason=str(exc))
            return self.log_manager.get_or_create(tp, now_ms, None, topic_id=topic_id)

    def _delete_replica(self, tp: TopicPartition, fx: Effects, reason: str) -> None:
        self.replicas.pop(tp, None)
        self.replica_manager.stop_replica(tp, fx)
        if self.log_manager.get(tp) is not None:
            self.log_manager.delete(tp)
            fx.event("PartitionDeleted", topic=tp.topic, partition=tp.partition, reason=reason)


    # ------------------------------------------------------------------ requests

    def handle_produce(self, envelope: Envelope, now_ms: int, fx: Effects) -> None:
        """The Produce path (also for the broker's own internal writes, e.g. group commits):
        an acks=all answer may come in a later step's Effects, once the high watermark passes."""
        self.replica_manager.handle_produce(envelope, now_ms, fx)

    def handle_fetch(self, envelope: Envelope, now_ms: int, fx: Effects) -> None:
        self.replica_manager.handle_fetch(envelope, now_ms, fx)


    def handle_metadata(self, envelope: Envelope, now_ms: int, fx: Effects) -> None:
        request: broker_pb2.MetadataRequest = envelope.message
        fx.reply(envelope.reply(self.image.metadata_response(
            list(request.topics),
            controller_id=self.lifecycle.controller_id,
            controller_endpoint=self.config.controller_endpoint,
            cluster_id=self.lifecycle.cluster_id,
        )))

    def handle_describe_log_dirs(self, envelope: Envelope, now_ms: int, fx: Effects) -> None:
        request: broker_pb2.DescribeLogDirsRequest = envelope.message
        wanted = set(request.topics)
        response = broker_pb2.DescribeLogDirsResponse(broker_id=self.broker_id, log_dir=self.config.log_dirs)
        for tp in sorted(self.log_manager.partitions()):
            if wanted and tp.topic not in wanted:
                continue
            log = self.log_manager.get(tp)
            if log is None:
                continue
            replica = self.replicas.get(tp)
            response.replicas.add(
                topic=tp.topic,
                partition=tp.partition,
                size_bytes=log.size_bytes,
                log_start_offset=log.log_start_offset,
                log_end_offset=log.log_end_offset,
                high_watermark=log.high_watermark,
                is_leader=replica.is_leader if replica else False,
                leader_epoch=replica.leader_epoch if replica else -1,
                segment_count=log.segment_count,
            )
        fx.reply(envelope.reply(response))
