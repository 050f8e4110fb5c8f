"""Group membership (sans-IO): Kafka's ``AbstractCoordinator`` + ``ConsumerCoordinator``.

``GroupMembership`` finds the coordinator, joins (MEMBER_ID_REQUIRED round trip included),
assigns when it is the leader (with the negotiated assignor), syncs, heartbeats, leaves, notices
metadata and subscription changes, and enforces ``max.poll.interval.ms``. Its states and their
rules are in ``client.consumer.group.state``. It never calls the application: the asyncio
facade runs the callbacks on the poll path (``partitions_lost``, ``pending_assignment``) and
tells it when the join may start (``allow_join``), as Kafka's poll thread does.

Time comes in as ``now_ms``; envelopes go to ``broker-<id>`` (FindCoordinator to any broker,
the rest to the coordinator, whose address ``coordinator_address`` holds).
"""

from __future__ import annotations

from typing import Any

from brokerlab.errors import ErrorCode, KafkaError, error_name
from brokerlab.ids import TopicPartition, broker_node
from brokerlab.sansio import Effects, Envelope, RequestIds
from brokerlab.v1 import group_pb2
from client.consumer.assignors import (
    Subscription,
    assignors,
    decode_assignment,
    decode_subscription,
    encode_assignment,
    encode_subscription,
    rebalance_protocol,
)
from client.consumer.group.offsets import OffsetRequests
from client.consumer.group.state import TRANSITIONS, FatalGroupError, GroupConfig, MemberState
from client.metadata import MetadataCache

COORDINATOR_ERRORS = frozenset({ErrorCode.NOT_COORDINATOR, ErrorCode.COORDINATOR_NOT_AVAILABLE})
RETRY_JOIN = frozenset({ErrorCode.COORDINATOR_LOAD_IN_PROGRESS, ErrorCode.REBALANCE_IN_PROGRESS,
                        ErrorCode.REQUEST_TIMED_OUT, ErrorCode.NETWORK_EXCEPTION})


