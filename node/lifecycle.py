"""The broker's life with the controller: register, heartbeat, follow the metadata journal.

Kafka's ``BrokerLifecycleManager`` + the metadata follower, sans-IO. It decides what to send to
the controller and when; the broker core hands it the controller's answers and gets back the
metadata records to replay. States and their transitions:

=========  ===========================================================================
STARTING   not registered. Sends RegisterBroker (one at a time, exponential back-off on a
           transport error or an error code). -> RECOVERY when an answer gives a broker epoch.
RECOVERY   registered (fenced until the controller unfences it) or behind the journal.
           -> RUNNING once a heartbeat answer says "not fenced" and the image has applied
           our own registration record (offset = broker_epoch) and everything up to the
           journal end offset seen in a FetchMetadataRecords answer.
RUNNING    ready: serves, and the gRPC health service says SERVING.
           -> RECOVERY when the metadata journal fences our registration (the controller
           missed our heartbeats past broker.session.timeout.ms). Only the journal, which is
           ordered, can take us out of RUNNING: a heartbeat answer may be older than the
           journal records we already applied (the controller answers "fenced" to the very
           heartbeat that unfences us).
PENDING_CONTROLLED_SHUTDOWN
           SIGTERM arrived (``begin_controlled_shutdown``): heartbeats carry
           ``want_shut_down=true`` so the controller moves our leaderships away and takes us
           out of the ISRs; we keep serving and following the journal meanwhile (being fenced
           by it does not send us back to RECOVERY). -> SHUTTING_DOWN when a heartbeat answer
           says ``should_shut_down`` (or our registration turned out to be gone).
SHUTTING_DOWN
           the controller let us go: no more heartbeats (one without ``want_shut_down``
           could unfence us again); the process stops.
any        -> STARTING when a heartbeat answer says STALE_BROKER_EPOCH: our registration is
           gone or replaced, so register again (with the same incarnation id). STARTING ->
           SHUTTING_DOWN directly: an unregistered broker has nothing to hand over.
=========  ===========================================================================

The metadata long-poll runs in every state and heartbeats in every registered state but
SHUTTING_DOWN; each has at most one call in flight.

Initial catch-up (Kafka's ``initialCatchUpFuture``): the broker acts on its image (takes
leaderships and followerships, serves requests) only once the image holds our own current
registration record (``last_applied_offset >= broker_epoch``) and reached the journal end of
an answer. The journal end alone is not enough: RegisterBroker and the first
FetchMetadataRecords are two calls that may be answered in either order, so a restarted
broker's first answer can end before its new registration and still show it leading at its
previous incarnation's epoch.
"""

from __future__ import annotations

import enum

from brokerlab.errors import ErrorCode, error_name
from brokerlab.ids import CONTROLLER_NODE, broker_node
from brokerlab.sansio import Effects, Envelope, RequestIds
from brokerlab.v1 import common_pb2, controller_pb2, metadata_pb2
from node.config import BrokerConfig
from node.metadata_image import BrokerImage

# Heartbeat period while waiting for the controller to grant a controlled shutdown.
CONTROLLED_SHUTDOWN_HEARTBEAT_INTERVAL_MS = 20


class BrokerState(enum.Enum):
    STARTING = "starting"
    RECOVERY = "recovery"
    RUNNING = "running"
    PENDING_CONTROLLED_SHUTDOWN = "pending_controlled_shutdown"
    SHUTTING_DOWN = "shutting_down"


TRANSITIONS: dict[BrokerState, frozenset[BrokerState]] = {
    BrokerState.STARTING: frozenset({BrokerState.RECOVERY, BrokerState.SHUTTING_DOWN}),
    BrokerState.RECOVERY: frozenset({BrokerState.RUNNING, BrokerState.STARTING,
                                     BrokerState.PENDING_CONTROLLED_SHUTDOWN}),
    BrokerState.RUNNING: frozenset({BrokerState.RECOVERY, BrokerState.STARTING,
                                    BrokerState.PENDING_CONTROLLED_SHUTDOWN}),
    BrokerState.PENDING_CONTROLLED_SHUTDOWN: frozenset({BrokerState.SHUTTING_DOWN}),
    BrokerState.SHUTTING_DOWN: frozenset(),
}


