"""BrokerCore: the broker as a sans-IO state machine.

It follows the controller's metadata journal (through ``BrokerLifecycle``), keeps a
``MetadataImage``, creates and deletes local partition logs as the image says, and serves
Produce, Fetch, ListOffsets, Metadata and DescribeLogDirs. Disk only through the LogManager;
time only as ``now_ms``; the network only as envelopes in ``Effects``.

Before replication (issue 3) a leader is the only copy that gets written: it advances the high
watermark to its log end offset after every append and when it becomes leader. That is a lie
for replication factor > 1 (nothing is replicated yet) and is marked ``TODO(issue 3)`` below.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from brokerlab.errors import ErrorCode
from brokerlab.ids import TopicPartition, broker_node
from brokerlab.sansio import Effects, Envelope, RequestIds
from brokerlab.v1 import broker_pb2, metadata_pb2
from node.config import BrokerConfig, log_topic_configs
from node.lifecycle import BrokerLifecycle, BrokerState
from node.log.errors import CorruptBatchError, LogError, OffsetOutOfRangeError, error_code_for
from node.metadata_image import MetadataImage, PartitionImage
from node.purgatory import Purgatory

if TYPE_CHECKING:  # typing only: the core gets its LogManager from whoever builds it
    from node.log.manager import LogManager
    from node.log.partition_log import PartitionLog

ACKS = (0, 1, -1)
EARLIEST_TIMESTAMP = -2
LATEST_TIMESTAMP = -1
# A fetch with max_bytes <= 0 is bounded by what one gRPC message may carry.
FETCH_MAX_BYTES_CAP = 60 * 1024 * 1024


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
        self.lifecycle = BrokerLifecycle(config, endpoint, rack, incarnation_id, RequestIds())
        self.replicas: dict[TopicPartition, LocalReplica] = {}
        self.fetches: Purgatory[Envelope] = Purgatory()
        self._handlers: dict[str, Callable[[Envelope, int, Effects], None]] = {
            "Produce": self.handle_produce,
            "Fetch": self.handle_fetch,
            "ListOffsets": self.handle_list_offsets,
            "Metadata": self.handle_metadata,
            "DescribeLogDirs": self.handle_describe_log_dirs,
        }
        self._response_handlers: dict[str, Callable[[Envelope, int, Effects], None]] = {
            "RegisterBroker": self.lifecycle.on_register_broker_response,
            "BrokerHeartbeat": self.lifecycle.on_broker_heartbeat_response,
            "FetchMetadataRecords": self.on_fetch_metadata_records_response,
            "DescribeCluster": self.lifecycle.on_describe_cluster_response,
        }

    # ------------------------------------------------------------------ core contract

    @property
    def is_ready(self) -> bool:
        """Registered, unfenced and caught up with the metadata journal."""
        return self.lifecycle.is_ready

    @property
    def state(self) -> BrokerState:
        return self.lifecycle.state

    def step(self, envelope: Envelope, now_ms: int) -> Effects:
        fx = Effects()
        if envelope.is_response:
            handler = self._response_handlers.get(envelope.rpc)
            if handler is not None and self.lifecycle.accepts(envelope):
                handler(envelope, now_ms, fx)
        else:
            handler = self._handlers.get(envelope.rpc)
            if handler is None:
                raise ValueError(f"broker does not serve rpc {envelope.rpc!r}")
            handler(envelope, now_ms, fx)
        self.lifecycle.maybe_send(now_ms, self.image.last_applied_offset, fx)
        return fx

    def tick(self, now_ms: int) -> Effects:
        fx = Effects()
        self.lifecycle.maybe_send(now_ms, self.image.last_applied_offset, fx)
        for parked in self.fetches.pop_expired(now_ms):
            response, _, _ = self._read_fetch(parked.operation.message)
            fx.reply(parked.operation.reply(response))
        fx.events.extend(self.log_manager.tick(now_ms))
        return fx

    def next_deadline_ms(self) -> int | None:
        due = [
            d
            for d in (
                self.lifecycle.next_deadline_ms(),
                self.fetches.next_deadline_ms(),
                self.log_manager.next_deadline_ms(),
            )
            if d is not None
        ]
        return min(due) if due else None

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
        # Act on the image as it stands after the whole answer, not record by record: a
        # restarted broker replaying the journal must not briefly "lead" with an old epoch.
        for tp in sorted(touched):
            self._sync_replica(tp, now_ms, fx)
        if touched:
            self._try_complete_fetches(touched, fx)
        self.lifecycle.metadata_applied(self.image.last_applied_offset, self.image.broker(self.broker_id), now_ms, fx)

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
            return  # an ISR or replica-set change that does not touch this broker's role
        if is_leader:
            self._become_leader(tp, log, partition, fx)
        else:
            # TODO(issue 3): truncate by leader epoch (KIP-101) and start fetching from the leader.
            fx.event("BecameFollower", topic=tp.topic, partition=tp.partition,
                     leader_id=partition.leader_id, leader_epoch=partition.leader_epoch)

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

    def _become_leader(self, tp: TopicPartition, log: PartitionLog, partition: PartitionImage, fx: Effects) -> None:
        # TODO(issue 3): pre-replication behaviour: the leader's whole log counts as committed.
        # With replication the high watermark waits for the ISR instead.
        log.high_watermark = log.log_end_offset
        fx.event("BecameLeader", topic=tp.topic, partition=tp.partition, leader_epoch=partition.leader_epoch,
                 log_end_offset=log.log_end_offset, isr=partition.isr)

    def _delete_replica(self, tp: TopicPartition, fx: Effects, reason: str) -> None:
        self.replicas.pop(tp, None)
        if self.log_manager.get(tp) is not None:
            self.log_manager.delete(tp)
            fx.event("PartitionDeleted", topic=tp.topic, partition=tp.partition, reason=reason)

    # ------------------------------------------------------------------ requests

    def _leader_log(self, topic: str, partition: int) -> tuple[PartitionLog | None, PartitionImage | None, ErrorCode, str]:
        """The local log of a partition this broker leads, or the error to answer with."""
        if not self.lifecycle.initial_catch_up_done:
            # Kafka serves nothing before its first catch-up: an old image would name old leaders.
            return None, None, ErrorCode.NOT_LEADER_OR_FOLLOWER, (
                f"broker {self.broker_id} is still catching up with the metadata journal"
            )
        image = self.image.partition(TopicPartition(topic, partition))
        if image is None:
            return None, None, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"{topic}-{partition} does not exist"
        if image.leader_id != self.broker_id:
            return None, image, ErrorCode.NOT_LEADER_OR_FOLLOWER, (
                f"broker {self.broker_id} is not the leader of {topic}-{partition} (leader: {image.leader_id})"
            )
        log = self.log_manager.get(TopicPartition(topic, partition))
        if log is None:
            return None, image, ErrorCode.NOT_LEADER_OR_FOLLOWER, f"{topic}-{partition} has no local log yet"
        return log, image, ErrorCode.NONE, ""

    def handle_produce(self, envelope: Envelope, now_ms: int, fx: Effects) -> None:
        request: broker_pb2.ProduceRequest = envelope.message
        response = broker_pb2.ProduceResponse()
        appended: list[TopicPartition] = []
        for data in request.partitions:
            out = response.partitions.add(topic=data.topic, partition=data.partition, base_offset=-1,
                                          log_append_time_ms=-1, log_start_offset=-1)
            if request.acks not in ACKS:
                out.error_code = ErrorCode.INVALID_REQUIRED_ACKS
                out.error_message = f"acks must be 0, 1 or -1 (all), got {request.acks}"
                continue
            log, partition, error, message = self._leader_log(data.topic, data.partition)
            if log is None:
                out.error_code, out.error_message = error, message
                continue
            out.log_start_offset = log.log_start_offset
            if request.acks == -1:
                topic = self.image.topic(data.topic)
                min_isr = self.config.topic_min_insync_replicas(topic.configs if topic else {})
                if len(partition.isr) < min_isr:
                    out.error_code = ErrorCode.NOT_ENOUGH_REPLICAS
                    out.error_message = f"ISR {list(partition.isr)} is smaller than min.insync.replicas={min_isr}"
                    continue
            try:
                info = log.append_as_leader(data.records, partition.leader_epoch, now_ms)
            except CorruptBatchError as exc:
                out.error_code, out.error_message = ErrorCode.CORRUPT_MESSAGE, exc.reason
                continue
            except (LogError, OSError) as exc:  # MESSAGE_TOO_LARGE, FENCED_LEADER_EPOCH, KAFKA_STORAGE_ERROR
                out.error_code, out.error_message = error_code_for(exc), str(exc)
                continue
            # TODO(issue 3): pre-replication: the leader commits on its own append. acks=all then
            # waits in a purgatory until the ISR's minimum log end offset passes the batch.
            log.high_watermark = log.log_end_offset
            out.base_offset = info.base_offset
            # -1: records keep their CreateTime (Kafka answers a time only for LogAppendTime topics).
            out.log_append_time_ms = -1
            out.log_start_offset = log.log_start_offset
            appended.append(TopicPartition(data.topic, data.partition))
        # acks=0 still gets an envelope back: the gRPC adapter has a caller waiting.
        fx.reply(envelope.reply(response))
        if appended:
            fx.events.extend(self.log_manager.drain_events())  # segment rolls done by the appends
            self._try_complete_fetches(appended, fx)

    def handle_fetch(self, envelope: Envelope, now_ms: int, fx: Effects) -> None:
        request: broker_pb2.FetchRequest = envelope.message
        response, total_bytes, has_error = self._read_fetch(request)
        if request.max_wait_ms <= 0 or total_bytes >= request.min_bytes or has_error or not request.partitions:
            fx.reply(envelope.reply(response))
            return
        watched = [TopicPartition(p.topic, p.partition) for p in request.partitions]
        self.fetches.park((envelope.src, envelope.request_id), envelope, now_ms + request.max_wait_ms, watched)

    def _try_complete_fetches(self, tps, fx: Effects) -> None:
        """Answer parked fetches on ``tps`` that now have min_bytes to return (or an error)."""
        for parked in self.fetches.watching(tps):
            request = parked.operation.message
            response, total_bytes, has_error = self._read_fetch(request)
            if total_bytes >= request.min_bytes or has_error:
                self.fetches.remove(parked.key)
                fx.reply(parked.operation.reply(response))

    def _read_fetch(self, request: broker_pb2.FetchRequest) -> tuple[broker_pb2.FetchResponse, int, bool]:
        """Read every partition of a fetch: ``(response, bytes of records, any partition error)``.

        Kafka's limits: ``max_bytes`` for the whole answer and ``partition_max_bytes`` per
        partition, except that the first partition with data returns at least one whole batch
        so a consumer never gets stuck behind a batch larger than its limits.
        """
        response = broker_pb2.FetchResponse()
        budget = request.max_bytes if request.max_bytes > 0 else FETCH_MAX_BYTES_CAP
        total = 0
        has_error = False
        # A follower (replica_id >= 0) may read up to the log end; consumers up to the high watermark.
        is_follower = request.replica_id >= 0
        for fetch in request.partitions:
            out = response.partitions.add(topic=fetch.topic, partition=fetch.partition,
                                          high_watermark=-1, log_start_offset=-1, log_end_offset=-1)
            log, _, error, message = self._leader_log(fetch.topic, fetch.partition)
            if log is None:
                out.error_code, out.error_message = error, message
                has_error = True
                continue
            out.high_watermark = log.high_watermark
            out.log_start_offset = log.log_start_offset
            out.log_end_offset = log.log_end_offset
            limit = min(fetch.partition_max_bytes if fetch.partition_max_bytes > 0 else budget, budget)
            if total > 0 and limit <= 0:
                continue
            max_offset = None if is_follower else log.high_watermark
            try:
                records = log.read(fetch.fetch_offset, max(limit, 1), max_offset)
            except OffsetOutOfRangeError:
                out.error_code = ErrorCode.OFFSET_OUT_OF_RANGE
                out.error_message = (
                    f"offset {fetch.fetch_offset} is outside [{log.log_start_offset}, {log.log_end_offset}]"
                )
                has_error = True
                continue
            if total > 0 and len(records) > limit:
                continue  # only the first data may exceed the limits
            out.records = records
            total += len(records)
            budget -= len(records)
        return response, total, has_error

    def handle_list_offsets(self, envelope: Envelope, now_ms: int, fx: Effects) -> None:
        request: broker_pb2.ListOffsetsRequest = envelope.message
        response = broker_pb2.ListOffsetsResponse()
        is_follower = request.replica_id >= 0
        for query in request.partitions:
            out = response.partitions.add(topic=query.topic, partition=query.partition, offset=-1,
                                           timestamp_ms=-1, leader_epoch=-1)
            log, partition, error, message = self._leader_log(query.topic, query.partition)
            if log is None:
                out.error_code, out.error_message = error, message
                continue
            out.leader_epoch = partition.leader_epoch
            visible_end = log.log_end_offset if is_follower else log.high_watermark
            if query.timestamp_ms == EARLIEST_TIMESTAMP:
                out.offset = log.log_start_offset
            elif query.timestamp_ms == LATEST_TIMESTAMP:
                out.offset = visible_end
            elif query.timestamp_ms < 0:
                out.error_code = ErrorCode.INVALID_REQUEST
                out.error_message = f"unsupported special timestamp {query.timestamp_ms}"
            else:
                # Only committed records count for consumers (Kafka's READ_UNCOMMITTED stops at the HW too).
                found = log.offset_for_timestamp(query.timestamp_ms, visible_end)
                if found is not None:
                    out.offset, out.timestamp_ms = found
        fx.reply(envelope.reply(response))

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

