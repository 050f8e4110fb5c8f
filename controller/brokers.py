"""Broker registration, heartbeats and fencing (Kafka's ClusterControlManager + BrokerHeartbeatManager).

Lifecycle of a broker as the controller sees it:

1. ``RegisterBroker`` with a fresh ``incarnation_id`` writes a RegisterBrokerRecord whose journal
   offset becomes the new ``broker_epoch``; the broker starts fenced. Registering again with the
   same incarnation is a retry and returns the same epoch without writing anything. A new
   incarnation while the old one is still unfenced fences the old one first (its leaderships
   move), so a restarted broker never inherits leadership it has not caught up to. (Kafka
   instead rejects the new incarnation until the old session expires; brokerlab accepts it at
   once, for fast restarts.) The replaced incarnation's heartbeats then get STALE_BROKER_EPOCH
   and its registrations are refused with STALE_BROKER_EPOCH too, so it cannot take back the id.
   A restarted broker is in no ISR (except as the last member of one): its leaders add it back
   with AlterPartition once it has caught up.
2. The broker heartbeats with its epoch and ``current_metadata_offset`` (offset of the last
   metadata record it applied, -1 if none). It is caught up once that offset reaches its own
   registration record (offset = broker_epoch) - Kafka's rule - and a fenced, caught-up broker
   that does not ask to stay fenced is unfenced (UnfenceBrokerRecord, then leader elections
   for leaderless partitions it replicates).
3. A broker silent for longer than ``broker.session.timeout.ms`` is fenced (partition changes
   moving its leaderships and dropping it from ISRs, then FenceBrokerRecord). ``want_fence``
   fences it too. ``want_shut_down`` starts a controlled shutdown (controller/controlled_shutdown.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Collection

from brokerlab.errors import ErrorCode
from brokerlab.sansio import TraceEvent
from brokerlab.v1.common_pb2 import Endpoint
from brokerlab.v1.controller_pb2 import (
    BrokerHeartbeatRequest,
    BrokerHeartbeatResponse,
    RegisterBrokerRequest,
    RegisterBrokerResponse,
)
from brokerlab.v1.metadata_pb2 import (
    FenceBrokerRecord,
    MetadataRecord,
    RegisterBrokerRecord,
    UnfenceBrokerRecord,
)
from controller.partition_change import changes_for_fenced_broker, changes_for_unfenced_broker
from controller.result import ControllerResult
from controller.state import BrokerRegistration, ControllerState


@dataclass
class ShutdownProgress:
    """A broker in controlled shutdown (soft state, as Kafka's CONTROLLED_SHUTDOWN state)."""

    started_ms: int
    # Brokers that took over from it (new leaders, leaders whose ISR it left) -> the journal
    # offset they must have replayed before it may stop, so nobody waits for it after it left.
    waits: dict[int, int] = field(default_factory=dict)
    leaders_moved: int = 0


class BrokerHeartbeatManager:
    """What the controller knows of each broker without journaling it (as in Kafka): when it was
    last heard from, which metadata offset it has replayed, whether it is shutting down.

    A broker's session is valid while ``now_ms - last_contact_ms <= session_timeout_ms``.
    """

    def __init__(self, session_timeout_ms: int) -> None:
        self.session_timeout_ms = session_timeout_ms
        self._last_contact_ms: dict[int, int] = {}
        self._metadata_offsets: dict[int, int] = {}
        self.shutting_down: dict[int, ShutdownProgress] = {}

    def touch(self, broker_id: int, now_ms: int) -> None:
        self._last_contact_ms[broker_id] = now_ms

    def last_contact_ms(self, broker_id: int) -> int | None:
        return self._last_contact_ms.get(broker_id)

    def expired(self, now_ms: int, broker_ids: list[int]) -> list[int]:
        """Those of ``broker_ids`` whose session has run out, oldest contact first."""
        out = [b for b in broker_ids if b in self._last_contact_ms and now_ms - self._last_contact_ms[b] > self.session_timeout_ms]
        return sorted(out, key=lambda b: (self._last_contact_ms[b], b))

    def next_expiry_ms(self, broker_ids: list[int]) -> int | None:
        times = [self._last_contact_ms[b] for b in broker_ids if b in self._last_contact_ms]
        return min(times) + self.session_timeout_ms + 1 if times else None

    def observe_metadata_offset(self, broker_id: int, offset: int) -> None:
        """The broker has replayed the journal up to ``offset`` (heartbeat or metadata fetch)."""
        if offset > self._metadata_offsets.get(broker_id, -1):
            self._metadata_offsets[broker_id] = offset

    def metadata_offset(self, broker_id: int) -> int:
        return self._metadata_offsets.get(broker_id, -1)

    def new_registration(self, broker_id: int) -> None:
        """A new incarnation: it replays the journal from scratch and is not shutting down."""
        self._metadata_offsets.pop(broker_id, None)
        self.shutting_down.pop(broker_id, None)

    def fenced(self, broker_id: int) -> None:
        self.shutting_down.pop(broker_id, None)


def _invalid_registration(request: RegisterBrokerRequest) -> str | None:
    if request.broker_id < 0:
        return f"broker id must be >= 0, got {request.broker_id}"
    if not request.endpoint.host or not 0 < request.endpoint.port < 65536:
        return f"broker {request.broker_id} needs an endpoint host and a port in 1..65535"
    if not request.incarnation_id:
        return f"broker {request.broker_id} sent no incarnation_id"
    return None


def register_broker(
    state: ControllerState, request: RegisterBrokerRequest, next_offset: int, unclean: bool, shutting_down: Collection[int] = ()
) -> ControllerResult:
    """``next_offset`` is the journal end offset: the records written here start at it."""
    problem = _invalid_registration(request)
    if problem is not None:
        return ControllerResult(RegisterBrokerResponse(error_code=ErrorCode.INVALID_REQUEST, error_message=problem))
    existing = state.brokers.get(request.broker_id)
    if existing is not None and existing.incarnation_id == request.incarnation_id:
        return ControllerResult(RegisterBrokerResponse(broker_epoch=existing.broker_epoch))
    if request.incarnation_id in state.retired_incarnations.get(request.broker_id, ()):
        # An old process (e.g. paused, then resumed after its replacement started) must not
        # take the id back; Kafka says DUPLICATE_BROKER_REGISTRATION here.
        message = f"incarnation {request.incarnation_id} of broker {request.broker_id} was replaced by a newer one"
        return ControllerResult(RegisterBrokerResponse(error_code=ErrorCode.STALE_BROKER_EPOCH, error_message=message))
    result = ControllerResult()
    if existing is not None and not existing.fenced:
        result.add(_fence(state, existing, "broker_restarted", unclean, shutting_down, fence_record=False))
    broker_epoch = next_offset + len(result.records)
    record = RegisterBrokerRecord(
        broker_id=request.broker_id,
        broker_epoch=broker_epoch,
        endpoint=Endpoint(host=request.endpoint.host, port=request.endpoint.port),
        rack=request.rack,
        incarnation_id=request.incarnation_id,
        fenced=True,
    )
    if request.HasField("external_endpoint"):  # optional second listener (docker-compose)
        record.external_endpoint.CopyFrom(request.external_endpoint)
    result.records.append(MetadataRecord(register_broker=record))
    result.events.append(
        TraceEvent(
            "BrokerRegistered",
            {
                "broker_id": request.broker_id,
                "broker_epoch": broker_epoch,
                "endpoint": f"{request.endpoint.host}:{request.endpoint.port}",
                "rack": request.rack,
                "incarnation_id": request.incarnation_id,
                "previous_epoch": existing.broker_epoch if existing is not None else -1,
            },
        ),
    )
    result.response = RegisterBrokerResponse(broker_epoch=broker_epoch)
    return result


def stale_heartbeat(state: ControllerState, request: BrokerHeartbeatRequest) -> ControllerResult | None:
    """STALE_BROKER_EPOCH unless the heartbeat comes from the current registration of its broker."""
    broker = state.brokers.get(request.broker_id)
    if broker is not None and broker.broker_epoch == request.broker_epoch:
        return None
    message = (
        f"broker {request.broker_id} is not registered"
        if broker is None
        else f"broker {request.broker_id} has epoch {broker.broker_epoch}, not {request.broker_epoch}"
    )
    return ControllerResult(BrokerHeartbeatResponse(error_code=ErrorCode.STALE_BROKER_EPOCH, error_message=message, is_fenced=True))


def broker_heartbeat(
    state: ControllerState, request: BrokerHeartbeatRequest, unclean: bool, shutting_down: Collection[int] = ()
) -> ControllerResult:
    """A heartbeat of a current registration that does not ask to shut down."""
    broker = state.brokers[request.broker_id]
    caught_up = request.current_metadata_offset >= broker.broker_epoch
    fenced = broker.fenced
    result = ControllerResult()
    if request.want_fence:
        if not broker.fenced:
            result.add(fence_broker(state, broker, "fence_requested", unclean, shutting_down))
            fenced = True
    elif broker.fenced and caught_up:
        result.add(unfence_broker(state, broker, unclean, shutting_down))
        fenced = False
    result.response = BrokerHeartbeatResponse(is_caught_up=caught_up, is_fenced=fenced)
    return result


def fence_broker(
    state: ControllerState, broker: BrokerRegistration, reason: str, unclean: bool, shutting_down: Collection[int] = ()
) -> ControllerResult:
    return _fence(state, broker, reason, unclean, shutting_down, fence_record=True)


def _fence(
    state: ControllerState,
    broker: BrokerRegistration,
    reason: str,
    unclean: bool,
    shutting_down: Collection[int],
    fence_record: bool,
) -> ControllerResult:
    """Move leaderships and ISR membership off ``broker`` first, then (optionally) fence it.

    In that order every prefix of the records keeps "a leader is an unfenced broker" true.
    A re-registration fences through its new (fenced) RegisterBrokerRecord instead.
    """
    changes = changes_for_fenced_broker(state, broker.broker_id, reason, unclean, shutting_down)
    result = ControllerResult(records=[c.record for c in changes])
    if fence_record:
        result.records.append(MetadataRecord(fence_broker=FenceBrokerRecord(broker_id=broker.broker_id, broker_epoch=broker.broker_epoch)))
    result.events.append(
        TraceEvent(
            "BrokerFenced",
            {
                "broker_id": broker.broker_id,
                "broker_epoch": broker.broker_epoch,
                "reason": reason,
                "leaders_moved": sum(1 for c in changes for e in c.events if e.name == "LeaderChanged"),
            },
        )
    )
    for change in changes:
        result.events.extend(change.events)
    return result


def unfence_broker(
    state: ControllerState, broker: BrokerRegistration, unclean: bool, shutting_down: Collection[int] = ()
) -> ControllerResult:
    changes = changes_for_unfenced_broker(state, broker.broker_id, "broker_unfenced", unclean, shutting_down)
    record = MetadataRecord(unfence_broker=UnfenceBrokerRecord(broker_id=broker.broker_id, broker_epoch=broker.broker_epoch))
    result = ControllerResult(records=[record] + [c.record for c in changes])
    result.events.append(TraceEvent("BrokerUnfenced", {"broker_id": broker.broker_id, "broker_epoch": broker.broker_epoch}))
    for change in changes:
        result.events.extend(change.events)
    return result