class GroupMembership:
    def __init__(self, config: GroupConfig, metadata: MetadataCache, node: str = "client-consumer") -> None:
        self.config = config
        self.metadata = metadata
        self.node = node
        self.assignors = assignors(config.partition_assignment_strategy)
        self.protocol = rebalance_protocol(self.assignors)
        self.state = MemberState.UNJOINED
        self.member_id = ""
        self.generation_id = -1
        self.protocol_name = ""
        self.leader_id = ""
        self.coordinator_id: int | None = None
        self.coordinator_address: str | None = None
        self.coordinator_problem = ""  # why the last FindCoordinator failed (for timeouts)
        self.subscription: tuple[str, ...] = ()
        self.owned: tuple[TopicPartition, ...] = ()
        self.last_assignment: tuple[TopicPartition, ...] = ()  # the sticky assignor's memory
        self.pending_assignment: tuple[TopicPartition, ...] | None = None
        self.partitions_lost = False  # our generation is gone: owned partitions are someone else's
        self.rejoin_needed = True
        self.rejoin_reason = ""
        self.join_allowed = False
        self.fatal: KafkaError | None = None
        self.poll_timeout_note = ""
        self.last_poll_ms = 0
        self.offsets = OffsetRequests(self)
        self._ids = RequestIds()
        self._inflight: dict[str, int | None] = {rpc: None for rpc in
                                                 ("FindCoordinator", "JoinGroup", "SyncGroup", "Heartbeat")}
        self._leaves: set[int] = set()
        self._find_due_ms = 0
        self._find_failures = 0
        self._join_due_ms = 0
        self._heartbeat_due_ms = 0
        self._last_heartbeat_ok_ms = 0
        self._next_broker = 0
        self._awaiting_metadata: group_pb2.JoinGroupResponse | None = None
        self._snapshot: dict[str, int] = {}  # partition counts the current assignment was made for
        self._now_ms = 0

    # ------------------------------------------------------------------ the application's side

    @property
    def is_dynamic(self) -> bool:
        return not self.config.group_instance_id

    @property
    def in_generation(self) -> bool:
        return self.generation_id >= 0 and bool(self.member_id)

    def subscribe(self, topics: list[str] | tuple[str, ...]) -> None:
        new = tuple(sorted(set(topics)))
        if new == self.subscription:
            return
        old, self.subscription = self.subscription, new
        self.metadata.add_topics(new)
        if old:
            self.request_rejoin(f"subscription-change: {','.join(old) or '-'} -> {','.join(new) or '-'}")

    def request_rejoin(self, reason: str) -> None:
        if not self.rejoin_needed:
            self.rejoin_needed = True
            self.rejoin_reason = reason

    def poll_called(self, now_ms: int) -> None:
        self.last_poll_ms = now_ms

    @property
    def needs_join(self) -> bool:
        return bool(self.subscription) and self.fatal is None and (
            self.state is MemberState.UNJOINED or (self.state is MemberState.STABLE and self.rejoin_needed))

    def allow_join(self) -> None:
        """The poll path has revoked what it must (eager) and committed: the join may go out."""
        self.join_allowed = True

    def assignment_applied(self, partitions: tuple[TopicPartition, ...]) -> None:
        self.owned = tuple(sorted(partitions))
        self.pending_assignment = None

    def partitions_released(self) -> None:
        """The application gave up everything it owned (eager revocation or lost partitions)."""
        self.owned = ()
        self.partitions_lost = False

    def leave(self, reason: str, now_ms: int, fx: Effects) -> int | None:
        """LeaveGroup for a dynamic member in a generation (Kafka's ``maybeLeaveGroup``); static
        members just go quiet so a restart within the session timeout keeps their partitions."""
        request_id = None
        if self.is_dynamic and self.member_id and self.coordinator_id is not None \
                and self.state is not MemberState.UNJOINED:
            request_id = self._ids.next()
            self._leaves.add(request_id)
            fx.send(Envelope(self.node, broker_node(self.coordinator_id), "LeaveGroup", group_pb2.LeaveGroupRequest(
                group_id=self.config.group_id, members=[group_pb2.MemberIdentity(
                    member_id=self.member_id, group_instance_id=self.config.group_instance_id, reason=reason)]),
                request_id))
            fx.event("GroupLeft", group=self.config.group_id, member_id=self.member_id, reason=reason)
        self._reset(fx, reset_member_id=True, why=reason)
        return request_id

    # ------------------------------------------------------------------ core contract

    def step(self, envelope: Envelope, now_ms: int) -> Effects:
        self._now_ms = now_ms
        fx = Effects()
        handler = {
            "FindCoordinator": self.on_find_coordinator_response, "JoinGroup": self.on_join_group_response,
            "SyncGroup": self.on_sync_group_response, "Heartbeat": self.on_heartbeat_response,
        }.get(envelope.rpc)
        if envelope.rpc == "LeaveGroup":
            if envelope.request_id in self._leaves:
                self._leaves.discard(envelope.request_id)
                fx.event("GroupLeaveAnswered", group=self.config.group_id,
                         error=envelope.transport_error or error_name(envelope.message.error_code))
        elif envelope.rpc in ("OffsetCommit", "OffsetFetch"):
            self.offsets.on_response(envelope, now_ms, fx)
        elif handler is not None and self._inflight.get(envelope.rpc) == envelope.request_id:
            self._inflight[envelope.rpc] = None
            handler(envelope, now_ms, fx)
        self._maybe_send(now_ms, fx)
        return fx

    def tick(self, now_ms: int) -> Effects:
        self._now_ms = now_ms
        fx = Effects()
        self._maybe_send(now_ms, fx)
        return fx

    def next_deadline_ms(self) -> int | None:
        """When ``tick`` can next make progress (never a past time it would not act on: the
        driver would spin)."""
        due = []
        if self.state is not MemberState.UNJOINED and self.member_id:
            due.append(self.last_poll_ms + self.config.max_poll_interval_ms + 1)
        if self.coordinator_id is None:
            if self._inflight["FindCoordinator"] is None and self._wants_coordinator():
                due.append(self._find_due_ms)
        else:
            if self.state in (MemberState.COMPLETING_REBALANCE, MemberState.STABLE):
                if self._inflight["Heartbeat"] is None:
                    due.append(self._heartbeat_due_ms)
                due.append(self._last_heartbeat_ok_ms + self.config.session_timeout_ms + 1)
            if self.join_allowed and self.needs_join and self._inflight["JoinGroup"] is None \
                    and self._inflight["SyncGroup"] is None:
                due.append(self._join_due_ms)
            if self._awaiting_metadata is not None:
                due.append(self._now_ms + self.config.retry_backoff_ms)
            if self.state is MemberState.STABLE and self._snapshot:
                due.append(self._now_ms + self.config.retry_backoff_ms * 10)  # metadata change checks
        return min(due) if due else None

    # ------------------------------------------------------------------ sending

    def _transition(self, new: MemberState, fx: Effects) -> None:
        if new is self.state:
            return
        if new not in TRANSITIONS[self.state]:
            raise AssertionError(f"member state {self.state.name} -> {new.name} is not allowed")
        fx.event("MemberStateChanged", group=self.config.group_id, old=self.state.name, new=new.name)
        self.state = new

    def _send(self, fx: Effects, rpc: str, message: Any, dst: int) -> int:
        request_id = self._ids.next()
        if rpc in self._inflight:
            self._inflight[rpc] = request_id
        fx.send(Envelope(self.node, broker_node(dst), rpc, message, request_id))
        return request_id

    def _wants_coordinator(self) -> bool:
        return bool(self.subscription) or self.offsets.has_work()

    def _maybe_send(self, now_ms: int, fx: Effects) -> None:
        config = self.config
        if self.state is not MemberState.UNJOINED and self.member_id \
                and now_ms - self.last_poll_ms > config.max_poll_interval_ms:
            self._on_poll_timeout(now_ms, fx)
        if self.state in (MemberState.COMPLETING_REBALANCE, MemberState.STABLE) and self.coordinator_id is not None \
                and now_ms - self._last_heartbeat_ok_ms > config.session_timeout_ms:
            self.mark_coordinator_unknown(f"no heartbeat answer within session.timeout.ms={config.session_timeout_ms}",
                                          fx)
        if self.coordinator_id is None:
            if self._inflight["FindCoordinator"] is None and now_ms >= self._find_due_ms and self._wants_coordinator():
                self._send_find_coordinator(now_ms, fx)
            return
        if self._awaiting_metadata is not None:
            self._assign_and_sync(self._awaiting_metadata, fx)
        if self.join_allowed and self.needs_join and self._inflight["JoinGroup"] is None \
                and self._inflight["SyncGroup"] is None and now_ms >= self._join_due_ms:
            self._send_join(fx)
        if self.state in (MemberState.COMPLETING_REBALANCE, MemberState.STABLE) \
                and self._inflight["Heartbeat"] is None and now_ms >= self._heartbeat_due_ms:
            self._heartbeat_due_ms = now_ms + config.heartbeat_interval_ms
            self._send(fx, "Heartbeat", group_pb2.HeartbeatRequest(
                group_id=config.group_id, generation_id=self.generation_id, member_id=self.member_id,
                group_instance_id=config.group_instance_id), self.coordinator_id)
        if self.state is MemberState.STABLE and not self.rejoin_needed:
            self._check_metadata()
        self.offsets.flush(now_ms, fx)

    def _send_find_coordinator(self, now_ms: int, fx: Effects) -> None:
        brokers = sorted(self.metadata.brokers())
        if not brokers:
            self.metadata.request_update()
            self._find_due_ms = now_ms + self.config.retry_backoff_ms
            return
        broker = brokers[self._next_broker % len(brokers)]
        self._next_broker += 1
        self._send(fx, "FindCoordinator", group_pb2.FindCoordinatorRequest(group_ids=[self.config.group_id]), broker)

    def _send_join(self, fx: Effects) -> None:
        config = self.config
        protocols = []
        for assignor in self.assignors:
            subscription = Subscription(self.subscription, assignor.user_data(self.last_assignment, self.generation_id),
                                        self.owned, self.generation_id)
            protocols.append(group_pb2.JoinGroupProtocol(name=assignor.name, metadata=encode_subscription(subscription)))
        reason = self.rejoin_reason or f"new member (client {config.client_id})"
        self._transition(MemberState.PREPARING_REBALANCE, fx)
        self._send(fx, "JoinGroup", group_pb2.JoinGroupRequest(
            group_id=config.group_id, session_timeout_ms=config.session_timeout_ms,
            rebalance_timeout_ms=config.rebalance_timeout_ms, member_id=self.member_id,
            group_instance_id=config.group_instance_id, protocol_type="consumer", protocols=protocols,
            reason=reason, client_id=config.client_id), self.coordinator_id)

    # ------------------------------------------------------------------ answers

    def on_find_coordinator_response(self, envelope: Envelope, now_ms: int, fx: Effects) -> None:
        found = None
        if envelope.transport_error is None and envelope.message.coordinators:
            found = envelope.message.coordinators[0]
        if found is not None and found.error_code == ErrorCode.NONE:
            self.coordinator_id = found.node_id
            self.coordinator_address = f"{found.endpoint.host}:{found.endpoint.port}"
            self.coordinator_problem = ""
            self._find_failures = 0
            self._last_heartbeat_ok_ms = now_ms  # a new coordinator gets a full session
            fx.event("CoordinatorDiscovered", group=self.config.group_id, coordinator_id=self.coordinator_id,
                     address=self.coordinator_address)
            return
        self.coordinator_problem = envelope.transport_error or (
            f"{error_name(found.error_code)}: {found.error_message}" if found is not None else "empty answer")
        if envelope.transport_error is not None:
            self.metadata.request_update()
        self._find_failures += 1
        backoff = min(self.config.retry_backoff_max_ms, self.config.retry_backoff_ms * (1 << min(self._find_failures, 10)))
        self._find_due_ms = now_ms + backoff

    def mark_coordinator_unknown(self, reason: str, fx: Effects) -> None:
        if self.coordinator_id is None:
            return
        fx.event("CoordinatorLost", group=self.config.group_id, coordinator_id=self.coordinator_id, reason=reason)
        self.coordinator_id = self.coordinator_address = None
        self._find_due_ms = self._now_ms
        for rpc in ("JoinGroup", "SyncGroup", "Heartbeat"):  # answers from the old one are void
            self._inflight[rpc] = None
        if self.state in (MemberState.PREPARING_REBALANCE, MemberState.COMPLETING_REBALANCE):
            self._transition(MemberState.UNJOINED, fx)
            self._awaiting_metadata = None

    def _coordinator_error(self, code: int, message: str, fx: Effects) -> bool:
        """Handle a coordinator-level error; True if it was one."""
        if code in COORDINATOR_ERRORS:
            self.mark_coordinator_unknown(f"{error_name(code)}: {message}", fx)
            return True
        return False

    def _fail(self, code: int, message: str, fx: Effects) -> None:
        self.fatal = FatalGroupError(code, message)
        fx.event("GroupMembershipFailed", group=self.config.group_id, error=error_name(code), reason=message)
        if self.state is not MemberState.UNJOINED:
            self._transition(MemberState.UNJOINED, fx)

    def _reset(self, fx: Effects, reset_member_id: bool, why: str) -> None:
        """Out of the generation (Kafka's ``resetStateAndGeneration``); owned partitions are lost."""
        if self.owned or self.pending_assignment:
            self.partitions_lost = True
        self.pending_assignment = None
        self.generation_id = -1
        self.protocol_name = self.leader_id = ""
        if reset_member_id:
            self.member_id = ""
        self._awaiting_metadata = None
        self._snapshot = {}
        self.rejoin_needed = True
        self.rejoin_reason = self.rejoin_reason or why
        if self.state is not MemberState.UNJOINED:
            self._transition(MemberState.UNJOINED, fx)

    def _transport_failure(self, rpc: str, envelope: Envelope, fx: Effects) -> None:
        self.mark_coordinator_unknown(f"{rpc} failed: {envelope.transport_error}", fx)
        if self.state in (MemberState.PREPARING_REBALANCE, MemberState.COMPLETING_REBALANCE):
            self._transition(MemberState.UNJOINED, fx)

    def _join_failed(self, code: int, message: str, rejoin_ms: int, fx: Effects) -> None:
        """A JoinGroup or SyncGroup error: back to UNJOINED; then find the coordinator again,
        rejoin (with a new member id, or in a new generation), join again at ``rejoin_ms``
        (a retriable error), or fail."""
        self._transition(MemberState.UNJOINED, fx)
        if self._coordinator_error(code, message, fx):
            return
        if code == ErrorCode.UNKNOWN_MEMBER_ID:
            self._reset(fx, reset_member_id=True, why="member-rejoined: unknown member id")
        elif code == ErrorCode.ILLEGAL_GENERATION:
            self._reset(fx, reset_member_id=False, why="member-rejoined: illegal generation")
        elif code in RETRY_JOIN:
            self._join_due_ms = rejoin_ms
        else:
            self._fail(code, message or error_name(code), fx)

    def on_join_group_response(self, envelope: Envelope, now_ms: int, fx: Effects) -> None:
        if envelope.transport_error is not None:
            self._transport_failure("JoinGroup", envelope, fx)
            return
        response: group_pb2.JoinGroupResponse = envelope.message
        code = response.error_code
        if code == ErrorCode.MEMBER_ID_REQUIRED:
            self.member_id = response.member_id
            self._send_join(fx)  # at once, with the id (KIP-394)
            return
        if code == ErrorCode.NONE:
            self.member_id = response.member_id
            self.generation_id = response.generation_id
            self.protocol_name = response.protocol_name
            self.leader_id = response.leader
            self._transition(MemberState.COMPLETING_REBALANCE, fx)
            self._last_heartbeat_ok_ms = now_ms
            self._heartbeat_due_ms = now_ms + self.config.heartbeat_interval_ms
            fx.event("GroupJoinAnswered", group=self.config.group_id, generation_id=self.generation_id,
                     member_id=self.member_id, leader=self.leader_id == self.member_id, protocol=self.protocol_name)
            if self.leader_id == self.member_id and not response.skip_assignment:
                self._assign_and_sync(response, fx)
            else:
                self._send_sync({}, fx)
            return
        self._join_failed(code, response.error_message, now_ms + self.config.retry_backoff_ms, fx)

    def _assign_and_sync(self, response: group_pb2.JoinGroupResponse, fx: Effects) -> None:
        """Leader: run the chosen assignor over every member's subscription (once the metadata
        knows every topic they subscribe to) and send the plan."""
        subscriptions = {m.member_id: decode_subscription(m.metadata, m.group_instance_id) for m in response.members}
        topics = sorted({t for s in subscriptions.values() for t in s.topics})
        self.metadata.add_topics(topics)
        counts = {}
        for topic in topics:
            count = self.metadata.partition_count(topic)
            if count is None and topic not in self.metadata.topic_errors:
                self.metadata.request_update()
                self._awaiting_metadata = response  # assign once the metadata arrives
                return
            counts[topic] = count or 0
        self._awaiting_metadata = None
        assignor = next(a for a in self.assignors if a.name == response.protocol_name)
        plan = assignor.assign(counts, subscriptions)
        self._snapshot = counts
        idle = [m for m, tps in plan.items() if not tps]
        fx.event("GroupAssignmentComputed", group=self.config.group_id, generation_id=response.generation_id,
                 assignor=assignor.name, members=len(plan), partitions=sum(len(t) for t in plan.values()),
                 idle_members=len(idle))
        self._send_sync({m: encode_assignment(tps) for m, tps in plan.items()}, fx)

    def _send_sync(self, assignments: dict[str, bytes], fx: Effects) -> None:
        self._send(fx, "SyncGroup", group_pb2.SyncGroupRequest(
            group_id=self.config.group_id, generation_id=self.generation_id, member_id=self.member_id,
            group_instance_id=self.config.group_instance_id, protocol_type="consumer",
            protocol_name=self.protocol_name,
            assignments=[group_pb2.SyncGroupAssignment(member_id=m, assignment=a) for m, a in assignments.items()]),
            self.coordinator_id)

    def on_sync_group_response(self, envelope: Envelope, now_ms: int, fx: Effects) -> None:
        if envelope.transport_error is not None:
            self._transport_failure("SyncGroup", envelope, fx)
            return
        response: group_pb2.SyncGroupResponse = envelope.message
        code = response.error_code
        if code == ErrorCode.NONE:
            assigned = decode_assignment(response.assignment)
            self._transition(MemberState.STABLE, fx)
            self.pending_assignment = assigned
            self.last_assignment = assigned
            self.rejoin_needed = False
            self.rejoin_reason = ""
            self.join_allowed = False
            self.poll_timeout_note = ""
            if self.leader_id != self.member_id:
                self._snapshot = {t: self.metadata.partition_count(t) or 0 for t in self.subscription}
            fx.event("GroupJoined", group=self.config.group_id, generation_id=self.generation_id,
                     member_id=self.member_id, partitions=len(assigned), protocol=self.protocol_name)
            return
        # REBALANCE_IN_PROGRESS: the group began another rebalance, so rejoin at once.
        rejoin_ms = now_ms + (self.config.retry_backoff_ms if code != ErrorCode.REBALANCE_IN_PROGRESS else 0)
        self._join_failed(code, response.error_message, rejoin_ms, fx)

    def on_heartbeat_response(self, envelope: Envelope, now_ms: int, fx: Effects) -> None:
        if envelope.transport_error is not None:
            self.mark_coordinator_unknown(f"Heartbeat failed: {envelope.transport_error}", fx)
            return
        code = envelope.message.error_code
        if code == ErrorCode.NONE:
            self._last_heartbeat_ok_ms = now_ms
        elif code == ErrorCode.REBALANCE_IN_PROGRESS:
            self._last_heartbeat_ok_ms = now_ms
            if self.state is MemberState.STABLE:
                self.request_rejoin("member-rejoined: the group is rebalancing")
                fx.event("GroupRebalanceNoticed", group=self.config.group_id, generation_id=self.generation_id)
        elif self._coordinator_error(code, envelope.message.error_message, fx):
            pass
        elif code == ErrorCode.UNKNOWN_MEMBER_ID:
            self._reset(fx, reset_member_id=True, why="member-rejoined: unknown member id")
        elif code == ErrorCode.ILLEGAL_GENERATION:
            self._reset(fx, reset_member_id=False, why="member-rejoined: illegal generation")
        elif code == ErrorCode.FENCED_INSTANCE_ID:
            self._fail(code, envelope.message.error_message, fx)
        self._heartbeat_due_ms = now_ms + self.config.heartbeat_interval_ms

    # ------------------------------------------------------------------ watching

    def _on_poll_timeout(self, now_ms: int, fx: Effects) -> None:
        idle_ms = now_ms - self.last_poll_ms
        self.poll_timeout_note = (
            f"poll() was not called for {idle_ms} ms, more than max.poll.interval.ms={self.config.max_poll_interval_ms}")
        fx.event("PollIntervalExceeded", group=self.config.group_id, member_id=self.member_id, idle_ms=idle_ms,
                 max_poll_interval_ms=self.config.max_poll_interval_ms)
        self.leave(f"poll-interval-exceeded: {self.poll_timeout_note}", now_ms, fx)

    def _check_metadata(self) -> None:
        for topic, known in self._snapshot.items():
            count = self.metadata.partition_count(topic)
            if count is not None and count != known:
                self.request_rejoin(f"metadata-change: {topic} has {count} partitions (assigned for {known})")
                return