class Backoff:
    """Exponential back-off without jitter (a core has no randomness of its own here)."""

    def __init__(self, initial_ms: int, max_ms: int) -> None:
        self.initial_ms = initial_ms
        self.max_ms = max_ms
        self.failures = 0

    def failed(self) -> int:
        """Record a failure; returns how long to wait before the next try."""
        self.failures += 1
        return min(self.max_ms, self.initial_ms * (1 << min(self.failures - 1, 20)))

    def succeeded(self) -> None:
        self.failures = 0


class BrokerLifecycle:
    def __init__(
        self,
        config: BrokerConfig,
        endpoint: tuple[str, int],
        rack: str,
        incarnation_id: str,
        request_ids: RequestIds,
    ) -> None:
        self.config = config
        self.broker_id = config.broker_id
        self.endpoint = endpoint
        self.rack = rack
        self.incarnation_id = incarnation_id
        self._ids = request_ids
        self.state = BrokerState.STARTING
        self.broker_epoch = -1
        self.fenced = True
        # Journal end offset from the latest FetchMetadataRecords answer (-1: none yet).
        self.journal_end_offset = -1
        self.caught_up = False
        # Set once the image first held our registration and reached the journal end; the
        # broker acts on the image (roles, serving requests) from then on.
        self.initial_catch_up_done = False
        self.cluster_id = ""
        self.controller_id = 0
        # Due times and the request id in flight per call kind (None: nothing in flight).
        self._register_due_ms = 0
        self._heartbeat_due_ms = 0
        self._fetch_due_ms = 0
        self._describe_due_ms = 0
        self._inflight: dict[str, int | None] = {
            "RegisterBroker": None,
            "BrokerHeartbeat": None,
            "FetchMetadataRecords": None,
            "DescribeCluster": None,
        }
        self._register_backoff = Backoff(config.retry_backoff_ms, config.retry_backoff_max_ms)
        self._fetch_backoff = Backoff(config.retry_backoff_ms, config.retry_backoff_max_ms)
        self._heartbeat_failing = False
        self._saw_own_registration = False

    @property
    def registered(self) -> bool:
        return self.state is not BrokerState.STARTING

    @property
    def shutting_down(self) -> bool:
        return self.state in (BrokerState.PENDING_CONTROLLED_SHUTDOWN, BrokerState.SHUTTING_DOWN)

    def begin_controlled_shutdown(self, now_ms: int, fx: Effects) -> None:
        """Ask the controller to let us go (heartbeat at once with want_shut_down)."""
        if self.shutting_down:
            return
        if self.state is BrokerState.STARTING or self.broker_epoch < 0:
            self._transition(BrokerState.SHUTTING_DOWN, fx, "not registered: nothing to hand over")
            return
        self._transition(BrokerState.PENDING_CONTROLLED_SHUTDOWN, fx, "controlled shutdown requested")
        self._heartbeat_due_ms = now_ms

    @property
    def is_ready(self) -> bool:
        return self.state is BrokerState.RUNNING

    def _transition(self, new_state: BrokerState, fx: Effects, reason: str) -> None:
        if new_state is self.state:
            return
        if new_state not in TRANSITIONS[self.state]:
            raise AssertionError(f"invalid broker state transition {self.state.name} -> {new_state.name}")
        fx.event("BrokerStateChanged", old=self.state.name, new=new_state.name, reason=reason)
        self.state = new_state

    # ------------------------------------------------------------------ sends

    def maybe_send(self, now_ms: int, last_applied_offset: int, fx: Effects) -> None:
        """Send whatever is due and not already in flight."""
        inflight = self._inflight
        if self.state is BrokerState.STARTING:
            if inflight["RegisterBroker"] is None and now_ms >= self._register_due_ms:
                request = controller_pb2.RegisterBrokerRequest(
                    broker_id=self.broker_id,
                    endpoint=common_pb2.Endpoint(host=self.endpoint[0], port=self.endpoint[1]),
                    rack=self.rack,
                    incarnation_id=self.incarnation_id,
                )
                if self.config.external_endpoint is not None:
                    host, port = self.config.external_endpoint
                    request.external_endpoint.CopyFrom(common_pb2.Endpoint(host=host, port=port))
                self._send(fx, "RegisterBroker", request)
        elif (
            inflight["BrokerHeartbeat"] is None
            and now_ms >= self._heartbeat_due_ms
            and self.state is not BrokerState.SHUTTING_DOWN
        ):
            interval_ms = self.config.heartbeat_interval_ms
            if self.state is BrokerState.PENDING_CONTROLLED_SHUTDOWN:
                # The controller lets us go on a later heartbeat, once the brokers taking over
                # have replayed the move: ask often, a controlled shutdown has ~200 ms.
                interval_ms = min(interval_ms, CONTROLLED_SHUTDOWN_HEARTBEAT_INTERVAL_MS)
            self._heartbeat_due_ms = now_ms + interval_ms
            self._send(fx, "BrokerHeartbeat", controller_pb2.BrokerHeartbeatRequest(
                broker_id=self.broker_id,
                broker_epoch=self.broker_epoch,
                current_metadata_offset=last_applied_offset,
                want_shut_down=self.state is BrokerState.PENDING_CONTROLLED_SHUTDOWN,
            ))
        if inflight["FetchMetadataRecords"] is None and now_ms >= self._fetch_due_ms:
            self._send(fx, "FetchMetadataRecords", controller_pb2.FetchMetadataRecordsRequest(
                broker_id=self.broker_id,
                fetch_offset=last_applied_offset + 1,
                max_wait_ms=self.config.metadata_fetch_max_wait_ms,
                max_records=self.config.metadata_fetch_max_records,
            ))
        # The cluster id only comes with DescribeCluster; ask once after registering.
        if (
            self.registered
            and not self.cluster_id
            and inflight["DescribeCluster"] is None
            and now_ms >= self._describe_due_ms
        ):
            self._send(fx, "DescribeCluster", controller_pb2.DescribeClusterRequest())

    def _send(self, fx: Effects, rpc: str, message) -> None:
        request_id = self._ids.next()
        self._inflight[rpc] = request_id
        fx.send(Envelope(broker_node(self.broker_id), CONTROLLER_NODE, rpc, message, request_id))

    def next_deadline_ms(self) -> int | None:
        inflight = self._inflight
        due = None
        if self.state is BrokerState.STARTING:
            if inflight["RegisterBroker"] is None:
                due = self._register_due_ms
        elif inflight["BrokerHeartbeat"] is None and self.state is not BrokerState.SHUTTING_DOWN:
            due = self._heartbeat_due_ms
        if inflight["FetchMetadataRecords"] is None and (due is None or self._fetch_due_ms < due):
            due = self._fetch_due_ms
        if (self.registered and not self.cluster_id and inflight["DescribeCluster"] is None
                and (due is None or self._describe_due_ms < due)):
            due = self._describe_due_ms
        return due

    # ------------------------------------------------------------------ answers

    def accepts(self, envelope: Envelope) -> bool:
        """True (and the call is no longer in flight) if this answers our latest call of its kind."""
        if self._inflight.get(envelope.rpc) != envelope.request_id:
            return False
        self._inflight[envelope.rpc] = None
        return True

    def on_register_broker_response(self, envelope: Envelope, now_ms: int, fx: Effects) -> None:
        response = envelope.message
        if envelope.transport_error or response.error_code != ErrorCode.NONE:
            reason = envelope.transport_error or f"{error_name(response.error_code)}: {response.error_message}"
            wait_ms = self._register_backoff.failed()
            self._register_due_ms = now_ms + wait_ms
            fx.event("RegistrationFailed", reason=reason, retry_in_ms=wait_ms)
            return
        self._register_backoff.succeeded()
        self.broker_epoch = response.broker_epoch
        self.fenced = True
        self._saw_own_registration = False
        self._heartbeat_due_ms = now_ms  # heartbeat at once: that is how we get unfenced
        fx.event("BrokerRegistered", broker_id=self.broker_id, broker_epoch=self.broker_epoch,
                 incarnation_id=self.incarnation_id)
        self._transition(BrokerState.RECOVERY, fx, "registered")

    def on_broker_heartbeat_response(self, envelope: Envelope, now_ms: int, fx: Effects) -> None:
        response = envelope.message
        if envelope.transport_error or response.error_code != ErrorCode.NONE:
            if response is not None and response.error_code == ErrorCode.STALE_BROKER_EPOCH:
                self.broker_epoch = -1
                self.fenced = True
                if self.shutting_down:
                    self._transition(BrokerState.SHUTTING_DOWN, fx, "registration gone while shutting down")
                    return
                self._register_due_ms = now_ms
                self._transition(BrokerState.STARTING, fx, "stale broker epoch")
                return
            if not self._heartbeat_failing:
                reason = envelope.transport_error or f"{error_name(response.error_code)}: {response.error_message}"
                fx.event("HeartbeatFailed", reason=reason)
            self._heartbeat_failing = True
            return
        if self._heartbeat_failing:
            fx.event("HeartbeatRecovered")
        self._heartbeat_failing = False
        if self.state is BrokerState.PENDING_CONTROLLED_SHUTDOWN:
            if response.should_shut_down:
                self._transition(BrokerState.SHUTTING_DOWN, fx, "controller granted controlled shutdown")
            return
        if self.state is BrokerState.RECOVERY:
            self.fenced = response.is_fenced
            self._maybe_run(fx)

    def on_fetch_metadata_records_response(
        self, envelope: Envelope, now_ms: int, fx: Effects
    ) -> tuple[int, list[metadata_pb2.MetadataRecord]]:
        """Returns ``(base_offset, records)`` to replay; schedules the next long-poll."""
        response = envelope.message
        if envelope.transport_error or response.error_code != ErrorCode.NONE:
            wait_ms = self._fetch_backoff.failed()
            self._fetch_due_ms = now_ms + wait_ms
            if self._fetch_backoff.failures == 1:
                reason = envelope.transport_error or f"{error_name(response.error_code)}: {response.error_message}"
                fx.event("MetadataFetchFailed", reason=reason, retry_in_ms=wait_ms)
            return 0, []
        self._fetch_backoff.succeeded()
        self._fetch_due_ms = now_ms  # the next long-poll goes out at once
        self.journal_end_offset = response.end_offset
        return response.base_offset, list(response.records)

    def on_describe_cluster_response(self, envelope: Envelope, now_ms: int, fx: Effects) -> None:
        response = envelope.message
        if envelope.transport_error or response is None:
            self._describe_due_ms = now_ms + self.config.retry_backoff_max_ms
            return
        self.cluster_id = response.cluster_id
        self.controller_id = response.controller_id

    def registration_applied(self, last_applied_offset: int) -> bool:
        """Does the image hold our current registration record (its offset is our broker epoch)?"""
        return 0 <= self.broker_epoch <= last_applied_offset

    def may_act_on_image(self, last_applied_offset: int) -> bool:
        """May the broker act on an image that has applied up to ``last_applied_offset``?
        Once initially caught up, always (later answers are ordered after our registration)."""
        return self.initial_catch_up_done or (
            self.registration_applied(last_applied_offset)
            and last_applied_offset + 1 >= self.journal_end_offset
        )

    def metadata_applied(self, last_applied_offset: int, own: BrokerImage | None, now_ms: int, fx: Effects) -> None:
        """Called after replaying an answer's records, and after a registration answer
        (``own``: our broker in the image).

        Are we caught up with the journal, and does the journal fence or unfence us?
        """
        if (
            self.state is BrokerState.RECOVERY
            and not self._saw_own_registration
            and own is not None
            and own.broker_epoch == self.broker_epoch
        ):
            # Our registration record is applied: the controller unfences a broker whose
            # heartbeat shows it, so send that heartbeat now rather than an interval later.
            self._saw_own_registration = True
            if own.fenced:
                self._heartbeat_due_ms = min(self._heartbeat_due_ms, now_ms)
        self.caught_up = (self.registration_applied(last_applied_offset)
                          and last_applied_offset + 1 >= self.journal_end_offset)
        if self.caught_up and not self.initial_catch_up_done:
            self.initial_catch_up_done = True
            fx.event("MetadataCaughtUp", offset=last_applied_offset)
        if self.registered and own is not None and own.broker_epoch == self.broker_epoch:
            self.fenced = own.fenced
            if own.fenced and self.state is BrokerState.RUNNING:  # (never while shutting down)
                self._transition(BrokerState.RECOVERY, fx, "fenced in the metadata journal")
        self._maybe_run(fx)

    def _maybe_run(self, fx: Effects) -> None:
        if self.state is BrokerState.RECOVERY and not self.fenced and self.caught_up:
            self._transition(BrokerState.RUNNING, fx, "unfenced and caught up")
