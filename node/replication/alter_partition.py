"""Sends the leaders' ISR change proposals to the controller (Kafka's AlterPartitionManager).

Proposals are queued per partition (a newer one for the same partition replaces an unsent one)
and sent in one AlterPartition request; one request is in flight at a time, the rest go when
its answer is back. ``on_response`` hands back one ``Outcome`` per partition sent; whether a
partition error is final or worth a retry is Kafka's split:

* final (drop the proposal, wait for the metadata journal): INVALID_UPDATE_VERSION,
  FENCED_LEADER_EPOCH, NOT_LEADER_OR_FOLLOWER, INELIGIBLE_REPLICA, UNKNOWN_TOPIC_OR_PARTITION,
  NEW_LEADER_ELECTED, STALE_BROKER_EPOCH, INVALID_REQUEST;
* anything else (a failed call, NOT_CONTROLLER, an unexpected code): sent again after a back-off.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

from brokerlab.errors import ErrorCode, error_name
from brokerlab.ids import CONTROLLER_NODE, TopicPartition, broker_node
from brokerlab.sansio import Effects, Envelope, RequestIds
from brokerlab.v1 import controller_pb2
from node.config import BrokerConfig
from node.lifecycle import Backoff

FINAL_ERRORS = frozenset({
    ErrorCode.INVALID_UPDATE_VERSION,
    ErrorCode.FENCED_LEADER_EPOCH,
    ErrorCode.NOT_LEADER_OR_FOLLOWER,
    ErrorCode.INELIGIBLE_REPLICA,
    ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
    ErrorCode.NEW_LEADER_ELECTED,
    ErrorCode.STALE_BROKER_EPOCH,
    ErrorCode.INVALID_REQUEST,
})


class Proposal(NamedTuple):
    leader_epoch: int
    new_isr: list[int]
    partition_epoch: int  # the committed partition epoch the proposal is based on


class Outcome(NamedTuple):
    tp: TopicPartition
    proposal: Proposal
    error_code: int  # NONE: ``result`` holds the committed state
    error_message: str
    result: controller_pb2.AlterPartitionResult | None


class AlterPartitionManager:
    def __init__(self, config: BrokerConfig, ids: RequestIds, broker_epoch: Callable[[], int]) -> None:
        self.config = config
        self.node = broker_node(config.broker_id)
        self._ids = ids
        self._broker_epoch = broker_epoch
        self.queued: dict[TopicPartition, Proposal] = {}
        self.inflight: dict[TopicPartition, Proposal] = {}
        self._request_id: int | None = None
        self._due_ms = 0
        self._backoff = Backoff(config.retry_backoff_ms, config.retry_backoff_max_ms)

    def submit(self, tp: TopicPartition, proposal: Proposal) -> None:
        self.queued[tp] = proposal

    def forget(self, tp: TopicPartition) -> None:
        """No longer leader: an unsent proposal is dropped (an answer in flight is ignored)."""
        self.queued.pop(tp, None)

    def next_deadline_ms(self) -> int | None:
        return self._due_ms if self.queued and self._request_id is None else None

    def maybe_send(self, now_ms: int, fx: Effects) -> None:
        if not self.queued or self._request_id is not None or now_ms < self._due_ms:
            return
        request = controller_pb2.AlterPartitionRequest(broker_id=self.config.broker_id,
                                                       broker_epoch=self._broker_epoch())
        for tp, proposal in sorted(self.queued.items()):
            request.partitions.add(topic=tp.topic, partition=tp.partition, leader_epoch=proposal.leader_epoch,
                                   new_isr=proposal.new_isr, partition_epoch=proposal.partition_epoch)
        self.inflight, self.queued = self.queued, {}
        self._request_id = self._ids.next()
        fx.send(Envelope(self.node, CONTROLLER_NODE, "AlterPartition", request, self._request_id))

    def on_response(self, envelope: Envelope, now_ms: int, fx: Effects) -> list[Outcome]:
        if envelope.request_id != self._request_id:
            return []
        self._request_id = None
        inflight, self.inflight = self.inflight, {}
        response = envelope.message
        failure = envelope.transport_error
        if failure is None and response.error_code != ErrorCode.NONE:
            failure = f"{error_name(response.error_code)}: {response.error_message}"
        if failure is not None:
            self._retry(inflight, now_ms, fx, failure)
            return []
        self._backoff.succeeded()
        outcomes: list[Outcome] = []
        retry: dict[TopicPartition, Proposal] = {}
        for result in response.partitions:
            tp = TopicPartition(result.topic, result.partition)
            proposal = inflight.pop(tp, None)
            if proposal is None:
                continue
            code = result.error_code
            if code == ErrorCode.NONE or code in FINAL_ERRORS:
                outcomes.append(Outcome(tp, proposal, code, result.error_message, result))
            else:
                retry[tp] = proposal
        retry.update(inflight)  # partitions the answer left out
        if retry:
            self._retry(retry, now_ms, fx, "partition errors")
        return outcomes

    def _retry(self, proposals: dict[TopicPartition, Proposal], now_ms: int, fx: Effects, reason: str) -> None:
        wait_ms = self._backoff.failed()
        self._due_ms = now_ms + wait_ms
        for tp, proposal in proposals.items():
            self.queued.setdefault(tp, proposal)  # a newer proposal queued meanwhile wins
        if self._backoff.failures == 1:
            fx.event("AlterPartitionFailed", partitions=len(proposals), error=reason, retry_in_ms=wait_ms)
