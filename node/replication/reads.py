"""The leader's read path: Fetch (consumers and followers), ListOffsets, partition checks.

``check_partition`` is Kafka's ``localLogWithEpochOrThrow``: the partition must exist, the
requester's ``current_leader_epoch`` must match ours (-1 skips the check; older ->
FENCED_LEADER_EPOCH, newer -> UNKNOWN_LEADER_EPOCH), and we must lead it.

Consumers read up to the high watermark, followers up to the log end. The first read of a
follower fetch also records the follower's position (its fetch offset is its log end offset)
and may move the high watermark or propose an ISR expansion; a follower whose last fetched
epoch does not match our epoch cache gets ``diverging_epoch`` (KIP-320) and no records.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from brokerlab.errors import ErrorCode
from brokerlab.ids import TopicPartition
from brokerlab.sansio import Effects
from brokerlab.v1 import broker_pb2
from node.log.errors import OffsetOutOfRangeError

if TYPE_CHECKING:
    from node.log.partition_log import PartitionLog
    from node.replication.replica_manager import ReplicaManager
    from node.replication.replica_state import LeaderState

EARLIEST_TIMESTAMP = -2
LATEST_TIMESTAMP = -1
# A fetch with max_bytes <= 0 is bounded by what one gRPC message may carry.
FETCH_MAX_BYTES_CAP = 60 * 1024 * 1024


class FetchReader:
    def __init__(self, manager: ReplicaManager, serving: Callable[[], bool]) -> None:
        self._manager = manager
        self._serving = serving

    def check_partition(self, tp: TopicPartition, current_leader_epoch: int
                        ) -> tuple[PartitionLog | None, LeaderState | None, ErrorCode, str]:
        """The log and leader state of a partition we lead, or the error to answer with."""
        manager = self._manager
        if not self._serving():
            # Kafka serves nothing before its first catch-up: an old image would name old leaders.
            return None, None, ErrorCode.NOT_LEADER_OR_FOLLOWER, (
                f"broker {manager.broker_id} is still catching up with the metadata journal")
        partition = manager.current_image().partition(tp)
        if partition is None:
            return None, None, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"{tp.topic}-{tp.partition} does not exist"
        if current_leader_epoch >= 0 and current_leader_epoch != partition.leader_epoch:
            if current_leader_epoch < partition.leader_epoch:
                return None, None, ErrorCode.FENCED_LEADER_EPOCH, (
                    f"leader epoch {current_leader_epoch} of {tp.topic}-{tp.partition} is older than "
                    f"{partition.leader_epoch}")
            return None, None, ErrorCode.UNKNOWN_LEADER_EPOCH, (
                f"leader epoch {current_leader_epoch} of {tp.topic}-{tp.partition} is newer than broker "
                f"{manager.broker_id}'s {partition.leader_epoch}")
        leader = manager.leaders.get(tp)
        log = manager.log_manager.get(tp) if leader is not None else None
        if log is None:
            return None, None, ErrorCode.NOT_LEADER_OR_FOLLOWER, (
                f"broker {manager.broker_id} is not the leader of {tp.topic}-{tp.partition} "
                f"(leader: {partition.leader_id})")
        return log, leader, ErrorCode.NONE, ""

    def read(self, request: broker_pb2.FetchRequest, now_ms: int, moved: list[TopicPartition] | None = None,
             fx: Effects | None = None) -> tuple[broker_pb2.FetchResponse, int, bool]:
        """Read every partition of a fetch: ``(response, bytes of records, answer now)``.

        ``moved`` (first read of a request only): follower positions are recorded and the
        partitions whose high watermark they moved are appended to it.

        Kafka's limits: ``max_bytes`` for the whole answer and ``partition_max_bytes`` per
        partition, except that the first partition with data returns at least one whole batch
        so a consumer never gets stuck behind a batch larger than its limits.
        """
        manager = self._manager
        response = broker_pb2.FetchResponse()
        budget = request.max_bytes if request.max_bytes > 0 else FETCH_MAX_BYTES_CAP
        total = 0
        answer_now = False
        replica_id = request.replica_id
        is_follower = replica_id >= 0
        record_positions = is_follower and moved is not None
        for fetch in request.partitions:
            tp = TopicPartition(fetch.topic, fetch.partition)
            out = response.partitions.add(topic=fetch.topic, partition=fetch.partition,
                                          high_watermark=-1, log_start_offset=-1, log_end_offset=-1)
            log, leader, error, message = self.check_partition(tp, fetch.current_leader_epoch)
            if log is None:
                out.error_code, out.error_message = error, message
                answer_now = True
                continue
            fetch_offset = fetch.fetch_offset
            # Read once: nothing below appends to or deletes from the log (only the HW may move).
            log_start_offset, log_end_offset = log.log_start_offset, log.log_end_offset
            if record_positions:
                last_fetched_epoch = fetch.last_fetched_epoch
                if last_fetched_epoch >= 0:
                    epoch, end_offset = log.leader_epoch_cache.end_offset_for(last_fetched_epoch)
                    if epoch < last_fetched_epoch or end_offset < fetch_offset:
                        out.diverging_epoch.epoch, out.diverging_epoch.end_offset = epoch, end_offset
                        out.high_watermark, out.log_start_offset = log.high_watermark, log.log_start_offset
                        out.log_end_offset = log.log_end_offset
                        answer_now = True
                        continue
                if replica_id not in leader.followers:
                    out.error_code = ErrorCode.NOT_LEADER_OR_FOLLOWER
                    out.error_message = f"broker {replica_id} is not a replica of {tp.topic}-{tp.partition}"
                    answer_now = True
                    continue
                if log_start_offset <= fetch_offset <= log_end_offset:
                    leader.update_follower(replica_id, fetch_offset, log_end_offset, now_ms,
                                           request.replica_broker_epoch)
                    if manager.advance_high_watermark(tp, leader, log):
                        moved.append(tp)
                    if fx is not None:
                        manager.maybe_expand_isr(tp, leader, replica_id, request.replica_broker_epoch, log, now_ms, fx)
            high_watermark = log.high_watermark
            out.high_watermark = high_watermark
            out.log_start_offset = log_start_offset
            out.log_end_offset = log_end_offset
            partition_max_bytes = fetch.partition_max_bytes
            limit = min(partition_max_bytes if partition_max_bytes > 0 else budget, budget)
            if total > 0 and limit <= 0:
                continue
            try:
                records = log.read(fetch_offset, max(limit, 1), None if is_follower else high_watermark)
            except OffsetOutOfRangeError:
                out.error_code = ErrorCode.OFFSET_OUT_OF_RANGE
                out.error_message = f"offset {fetch_offset} is outside [{log.log_start_offset}, {log.log_end_offset}]"
                answer_now = True
                continue
            if total > 0 and len(records) > limit:
                continue  # only the first data may exceed the limits
            if records:
                out.records = records
                total += len(records)
                budget -= len(records)
        return response, total, answer_now

    def try_complete(self, tps: list[TopicPartition], fx: Effects) -> None:
        """Answer parked fetches on ``tps`` that now have min_bytes to return (or an error)."""
        fetches = self._manager.fetches
        for parked in fetches.watching(tps):
            request = parked.operation.message
            response, total_bytes, answer_now = self.read(request, 0)
            if total_bytes >= request.min_bytes or answer_now:
                fetches.remove(parked.key)
                fx.reply(parked.operation.reply(response))

    def list_offsets(self, request: broker_pb2.ListOffsetsRequest) -> broker_pb2.ListOffsetsResponse:
        response = broker_pb2.ListOffsetsResponse()
        is_follower = request.replica_id >= 0
        for query in request.partitions:
            out = response.partitions.add(topic=query.topic, partition=query.partition, offset=-1,
                                          timestamp_ms=-1, leader_epoch=-1)
            log, leader, error, message = self.check_partition(TopicPartition(query.topic, query.partition),
                                                               query.current_leader_epoch)
            if log is None:
                out.error_code, out.error_message = error, message
                continue
            out.leader_epoch = leader.leader_epoch
            if not is_follower and leader.epoch_start_offset > log.high_watermark:
                # KIP-207: a leader elected a moment ago has not heard the high watermark yet
                # (it moves once a follower fetches in the new epoch); "latest" now would go
                # back in time. Retriable: the client asks again after a back-off.
                out.error_code = ErrorCode.OFFSET_NOT_AVAILABLE
                out.error_message = (f"the high watermark {log.high_watermark} of {query.topic}-{query.partition} "
                                     f"trails the start offset {leader.epoch_start_offset} of leader epoch "
                                     f"{leader.leader_epoch}: ask again shortly")
                continue
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
        return response
