"""acks=all produces waiting for the high watermark (Kafka's DelayedProduce).

A produce whose appends all landed is parked here, watching its partitions, until for each of
them either the high watermark reached ``last offset + 1`` (NONE, or
NOT_ENOUGH_REPLICAS_AFTER_APPEND if the ISR shrank below ``min.insync.replicas`` meanwhile),
this broker stopped leading it (NOT_LEADER_OR_FOLLOWER), or the request's ``timeout_ms`` ran out
(REQUEST_TIMED_OUT). Then the whole response goes back at once. Whoever moves a high watermark
or a leadership calls ``try_complete`` for the partitions it touched.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, NamedTuple

from brokerlab.errors import ErrorCode
from brokerlab.ids import TopicPartition
from brokerlab.sansio import Effects, Envelope
from brokerlab.v1 import broker_pb2
from node.purgatory import Purgatory


class Waiting(NamedTuple):
    index: int  # position in response.partitions
    required_offset: int  # the high watermark that acknowledges the batch: last offset + 1
    min_insync_replicas: int


class PartitionView(NamedTuple):
    """What the purgatory needs to know of a partition this broker leads right now."""

    high_watermark: int
    isr_size: int


# tp -> its view if this broker leads it, else None.
LeaderLookup = Callable[[TopicPartition], "PartitionView | None"]


@dataclass(slots=True)
class DelayedProduce:
    envelope: Envelope
    response: broker_pb2.ProduceResponse
    waiting: dict[TopicPartition, Waiting]


class ProducePurgatory:
    def __init__(self) -> None:
        self._parked: Purgatory[DelayedProduce] = Purgatory()

    def __len__(self) -> int:
        return len(self._parked)

    def park(self, operation: DelayedProduce, deadline_ms: int) -> None:
        key = (operation.envelope.src, operation.envelope.request_id)
        self._parked.park(key, operation, deadline_ms, operation.waiting.keys())

    @staticmethod
    def check(operation: DelayedProduce, lookup: LeaderLookup) -> bool:
        """Settle what can be settled; True when every partition is done."""
        for tp, waiting in list(operation.waiting.items()):
            out = operation.response.partitions[waiting.index]
            view = lookup(tp)
            if view is None:
                out.error_code = ErrorCode.NOT_LEADER_OR_FOLLOWER
                out.error_message = f"leadership of {tp.topic}-{tp.partition} moved while waiting for acks=all"
            elif view.high_watermark >= waiting.required_offset:
                if view.isr_size < waiting.min_insync_replicas:
                    out.error_code = ErrorCode.NOT_ENOUGH_REPLICAS_AFTER_APPEND
                    out.error_message = (
                        f"written, but the ISR shrank to {view.isr_size} < min.insync.replicas="
                        f"{waiting.min_insync_replicas} while waiting"
                    )
            else:
                continue
            del operation.waiting[tp]
        return not operation.waiting

    def try_complete(self, tps: Iterable[TopicPartition], lookup: LeaderLookup, fx: Effects) -> int:
        """Answer the parked produces on ``tps`` that are now done; returns how many."""
        done = 0
        for parked in self._parked.watching(tps):
            if self.check(parked.operation, lookup):
                self._parked.remove(parked.key)
                fx.reply(parked.operation.envelope.reply(parked.operation.response))
                done += 1
        return done

    def expire(self, now_ms: int, lookup: LeaderLookup, fx: Effects) -> None:
        for parked in self._parked.pop_expired(now_ms):
            operation = parked.operation
            self.check(operation, lookup)  # settle what did make it in time
            for waiting in operation.waiting.values():
                out = operation.response.partitions[waiting.index]
                out.error_code = ErrorCode.REQUEST_TIMED_OUT
                out.error_message = "the high watermark did not reach the batch within timeout_ms"
            operation.waiting.clear()
            fx.reply(operation.envelope.reply(operation.response))

    def next_deadline_ms(self) -> int | None:
        return self._parked.next_deadline_ms()
