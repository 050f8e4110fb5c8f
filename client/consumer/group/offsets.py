"""Offset commits and fetches of a group member (sans-IO), on behalf of ``GroupMembership``.

A request gets an id at once; it waits here until the coordinator is known, then goes out; its
outcome lands in ``results[id]`` (``None`` or the offsets for success, else a KafkaError). The
facade waits for it and retries what is retriable (Kafka's commitSync retries until its
timeout; commitAsync never retries). A commit made outside an active generation fails at once
with a CommitFailedError that says why (Kafka's message, plus the max.poll.interval.ms story
when that is what happened).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

from brokerlab.errors import ErrorCode, KafkaError, error_name
from brokerlab.ids import TopicPartition, broker_node
from brokerlab.sansio import Effects, Envelope
from brokerlab.topic_partitions import partitions_by_topic
from brokerlab.v1 import group_pb2
from client.consumer.group.state import (
    CommitFailedError,
    FatalGroupError,
    MemberState,
    RebalanceInProgressError,
)

if TYPE_CHECKING:
    from client.consumer.group.membership import GroupMembership

RETRIABLE = frozenset({ErrorCode.NOT_COORDINATOR, ErrorCode.COORDINATOR_NOT_AVAILABLE,
                       ErrorCode.COORDINATOR_LOAD_IN_PROGRESS, ErrorCode.REQUEST_TIMED_OUT,
                       ErrorCode.NETWORK_EXCEPTION})


class OffsetRequests:
    def __init__(self, member: GroupMembership) -> None:
        self.member = member
        self.results: dict[int, Any] = {}
        self._queued: dict[int, tuple[str, Any]] = {}  # id -> (rpc, request), waiting for a coordinator
        self._inflight: dict[int, str] = {}  # id -> rpc

    def has_work(self) -> bool:
        return bool(self._queued)

    def cancel(self, request_id: int) -> None:
        self._queued.pop(request_id, None)
        self._inflight.pop(request_id, None)
        self.results.pop(request_id, None)

    def _new_id(self) -> int:
        return self.member._ids.next()

    def take_fetch_result(self, request_id: int) -> Any:
        """The committed offsets an OffsetFetch brought (its result must be in), or None if it
        failed in a way worth asking again at the next poll; any other failure is raised."""
        outcome = self.results.pop(request_id)
        if isinstance(outcome, KafkaError):
            if outcome.code in RETRIABLE:
                return None
            raise outcome
        return outcome

    def commit(self, offsets: Mapping[TopicPartition, int], metadata: str = "", *,
               group_managed: bool = True) -> int:
        """Queue an OffsetCommit; outside an active generation the result is an error at once."""
        member = self.member
        request_id = self._new_id()
        generation, member_id = member.generation_id, member.member_id
        if group_managed:
            error = self._not_committable()
            if error is not None:
                self.results[request_id] = error
                return request_id
        else:
            generation, member_id = -1, ""
        by_topic: dict[str, list] = {}
        for tp, offset in sorted(offsets.items()):
            by_topic.setdefault(tp.topic, []).append(group_pb2.OffsetCommitPartition(
                partition_index=tp.partition, committed_offset=offset, committed_leader_epoch=-1,
                committed_metadata=metadata))
        request = group_pb2.OffsetCommitRequest(
            group_id=member.config.group_id, generation_id=generation, member_id=member_id,
            group_instance_id=member.config.group_instance_id if group_managed else "",
            topics=[group_pb2.OffsetCommitTopic(name=t, partitions=ps) for t, ps in by_topic.items()])
        self._queued[request_id] = ("OffsetCommit", request)
        return request_id

    def _not_committable(self) -> KafkaError | None:
        member = self.member
        group = member.config.group_id
        if member.fatal is not None:
            return member.fatal
        if member.state is MemberState.STABLE and member.in_generation:
            return None
        if member.poll_timeout_note:
            return CommitFailedError(ErrorCode.UNKNOWN_MEMBER_ID, (
                f"commit failed: this consumer left group {group!r} because {member.poll_timeout_note}; its "
                "partitions may already belong to other members. poll() again to rejoin, and spend less time "
                "between polls (fewer max.poll.records) or raise max.poll.interval.ms"))
        if member.state in (MemberState.PREPARING_REBALANCE, MemberState.COMPLETING_REBALANCE):
            return RebalanceInProgressError(ErrorCode.REBALANCE_IN_PROGRESS, (
                f"commit failed: group {group!r} is rebalancing; call poll() to complete the rebalance, then commit"))
        return CommitFailedError(ErrorCode.UNKNOWN_MEMBER_ID, (
            f"commit failed: this consumer is not part of an active generation of group {group!r} "
            "(it was removed or has not joined yet); poll() to join"))

    def fetch(self, partitions: list[TopicPartition] | None) -> int:
        """Queue an OffsetFetch (None: every partition the group has an offset for)."""
        request_id = self._new_id()
        request = group_pb2.OffsetFetchRequest(group_id=self.member.config.group_id, topics=[
            group_pb2.OffsetFetchTopic(name=t, partition_indexes=ps)
            for t, ps in partitions_by_topic(partitions or []).items()])
        self._queued[request_id] = ("OffsetFetch", request)
        return request_id

    def flush(self, now_ms: int, fx: Effects) -> None:
        """Send what waits, if there is a coordinator to send it to."""
        coordinator = self.member.coordinator_id
        if coordinator is None or not self._queued:
            return
        for request_id, (rpc, request) in list(self._queued.items()):
            del self._queued[request_id]
            self._inflight[request_id] = rpc
            fx.send(Envelope(self.member.node, broker_node(coordinator), rpc, request, request_id))

    def on_response(self, envelope: Envelope, now_ms: int, fx: Effects) -> None:
        rpc = self._inflight.pop(envelope.request_id, None)
        if rpc is None:
            return
        if envelope.transport_error is not None:
            self.member.mark_coordinator_unknown(f"{rpc} failed: {envelope.transport_error}", fx)
            self.results[envelope.request_id] = KafkaError(ErrorCode.NETWORK_EXCEPTION, envelope.transport_error)
            fx.event("OffsetRequestFailed", rpc=rpc, reason=envelope.transport_error)
            return
        if rpc == "OffsetCommit":
            self.results[envelope.request_id] = self._commit_outcome(envelope.message, fx)
        else:
            self.results[envelope.request_id] = self._fetch_outcome(envelope.message, fx)
            fx.event("CommittedOffsetsFetched", group=self.member.config.group_id,
                     ok=not isinstance(self.results[envelope.request_id], KafkaError))

    def _commit_outcome(self, response: group_pb2.OffsetCommitResponse, fx: Effects) -> KafkaError | None:
        member = self.member
        errors = [(p.error_code, p.error_message) for t in response.topics for p in t.partitions if p.error_code]
        if not errors:
            fx.event("OffsetsCommitted", group=member.config.group_id, generation_id=member.generation_id,
                     partitions=sum(len(t.partitions) for t in response.topics))
            return None
        code, message = errors[0]
        fx.event("OffsetCommitFailed", group=member.config.group_id, error=error_name(code), reason=message)
        if member._coordinator_error(code, message, fx):
            return KafkaError(code, message)
        if code == ErrorCode.UNKNOWN_MEMBER_ID:
            member._reset(fx, reset_member_id=True, why="member-rejoined: unknown member id on commit")
            return CommitFailedError(code, f"commit failed: the group no longer knows this member ({message}); "
                                           "its partitions were reassigned. poll() to rejoin")
        if code == ErrorCode.ILLEGAL_GENERATION:
            member._reset(fx, reset_member_id=False, why="member-rejoined: illegal generation on commit")
            return CommitFailedError(code, f"commit failed: the group has rebalanced since this member's generation "
                                           f"({message}). poll() to rejoin")
        if code == ErrorCode.REBALANCE_IN_PROGRESS:
            member.request_rejoin("member-rejoined: rebalance noticed on commit")
            return RebalanceInProgressError(code, f"commit failed: the group is rebalancing ({message}); "
                                                  "poll() to complete it, then commit")
        if code == ErrorCode.FENCED_INSTANCE_ID:
            member._fail(code, message, fx)
            return FatalGroupError(code, message)
        return KafkaError(code, message)

    def _fetch_outcome(self, response: group_pb2.OffsetFetchResponse, fx: Effects) -> Any:
        if response.error_code:
            if self.member._coordinator_error(response.error_code, response.error_message, fx):
                pass
            return KafkaError(response.error_code, response.error_message)
        out: dict[TopicPartition, tuple[int, str] | None] = {}
        for topic in response.topics:
            for p in topic.partitions:
                tp = TopicPartition(topic.name, p.partition_index)
                if p.error_code:
                    self.member._coordinator_error(p.error_code, p.error_message, fx)
                    return KafkaError(p.error_code, p.error_message)
                out[tp] = (p.committed_offset, p.metadata) if p.committed_offset >= 0 else None
        return out
