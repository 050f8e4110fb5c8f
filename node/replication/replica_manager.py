"""ReplicaManager: the broker's replicas as leader or follower (Kafka's ReplicaManager, sans-IO).

Roles come only from the metadata image (the broker core calls ``become_leader``,
``become_follower``, ``update_partition`` and ``stop_replica`` after replaying the journal).
As leader it appends produces, serves consumers up to the high watermark and followers up to
the log end, tracks follower progress (``LeaderState``), moves the high watermark, releases
``acks=all`` produces and proposes ISR changes to the controller. As follower it replicates
through the ``FollowerFetcher``.

Latency rules (the produce path is the benchmark): an append answers parked follower fetches
at once; a follower fetch that reports a new position moves the high watermark and releases the
produces and consumer fetches it unblocks in the same step. Batches stay opaque bytes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Iterable

from brokerlab.errors import ErrorCode
from brokerlab.ids import TopicPartition
from brokerlab.sansio import Effects, Envelope, RequestIds
from brokerlab.v1 import broker_pb2
from node.config import BrokerConfig
from node.log.errors import CorruptBatchError, LogError, error_code_for
from node.metadata_image import MetadataImage, PartitionImage
from node.purgatory import Purgatory
from node.replication.alter_partition import AlterPartitionManager, Outcome, Proposal
from node.replication.follower_fetcher import FollowerFetcher
from node.replication.produce_purgatory import DelayedProduce, PartitionView, ProducePurgatory, Waiting
from node.replication.reads import FetchReader
from node.replication.replica_state import LeaderState

if TYPE_CHECKING:
    from node.log.manager import LogManager
    from node.log.partition_log import PartitionLog

ACKS = (0, 1, -1)


class ReplicaManager:
    def __init__(self, config: BrokerConfig, log_manager: LogManager, image: Callable[[], MetadataImage],
                 ids: RequestIds, broker_epoch: Callable[[], int], serving: Callable[[], bool]) -> None:
        self.config = config
        self.broker_id = config.broker_id
        self.log_manager = log_manager
        self.current_image = image
        self.leaders: dict[TopicPartition, LeaderState] = {}
        self.fetcher = FollowerFetcher(config, ids, log_manager, broker_epoch)
        self.alter_partition = AlterPartitionManager(config, ids, broker_epoch)
        self.produces = ProducePurgatory()
        self.fetches: Purgatory[Envelope] = Purgatory()
        self.reader = FetchReader(self, serving)
        # The parked fetch of each follower broker: a newer fetch from it supersedes the old one.
        self._replica_fetch_keys: dict[int, tuple] = {}
        self._next_isr_check_ms: int | None = None
        # Brokers the controller refused as ISR members (INELIGIBLE_REPLICA: e.g. shutting down,
        # which our image cannot show) -> until when not to propose them again.
        self._ineligible_until_ms: dict[int, int] = {}

    # ------------------------------------------------------------------ timers

    def tick(self, now_ms: int, fx: Effects) -> None:
        for parked in self.fetches.pop_expired(now_ms):
            response, _, _ = self.reader.read(parked.operation.message, now_ms)
            fx.reply(parked.operation.reply(response))
        self.produces.expire(now_ms, self.view, fx)
        if self._next_isr_check_ms is not None and now_ms >= self._next_isr_check_ms:
            self.maybe_shrink_isrs(now_ms, fx)
        self.fetcher.tick(now_ms, fx)
        self.maybe_send(now_ms, fx)

    def maybe_send(self, now_ms: int, fx: Effects) -> None:
        """End of every step: follower fetches / questions and ISR proposals that are due."""
        self.fetcher.maybe_send(now_ms, fx)
        self.alter_partition.maybe_send(now_ms, fx)

    def next_deadline_ms(self) -> int | None:
        due = None
        for d in (self.fetches.next_deadline_ms(), self.produces.next_deadline_ms(),
                  self.fetcher.next_deadline_ms(), self.alter_partition.next_deadline_ms(),
                  self._next_isr_check_ms):
            if d is not None and (due is None or d < due):
                due = d
        return due

    # ------------------------------------------------------------------ roles

    def become_leader(self, tp: TopicPartition, log: PartitionLog, partition: PartitionImage, now_ms: int,
                      fx: Effects) -> None:
        self.fetcher.remove(tp)
        self.alter_partition.forget(tp)
        cache = log.leader_epoch_cache
        epoch = partition.leader_epoch
        if epoch >= cache.latest_epoch:
            cache.assign(epoch, log.log_end_offset)  # KIP-101: this epoch starts at our log end
        latest = cache.latest_entry
        start = latest.start_offset if latest is not None and latest.epoch == epoch else log.log_end_offset
        leader = LeaderState.start(self.broker_id, epoch, partition.partition_epoch, partition.replicas,
                                   partition.isr, start, now_ms)
        self.leaders[tp] = leader
        self.advance_high_watermark(tp, leader, log)
        if self._next_isr_check_ms is None:
            self._next_isr_check_ms = now_ms + self._isr_check_interval_ms()
        fx.event("BecameLeader", topic=tp.topic, partition=tp.partition, leader_epoch=epoch,
                 log_end_offset=log.log_end_offset, high_watermark=log.high_watermark, isr=list(partition.isr),
                 partition_epoch=partition.partition_epoch)
        self.complete_waiting([tp], fx)

    def become_follower(self, tp: TopicPartition, log: PartitionLog, partition: PartitionImage, now_ms: int,
                        fx: Effects) -> None:
        self.leaders.pop(tp, None)
        self.alter_partition.forget(tp)
        if partition.leader_id >= 0 and partition.leader_id != self.broker_id:
            self.fetcher.add(tp, partition.leader_id, partition.leader_epoch, now_ms)
        else:
            self.fetcher.remove(tp)  # no leader: nothing to follow until one is elected
        fx.event("BecameFollower", topic=tp.topic, partition=tp.partition, leader=partition.leader_id,
                 leader_epoch=partition.leader_epoch, log_end_offset=log.log_end_offset,
                 high_watermark=log.high_watermark)
        self.complete_waiting([tp], fx)

    def stop_replica(self, tp: TopicPartition, fx: Effects) -> None:
        """The partition is gone from this broker (deleted, or reassigned away)."""
        self.leaders.pop(tp, None)
        self.alter_partition.forget(tp)
        self.fetcher.remove(tp)
        self.complete_waiting([tp], fx)

    def update_partition(self, tp: TopicPartition, partition: PartitionImage, now_ms: int, fx: Effects) -> None:
        """An ISR / replica-set change in the journal that leaves our role as it was."""
        leader = self.leaders.get(tp)
        if leader is None:
            return
        if partition.replicas != leader.replicas:
            leader.update_replicas(partition.replicas, now_ms)
        self._apply_committed(tp, leader, partition.isr, partition.partition_epoch, "metadata", fx)

    def _apply_committed(self, tp: TopicPartition, leader: LeaderState, isr: Iterable[int], partition_epoch: int,
                         source: str, fx: Effects) -> None:
        previous = list(leader.isr)
        if not leader.apply_committed(isr, partition_epoch):
            return
        if not leader.is_pending:
            self.alter_partition.forget(tp)
        if leader.isr != previous:
            removed = [b for b in previous if b not in leader.isr]
            added = [b for b in leader.isr if b not in previous]
            name = "IsrShrunk" if removed and not added else "IsrExpanded" if added and not removed else "IsrChanged"
            fx.event(name, topic=tp.topic, partition=tp.partition, isr=list(leader.isr),
                     partition_epoch=leader.partition_epoch, previous_isr=previous,
                     leader_epoch=leader.leader_epoch, source=source)
        log = self.log_manager.get(tp)
        if log is not None:
            self.advance_high_watermark(tp, leader, log)
        # An ISR that shrank below min.insync.replicas settles waiting produces one way or the other.
        self.complete_waiting([tp], fx)

    # ------------------------------------------------------------------ high watermark

    def view(self, tp: TopicPartition) -> PartitionView | None:
        """The produce purgatory's view of a partition we lead (None if we do not)."""
        leader = self.leaders.get(tp)
        log = self.log_manager.get(tp) if leader is not None else None
        if log is None:
            return None
        return PartitionView(log.high_watermark, len(leader.isr))

    def advance_high_watermark(self, tp: TopicPartition, leader: LeaderState, log: PartitionLog) -> bool:
        current = log.high_watermark
        new = leader.next_high_watermark(current, log.log_end_offset)
        if new > current:
            log.high_watermark = new
            return True
        return False

    def complete_waiting(self, tps: list[TopicPartition], fx: Effects) -> None:
        """Release parked produces and fetches on ``tps`` that can now be answered."""
        self.produces.try_complete(tps, self.view, fx)
        self.reader.try_complete(tps, fx)

    # ------------------------------------------------------------------ ISR

    def _isr_check_interval_ms(self) -> int:
        return max(self.config.replica_lag_time_max_ms // 2, 1)  # Kafka's isr-expiration period

    def maybe_shrink_isrs(self, now_ms: int, fx: Effects) -> None:
        lag_time_max_ms = self.config.replica_lag_time_max_ms
        for tp, leader in self.leaders.items():
            if len(leader.isr) <= 1:
                continue
            log = self.log_manager.get(tp)
            if log is None:
                continue
            new_isr = leader.maybe_shrink_isr(log.log_end_offset, now_ms, lag_time_max_ms)
            if new_isr is not None:
                lagging = [b for b in leader.isr if b not in new_isr]
                self._propose(tp, leader, new_isr, "out_of_sync", fx, replicas=lagging,
                              lag_time_max_ms=lag_time_max_ms)
        self._next_isr_check_ms = now_ms + self._isr_check_interval_ms() if self.leaders else None

    def maybe_expand_isr(self, tp: TopicPartition, leader: LeaderState, broker_id: int, broker_epoch: int,
                         log: PartitionLog, now_ms: int, fx: Effects) -> None:
        if broker_id in leader.isr or leader.is_pending:
            return
        if self._ineligible_until_ms and now_ms < self._ineligible_until_ms.get(broker_id, -1):
            return
        broker = self.current_image().broker(broker_id)
        eligible = broker is not None and not broker.fenced and broker.broker_epoch == broker_epoch
        new_isr = leader.maybe_expand_isr(broker_id, log.high_watermark, eligible)
        if new_isr is not None:
            self._propose(tp, leader, new_isr, "caught_up", fx, replicas=[broker_id])

    def _propose(self, tp: TopicPartition, leader: LeaderState, new_isr: list[int], reason: str, fx: Effects,
                 **fields) -> None:
        leader.propose_isr(new_isr, reason)
        self.alter_partition.submit(tp, Proposal(leader.leader_epoch, new_isr, leader.partition_epoch))
        fx.event("IsrChangeProposed", topic=tp.topic, partition=tp.partition, isr=list(leader.isr),
                 new_isr=list(new_isr), partition_epoch=leader.partition_epoch, leader_epoch=leader.leader_epoch,
                 reason=reason, **fields)

    def on_alter_partition_response(self, envelope: Envelope, now_ms: int, fx: Effects) -> None:
        for outcome in self.alter_partition.on_response(envelope, now_ms, fx):
            self._apply_outcome(outcome, now_ms, fx)

    def _apply_outcome(self, outcome: Outcome, now_ms: int, fx: Effects) -> None:
        tp, proposal = outcome.tp, outcome.proposal
        leader = self.leaders.get(tp)
        if (leader is None or leader.leader_epoch != proposal.leader_epoch
                or leader.pending_isr != proposal.new_isr or leader.partition_epoch != proposal.partition_epoch):
            return  # the partition moved on meanwhile (the journal told us first)
        if outcome.error_code == ErrorCode.NONE and outcome.result is not None:
            result = outcome.result
            if result.leader_epoch == leader.leader_epoch:
                # The answer is an early hint of what the journal will say; use it now.
                self._apply_committed(tp, leader, result.isr, result.partition_epoch, "alter_partition", fx)
                return
        if outcome.error_code == ErrorCode.INELIGIBLE_REPLICA:
            for broker_id in proposal.new_isr:
                if broker_id not in leader.isr:
                    self._ineligible_until_ms[broker_id] = now_ms + self.config.retry_backoff_max_ms
            # Only this answer says the proposal was not applied and our partition epoch is
            # current: back to the committed ISR (Kafka's handleAlterPartitionError).
            leader.clear_pending()
        # Any other final error (INVALID_UPDATE_VERSION, FENCED_LEADER_EPOCH, ...) may answer a
        # retry of a proposal the controller applied on an attempt whose answer was lost: keep
        # the maximal ISR for the high watermark until the journal brings the next state, or
        # acks=all could be answered without a replica the controller counts in the ISR.
        fx.event("IsrChangeRejected", topic=tp.topic, partition=tp.partition, new_isr=list(proposal.new_isr),
                 partition_epoch=proposal.partition_epoch, error=outcome.error_code,
                 error_message=outcome.error_message)

    # ------------------------------------------------------------------ requests

    def handle_produce(self, envelope: Envelope, now_ms: int, fx: Effects) -> None:
        request: broker_pb2.ProduceRequest = envelope.message
        response = broker_pb2.ProduceResponse()
        acks = request.acks
        appended: list[TopicPartition] = []
        moved: list[TopicPartition] = []
        waiting: dict[TopicPartition, Waiting] = {}
        reader = self.reader
        for index, data in enumerate(request.partitions):
            out = response.partitions.add(topic=data.topic, partition=data.partition, base_offset=-1,
                                          log_append_time_ms=-1, log_start_offset=-1)
            if acks not in ACKS:
                out.error_code = ErrorCode.INVALID_REQUIRED_ACKS
                out.error_message = f"acks must be 0, 1 or -1 (all), got {acks}"
                continue
            tp = TopicPartition(data.topic, data.partition)
            log, leader, error, message = reader.check_partition(tp, -1)
            if log is None:
                out.error_code, out.error_message = error, message
                continue
            out.log_start_offset = log.log_start_offset
            min_isr = 0
            if acks == -1:
                topic = self.current_image().topic(data.topic)
                min_isr = self.config.topic_min_insync_replicas(topic.configs if topic else {})
                if len(leader.isr) < min_isr:
                    out.error_code = ErrorCode.NOT_ENOUGH_REPLICAS
                    out.error_message = f"ISR {list(leader.isr)} is smaller than min.insync.replicas={min_isr}"
                    continue
            try:
                info = log.append_as_leader(data.records, leader.leader_epoch, now_ms)
            except CorruptBatchError as exc:
                out.error_code, out.error_message = ErrorCode.CORRUPT_MESSAGE, exc.reason
                continue
            except (LogError, OSError) as exc:  # MESSAGE_TOO_LARGE, FENCED_LEADER_EPOCH, KAFKA_STORAGE_ERROR
                out.error_code, out.error_message = error_code_for(exc), str(exc)
                continue
            fx.events.extend(log.drain_events())  # segment rolls done by the append
            out.base_offset = info.base_offset
            # -1: records keep their CreateTime (Kafka answers a time only for LogAppendTime topics).
            out.log_append_time_ms = -1
            out.log_start_offset = log.log_start_offset
            appended.append(tp)
            if self.advance_high_watermark(tp, leader, log):  # an ISR of one: committed at once
                moved.append(tp)
            if acks == -1 and log.high_watermark <= info.last_offset:
                waiting[tp] = Waiting(index, info.last_offset + 1, min_isr)
        if waiting:
            self.produces.park(DelayedProduce(envelope, response, waiting), now_ms + max(request.timeout_ms, 0))
        else:
            # acks=0 still gets an envelope back: the gRPC adapter has a caller waiting.
            fx.reply(envelope.reply(response))
        if appended:
            # Followers long-polling for these partitions get the new batches now.
            reader.try_complete(appended, fx)
        if moved:
            self.produces.try_complete(moved, self.view, fx)

    def handle_fetch(self, envelope: Envelope, now_ms: int, fx: Effects) -> None:
        request: broker_pb2.FetchRequest = envelope.message
        replica_id = request.replica_id
        if replica_id >= 0:
            # One long-poll per follower: a newer fetch answers the older one (with nothing).
            old = self._replica_fetch_keys.pop(replica_id, None)
            parked = self.fetches.remove(old) if old is not None else None
            if parked is not None:
                fx.reply(parked.operation.reply(broker_pb2.FetchResponse()))
        moved: list[TopicPartition] = []
        response, total_bytes, has_error = self.reader.read(request, now_ms, moved, fx)
        if moved:
            # This follower's position moved high watermarks: release what waited for them.
            self.produces.try_complete(moved, self.view, fx)
            self.reader.try_complete(moved, fx)
        if request.max_wait_ms <= 0 or total_bytes >= request.min_bytes or has_error or not request.partitions:
            fx.reply(envelope.reply(response))
            return
        key = (envelope.src, envelope.request_id)
        watched = [TopicPartition(p.topic, p.partition) for p in request.partitions]
        self.fetches.park(key, envelope, now_ms + request.max_wait_ms, watched)
        if replica_id >= 0:
            self._replica_fetch_keys[replica_id] = key

    def handle_list_offsets(self, envelope: Envelope, now_ms: int, fx: Effects) -> None:
        fx.reply(envelope.reply(self.reader.list_offsets(envelope.message)))

    def handle_offset_for_leader_epoch(self, envelope: Envelope, now_ms: int, fx: Effects) -> None:
        """KIP-101: where did ``leader_epoch`` end in the leader's log?"""
        request: broker_pb2.OffsetForLeaderEpochRequest = envelope.message
        response = broker_pb2.OffsetForLeaderEpochResponse()
        for query in request.partitions:
            out = response.partitions.add(topic=query.topic, partition=query.partition, leader_epoch=-1, end_offset=-1)
            log, _, error, message = self.reader.check_partition(TopicPartition(query.topic, query.partition),
                                                                 query.current_leader_epoch)
            if log is None:
                out.error_code, out.error_message = error, message
                continue
            out.leader_epoch, out.end_offset = log.leader_epoch_cache.end_offset_for(query.leader_epoch)
        fx.reply(envelope.reply(response))
