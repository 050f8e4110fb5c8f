"""Position validation after a leader change (Kafka's KIP-320), part of the consumer's FetchCore.

When metadata shows a newer leader epoch for a partition than the one its position was fetched
under, the partition stops fetching (AWAITING_VALIDATION) and asks the new leader, with
OffsetForLeaderEpoch, where the epoch of its last consumed record ends in that leader's log. At
or beyond the position: fetching goes on from the same position (the usual case: the new leader
was in the ISR and holds everything the consumer read, since consumers only read below the high
watermark). Before it (an unclean election): the position moves back to that end offset, where
the logs diverge, and never further; with ``auto.offset.reset=none`` the partition fails.
"""

from __future__ import annotations

from typing import NamedTuple

from brokerlab.errors import REFRESH_METADATA, ErrorCode, KafkaError, error_name, is_retriable
from brokerlab.ids import TopicPartition, broker_node
from brokerlab.sansio import Effects, Envelope
from brokerlab.v1 import broker_pb2
from client.consumer.fetch_state import FetchState, PartitionState

CONSUMER_REPLICA_ID = -1


class _Sent(NamedTuple):
    broker_id: int
    # tp -> (generation, fetch_offset, timestamp or the position being validated)
    partitions: dict[TopicPartition, tuple[int, int]]


def _transport_code(reason: str) -> int:
    """The Kafka code a failed call's reason starts with (``"INVALID_REQUEST: ..."``), else
    NETWORK_EXCEPTION."""
    member = ErrorCode.__members__.get(reason.split(":", 1)[0].strip().upper())
    return ErrorCode.NETWORK_EXCEPTION if member is None or member == ErrorCode.NONE else member


class PositionValidation:
    """FetchCore's validation half; uses its partitions, metadata, ids and backoff."""

    def _leader_epoch_moved(self, state: PartitionState, effects: Effects) -> bool:
        """Metadata shows a newer leader epoch than the one we fetched under: validate first.

        The new leader's log may end before our position (an unclean election, or records the
        old leader had alone); OffsetForLeaderEpoch tells where our last epoch ends there.
        Without a known epoch for the position (after a seek) there is nothing to compare.
        """
        epoch = self.metadata.leader_epoch_for(state.tp)
        if state.leader_epoch < 0 or epoch <= state.leader_epoch:
            return False
        if state.position_epoch < 0:
            state.leader_epoch = epoch
            return False
        position, position_epoch = state.position, state.position_epoch
        self._move(state, FetchState.AWAITING_VALIDATION)  # drops what the old leader sent
        state.position = state.fetch_offset = position
        state.position_epoch = position_epoch
        effects.event("PositionValidationStarted", topic=state.tp.topic, partition=state.tp.partition,
                      position=position, position_epoch=position_epoch, leader_epoch=epoch)
        return True

    def _send_validations(self, now_ms: int, effects: Effects) -> None:
        by_leader: dict[int, list[PartitionState]] = {}
        for state in self._partitions.values():
            if state.state is FetchState.FETCHING and not state.in_flight:
                self._leader_epoch_moved(state, effects)
            if state.state is FetchState.AWAITING_VALIDATION and self._ready(state, now_ms):
                leader = self._leader(state)
                if leader is not None and leader not in self._validating_brokers:
                    by_leader.setdefault(leader, []).append(state)
        for leader, states in by_leader.items():
            request = broker_pb2.OffsetForLeaderEpochRequest(replica_id=CONSUMER_REPLICA_ID)
            sent = _Sent(leader, {})
            for state in states:
                state.request_epoch = self.metadata.leader_epoch_for(state.tp)
                request.partitions.add(topic=state.tp.topic, partition=state.tp.partition,
                                       current_leader_epoch=state.request_epoch, leader_epoch=state.position_epoch)
                sent.partitions[state.tp] = (state.generation, state.position)
                state.in_flight = True
            request_id = self._ids.next()
            self._validations[request_id] = sent
            self._validating_brokers.add(leader)
            effects.send(Envelope(self.node, broker_node(leader), "OffsetForLeaderEpoch", request, request_id))

    def on_offset_for_leader_epoch_response(self, envelope: Envelope, now_ms: int, effects: Effects) -> None:
        sent = self._validations.pop(envelope.request_id, None)
        if sent is None:
            return
        self._validating_brokers.discard(sent.broker_id)
        if envelope.transport_error is not None:
            if is_retriable(_transport_code(envelope.transport_error)):
                self._on_transport_error(sent, envelope.transport_error, "OffsetForLeaderEpoch", effects)
                return
            # The broker cannot answer it at all (an older broker): go on unvalidated, as Kafka does.
            for state in self._settle(sent).values():
                if state.state is FetchState.AWAITING_VALIDATION:
                    self._validated(state, state.position, effects, skipped=envelope.transport_error)
            return
        current = self._settle(sent)
        for part in envelope.message.partitions:
            state = current.get(TopicPartition(part.topic, part.partition))
            if state is None or state.state is not FetchState.AWAITING_VALIDATION:
                continue
            code = part.error_code
            if code == ErrorCode.NONE and (part.end_offset < 0 or part.leader_epoch < 0):
                # The leader knows no epoch at or before ours: the position cannot be checked.
                self._on_offset_out_of_range(state, state.position, effects)
            elif code == ErrorCode.NONE:
                self._validated(state, part.end_offset, effects)
            elif code in REFRESH_METADATA:
                self._back_off(state, refresh=True)
            elif is_retriable(code):
                self._back_off(state, refresh=False)
            else:
                self._validated(state, state.position, effects, skipped=error_name(code))

    def _validated(self, state: PartitionState, end_offset: int, effects: Effects, skipped: str = "") -> None:
        """The new leader's log holds our last epoch up to ``end_offset``: fetch on from there."""
        tp, position = state.tp, state.position
        if skipped:
            effects.event("PositionValidationSkipped", topic=tp.topic, partition=tp.partition, reason=skipped)
        if end_offset >= position:
            epoch = state.position_epoch
            self._move(state, FetchState.FETCHING)
            state.position = state.fetch_offset = position
            state.position_epoch = epoch
        elif self.config.auto_offset_reset == "none":
            self._move(state, FetchState.FAILED)
            state.position = state.fetch_offset = position
            state.error = KafkaError(
                ErrorCode.OFFSET_OUT_OF_RANGE,
                f"log truncation detected for {tp}: position {position} but the leader's log diverges at "
                f"{end_offset} (auto.offset.reset is none: seek to go on)",
            )
        else:
            # Kafka's KIP-320: back to where the logs diverge, never further.
            self._move(state, FetchState.FETCHING)
            state.position = state.fetch_offset = end_offset
            state.position_epoch = -1
        state.leader_epoch = state.request_epoch
        effects.event("PositionValidated", topic=tp.topic, partition=tp.partition, position=state.position,
                      end_offset=end_offset, truncated=end_offset < position)
