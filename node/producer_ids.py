"""InitProducerId on the broker: producer ids from blocks the controller hands out (Kafka's
RPCProducerIdManager, KIP-730), sans-IO.

A producer asks any broker for an id. The broker answers from its current block
``[next_id, block_end)``; it asks the controller for a block (AllocateProducerIds, one call at
a time) when it has none, and for the next one once 90 % of the current block is used, so a
steady stream of producers does not wait for the controller. A request that arrives while no
id is at hand waits (parked) until a block arrives or ``controller.quorum.request.timeout.ms``
passes, then gets COORDINATOR_LOAD_IN_PROGRESS, which the producer retries (Kafka answers the
same while its next block is on the way). The first block is asked for lazily, on the first
InitProducerId: a cluster without idempotent producers never writes a ProducerIdsRecord.

Every id goes out with epoch 0: an idempotent producer bumps its epoch itself (KIP-360).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from brokerlab.errors import ErrorCode, error_name
from brokerlab.ids import CONTROLLER_NODE
from brokerlab.sansio import Effects, Envelope, RequestIds
from brokerlab.v1 import broker_pb2, controller_pb2
from node.config import BrokerConfig

# Kafka prefetches the next block once this much of the current one is used.
PREFETCH_FRACTION = 0.9


@dataclass(slots=True)
class _Block:
    next_id: int
    end: int
    prefetch_at: int  # asking for the next block starts when next_id reaches this

    @property
    def remaining(self) -> int:
        return self.end - self.next_id


class ProducerIdManager:
    def __init__(self, config: BrokerConfig, ids: RequestIds, broker_epoch: Callable[[], int]) -> None:
        self.broker_id = config.broker_id
        self._wait_ms = config.controller_request_timeout_ms
        self._backoff_initial_ms = config.retry_backoff_ms
        self._backoff_max_ms = config.retry_backoff_max_ms
        self._ids = ids
        self._broker_epoch = broker_epoch
        self._current: _Block | None = None
        self._next: _Block | None = None
        self._in_flight: int | None = None  # request id of the AllocateProducerIds call
        self._retry_at_ms = 0
        self._failures = 0
        self._wanted = False  # some InitProducerId has been asked: keep a block at hand from now on
        self._parked: list[tuple[Envelope, int]] = []  # (request, deadline_ms), oldest first

    # ------------------------------------------------------------------ requests

    def handle_init_producer_id(self, envelope: Envelope, now_ms: int, fx: Effects) -> None:
        request: broker_pb2.InitProducerIdRequest = envelope.message
        if request.transactional_id:
            fx.reply(envelope.reply(broker_pb2.InitProducerIdResponse(
                error_code=ErrorCode.INVALID_REQUEST, producer_id=-1, producer_epoch=-1,
                error_message="transactions are not supported: transactional_id must be empty")))
            return
        self._wanted = True
        producer_id = self._take()
        if producer_id is None:
            self._parked.append((envelope, now_ms + self._wait_ms))
            return
        fx.reply(envelope.reply(broker_pb2.InitProducerIdResponse(producer_id=producer_id, producer_epoch=0)))
        fx.event("ProducerIdAssigned", producer_id=producer_id, client=envelope.src)

    def _take(self) -> int | None:
        block = self._current
        if block is None or block.remaining <= 0:
            block = self._current = self._next
            self._next = None
            if block is None:
                return None
        producer_id = block.next_id
        block.next_id += 1
        return producer_id

    # ------------------------------------------------------------------ the controller

    def maybe_send(self, now_ms: int, fx: Effects) -> None:
        """Ask the controller for a block when one is needed (called after every step)."""
        if self._in_flight is not None or not self._wanted or now_ms < self._retry_at_ms:
            return
        if self._next is not None:
            return
        block = self._current
        if block is not None and block.remaining > 0 and block.next_id < block.prefetch_at and not self._parked:
            return
        broker_epoch = self._broker_epoch()
        if broker_epoch < 0:
            # Not registered yet (the controller would answer STALE_BROKER_EPOCH): look again soon.
            self._retry_at_ms = now_ms + self._backoff_initial_ms
            return
        self._in_flight = self._ids.next()
        fx.send(Envelope(f"broker-{self.broker_id}", CONTROLLER_NODE, "AllocateProducerIds",
                         controller_pb2.AllocateProducerIdsRequest(broker_id=self.broker_id,
                                                                   broker_epoch=broker_epoch),
                         self._in_flight))

    def on_allocate_producer_ids_response(self, envelope: Envelope, now_ms: int, fx: Effects) -> None:
        if envelope.request_id != self._in_flight:
            return  # not ours, or an answer we stopped waiting for
        self._in_flight = None
        response = envelope.message
        if envelope.transport_error is not None or response.error_code != ErrorCode.NONE:
            self._failures += 1
            delay_ms = min(self._backoff_initial_ms << min(self._failures - 1, 16), self._backoff_max_ms)
            self._retry_at_ms = now_ms + delay_ms
            reason = envelope.transport_error or f"{error_name(response.error_code)}: {response.error_message}"
            fx.event("ProducerIdBlockRequestFailed", reason=reason, retry_in_ms=delay_ms)
            return
        self._failures = 0
        self._retry_at_ms = 0
        start, length = response.producer_id_start, response.producer_id_len
        block = _Block(start, start + length, start + int(length * PREFETCH_FRACTION))
        if self._current is None or self._current.remaining <= 0:
            self._current = block
        else:
            self._next = block
        fx.event("ProducerIdBlockReceived", producer_id_start=start, producer_id_len=length)
        self._answer_parked(fx)

    def _answer_parked(self, fx: Effects) -> None:
        while self._parked:
            producer_id = self._take()
            if producer_id is None:
                return
            envelope, _ = self._parked.pop(0)
            fx.reply(envelope.reply(broker_pb2.InitProducerIdResponse(producer_id=producer_id, producer_epoch=0)))
            fx.event("ProducerIdAssigned", producer_id=producer_id, client=envelope.src)

    # ------------------------------------------------------------------ timers

    def tick(self, now_ms: int, fx: Effects) -> None:
        waiting = []
        for envelope, deadline_ms in self._parked:
            if deadline_ms <= now_ms:
                fx.reply(envelope.reply(broker_pb2.InitProducerIdResponse(
                    error_code=ErrorCode.COORDINATOR_LOAD_IN_PROGRESS, producer_id=-1, producer_epoch=-1,
                    error_message=f"broker {self.broker_id} is waiting for a block of producer ids "
                                  "from the controller")))
            else:
                waiting.append((envelope, deadline_ms))
        self._parked = waiting
        self.maybe_send(now_ms, fx)

    def next_deadline_ms(self) -> int | None:
        due = [deadline for _, deadline in self._parked[:1]]
        if self._wanted and self._in_flight is None and self._retry_at_ms and self._needs_block():
            due.append(self._retry_at_ms)
        return min(due) if due else None

    def _needs_block(self) -> bool:
        block = self._current
        return self._next is None and (block is None or block.next_id >= block.prefetch_at or bool(self._parked))
