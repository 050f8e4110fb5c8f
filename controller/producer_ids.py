"""AllocateProducerIds: blocks of producer ids for the brokers (Kafka's ProducerIdControlManager, KIP-730).

Brokers answer InitProducerId from a block of ids they got here. A block is handed out only
through a ``ProducerIdsRecord`` (``next_producer_id`` = the end of the block) that the core
appends to the journal, fsyncs and replays before the answer goes out, so a restarted controller
replaying its journal never hands out an id twice. The sender must be the current registration
of its broker (its ``broker_epoch``), else STALE_BROKER_EPOCH, as in Kafka.
"""

from __future__ import annotations

from brokerlab.errors import ErrorCode
from brokerlab.sansio import TraceEvent
from brokerlab.v1.controller_pb2 import AllocateProducerIdsRequest, AllocateProducerIdsResponse
from brokerlab.v1.metadata_pb2 import MetadataRecord, ProducerIdsRecord
from controller.result import ControllerResult
from controller.state import ControllerState

# Kafka's ProducerIdsBlock.PRODUCER_ID_BLOCK_SIZE.
PRODUCER_ID_BLOCK_SIZE = 1000
# Producer ids are int64 on the wire; stop well before they would wrap.
MAX_PRODUCER_ID = (1 << 63) - 1 - PRODUCER_ID_BLOCK_SIZE


def allocate_producer_ids(state: ControllerState, request: AllocateProducerIdsRequest) -> ControllerResult:
    broker = state.brokers.get(request.broker_id)
    if broker is None or broker.broker_epoch != request.broker_epoch:
        message = (f"broker {request.broker_id} is not registered" if broker is None else
                   f"broker {request.broker_id} has epoch {broker.broker_epoch}, not {request.broker_epoch}")
        return ControllerResult(AllocateProducerIdsResponse(error_code=ErrorCode.STALE_BROKER_EPOCH,
                                                            error_message=message))
    start = state.next_producer_id
    if start > MAX_PRODUCER_ID:
        return ControllerResult(AllocateProducerIdsResponse(error_code=ErrorCode.UNKNOWN_SERVER_ERROR,
                                                            error_message="producer ids are exhausted"))
    record = MetadataRecord(producer_ids=ProducerIdsRecord(
        broker_id=request.broker_id, broker_epoch=request.broker_epoch,
        next_producer_id=start + PRODUCER_ID_BLOCK_SIZE))
    response = AllocateProducerIdsResponse(producer_id_start=start, producer_id_len=PRODUCER_ID_BLOCK_SIZE)
    event = TraceEvent("ProducerIdsAllocated", {"broker_id": request.broker_id, "producer_id_start": start,
                                                "producer_id_len": PRODUCER_ID_BLOCK_SIZE})
    return ControllerResult(response, [record], [event])
