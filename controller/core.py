"""ControllerCore: the sans-IO controller (brokers, fencing, topics, elections, ISR, metadata journal).

Every command follows Kafka's ControllerResult + replay pattern: a handler reads the state and
returns records plus a response; the core appends the records to the journal (fsynced), replays
them into the state, answers parked metadata fetches that were waiting for them, emits the trace
events, and only then releases the response. Start-up replays the whole journal.

Soft state (not journaled, as in Kafka): broker heartbeat times, the metadata offset each broker
has replayed, which brokers are in controlled shutdown, parked FetchMetadataRecords long-polls
and the leader-rebalance timer. After a restart every unfenced broker gets a fresh session from
the first ``step``/``tick`` (Kafka's grace period for a newly active controller), and a broker
still shutting down says so again in its next heartbeat.

The automatic leader rebalance (controller/elections.py) is armed, as in KRaft, only while some
partition is not led by its preferred replica: it runs ``leader.imbalance.check.interval.seconds``
after that is first seen, then every interval while it lasts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from brokerlab.errors import ErrorCode
from brokerlab.sansio import Effects, Envelope, Random, TraceEvent
from brokerlab.v1.common_pb2 import Endpoint
from brokerlab.v1.controller_pb2 import DescribeClusterResponse, FetchMetadataRecordsResponse
from controller.alter_partition import alter_partition
from controller.brokers import (
    BrokerHeartbeatManager,
    broker_heartbeat,
    fence_broker,
    register_broker,
    stale_heartbeat,
)
from controller.config import ControllerConfig
from controller.controlled_shutdown import controlled_shutdown
from controller.elections import elect_leaders, is_imbalanced, rebalance_leaders
from controller.journal import MetadataJournal
from controller.partition_change import eligible_brokers
from controller.producer_ids import allocate_producer_ids
from controller.result import ControllerResult
from controller.state import ControllerState
from controller.topics import create_topics, delete_topics

# FetchMetadataRecords.max_records when the broker sends 0, and the most one answer carries.
DEFAULT_FETCH_MAX_RECORDS = 1000
MAX_FETCH_MAX_RECORDS = 10_000


@dataclass
class ParkedFetch:
    envelope: Envelope
    fetch_offset: int
    max_records: int
    deadline_ms: int


class ControllerCore:
    def __init__(self, config: ControllerConfig, journal: MetadataJournal, random: Random, cluster_id: str) -> None:
        self.config = config
        self.journal = journal
        self.random = random
        self.cluster_id = cluster_id
        self.state = ControllerState()
        for record in journal.records():
            self.state.replay(record)
        self.heartbeats = BrokerHeartbeatManager(config.session_timeout_ms)
        self.parked: list[ParkedFetch] = []
        self._started = False
        # When the automatic leader rebalance runs next; None while every leader is preferred.
        self.rebalance_due_ms: int | None = None
        self._imbalance: tuple[int, bool] = (-1, False)  # (applied_records, imbalanced) cache
        # What start-up did, for the process to log (the core has no Effects before its first step).
        self.recovery_events = [
            TraceEvent(
                "JournalReplayed",
                {"records": journal.end_offset, "truncated_bytes": journal.truncated_bytes, "brokers": len(self.state.brokers), "topics": len(self.state.topics)},
            )
        ]
        self._handlers: dict[str, Callable[[Envelope, int], Effects]] = {
            "RegisterBroker": self.handle_register_broker,
            "BrokerHeartbeat": self.handle_broker_heartbeat,
            "FetchMetadataRecords": self.handle_fetch_metadata_records,
            "CreateTopics": self.handle_create_topics,
            "DeleteTopics": self.handle_delete_topics,
            "DescribeCluster": self.handle_describe_cluster,
            "AlterPartition": self.handle_alter_partition,
            "ElectLeaders": self.handle_elect_leaders,
            "AllocateProducerIds": self.handle_allocate_producer_ids,
        }

    # ---- the core contract ----
    def step(self, envelope: Envelope, now_ms: int) -> Effects:
        self._start(now_ms)
        if envelope.is_response:
            return Effects()  # the controller sends no requests, so no answers are expected
        handler = self._handlers.get(envelope.rpc)
        if handler is None:
            raise ValueError(f"the controller does not serve {envelope.rpc!r}")
        effects = handler(envelope, now_ms)
        self._arm_rebalance(now_ms)
        return effects

    def tick(self, now_ms: int) -> Effects:
        self._start(now_ms)
        effects = Effects()
        self._expire_parked(now_ms, effects)
        unfenced = [b.broker_id for b in self.state.unfenced_brokers()]
        for broker_id in self.heartbeats.expired(now_ms, unfenced):
            broker = self.state.brokers[broker_id]
            result = fence_broker(self.state, broker, "session_timeout", self.config.unclean_leader_election_enable, self._shutting_down())
            self.heartbeats.fenced(broker_id)
            self._commit(result, effects)
        if self.rebalance_due_ms is not None and now_ms >= self.rebalance_due_ms:
            self.rebalance_due_ms = None
            if self.config.auto_leader_rebalance_enable:
                eligible = eligible_brokers(self.state, self._shutting_down())
                self._commit(rebalance_leaders(self.state, eligible, self.config.leader_imbalance_per_broker_percentage), effects)
        self._arm_rebalance(now_ms)
        return effects

    def next_deadline_ms(self) -> int | None:
        if not self._started:
            return 0  # the first tick starts the sessions of brokers known from the journal
        deadlines = [p.deadline_ms for p in self.parked]
        expiry = self.heartbeats.next_expiry_ms([b.broker_id for b in self.state.unfenced_brokers()])
        if expiry is not None:
            deadlines.append(expiry)
        if self.rebalance_due_ms is not None:
            deadlines.append(self.rebalance_due_ms)
        return min(deadlines) if deadlines else None

    # ---- handlers ----
    def handle_register_broker(self, envelope: Envelope, now_ms: int) -> Effects:
        request = envelope.message
        result = register_broker(
            self.state, request, self.journal.end_offset, self.config.unclean_leader_election_enable, self._shutting_down()
        )
        if result.response.error_code == ErrorCode.NONE:
            if result.records:
                self.heartbeats.new_registration(request.broker_id)
            self.heartbeats.touch(request.broker_id, now_ms)
        return self._finish(envelope, result)

    def handle_broker_heartbeat(self, envelope: Envelope, now_ms: int) -> Effects:
        request = envelope.message
        stale = stale_heartbeat(self.state, request)
        if stale is not None:
            return self._finish(envelope, stale)
        self.heartbeats.touch(request.broker_id, now_ms)
        self.heartbeats.observe_metadata_offset(request.broker_id, request.current_metadata_offset)
        unclean = self.config.unclean_leader_election_enable
        if request.want_shut_down or request.broker_id in self.heartbeats.shutting_down:
            result = controlled_shutdown(self.state, request, self.heartbeats, self.journal.end_offset, now_ms, unclean)
        else:
            result = broker_heartbeat(self.state, request, unclean, self._shutting_down())
        return self._finish(envelope, result)

    def handle_alter_partition(self, envelope: Envelope, now_ms: int) -> Effects:
        return self._finish(envelope, alter_partition(self.state, envelope.message, self._shutting_down()))

    def handle_elect_leaders(self, envelope: Envelope, now_ms: int) -> Effects:
        eligible = eligible_brokers(self.state, self._shutting_down())
        return self._finish(envelope, elect_leaders(self.state, envelope.message, eligible))

    def handle_allocate_producer_ids(self, envelope: Envelope, now_ms: int) -> Effects:
        return self._finish(envelope, allocate_producer_ids(self.state, envelope.message))

    def handle_create_topics(self, envelope: Envelope, now_ms: int) -> Effects:
        return self._finish(envelope, create_topics(self.state, envelope.message, self.config, self.random))

    def handle_delete_topics(self, envelope: Envelope, now_ms: int) -> Effects:
        return self._finish(envelope, delete_topics(self.state, envelope.message))

    def handle_describe_cluster(self, envelope: Envelope, now_ms: int) -> Effects:
        response = DescribeClusterResponse(
            cluster_id=self.cluster_id,
            controller_id=self.config.node_id,
            controller_endpoint=Endpoint(host=self.config.endpoint_host, port=self.config.endpoint_port),
            brokers=[broker.describe() for _, broker in sorted(self.state.brokers.items())],
            metadata_end_offset=self.journal.end_offset,
        )
        return self._finish(envelope, ControllerResult(response))

    def handle_fetch_metadata_records(self, envelope: Envelope, now_ms: int) -> Effects:
        """Long-poll: answer at once if records exist at fetch_offset, else park until some do."""
        request = envelope.message
        effects = Effects()
        end = self.journal.end_offset
        if 0 < request.fetch_offset <= end and request.broker_id in self.state.brokers:
            # Asking for fetch_offset means it has the records before it (controlled shutdown waits on this).
            self.heartbeats.observe_metadata_offset(request.broker_id, request.fetch_offset - 1)
        if not 0 <= request.fetch_offset <= end:
            # The broker is ahead of the journal (it was wiped or lost a tail): it must refetch from 0.
            effects.reply(
                envelope.reply(
                    FetchMetadataRecordsResponse(
                        error_code=ErrorCode.OFFSET_OUT_OF_RANGE,
                        error_message=f"fetch_offset {request.fetch_offset} is outside the journal [0, {end}]",
                        base_offset=request.fetch_offset,
                        end_offset=end,
                    )
                )
            )
            return effects
        max_records = request.max_records if request.max_records > 0 else DEFAULT_FETCH_MAX_RECORDS
        max_records = min(max_records, MAX_FETCH_MAX_RECORDS)
        if request.fetch_offset < end or request.max_wait_ms <= 0:
            effects.reply(envelope.reply(self._fetch_response(request.fetch_offset, max_records)))
        else:
            self.parked.append(ParkedFetch(envelope, request.fetch_offset, max_records, now_ms + request.max_wait_ms))
        return effects

    # ---- internals ----
    def _shutting_down(self) -> frozenset[int]:
        return frozenset(self.heartbeats.shutting_down)

    def _arm_rebalance(self, now_ms: int) -> None:
        """Arm the rebalance timer when some partition is not led by its preferred replica."""
        if not self.config.auto_leader_rebalance_enable or self.rebalance_due_ms is not None:
            return
        applied = self.state.applied_records
        if self._imbalance[0] != applied:
            self._imbalance = (applied, is_imbalanced(self.state))
        if self._imbalance[1]:
            self.rebalance_due_ms = now_ms + self.config.leader_imbalance_check_interval_ms

    def _start(self, now_ms: int) -> None:
        if self._started:
            return
        self._started = True
        for broker in self.state.unfenced_brokers():
            if self.heartbeats.last_contact_ms(broker.broker_id) is None:
                self.heartbeats.touch(broker.broker_id, now_ms)

    def _finish(self, envelope: Envelope, result: ControllerResult) -> Effects:
        effects = Effects()
        self._commit(result, effects)
        effects.reply(envelope.reply(result.response))
        return effects

    def _commit(self, result: ControllerResult, effects: Effects) -> None:
        """Make the records durable, apply them, then wake the fetches waiting for them."""
        if result.records:
            self.journal.append(result.records)
            for record in result.records:
                self.state.replay(record)
            self._release_parked(effects)
        effects.events.extend(result.events)

    def _fetch_response(self, fetch_offset: int, max_records: int) -> FetchMetadataRecordsResponse:
        return FetchMetadataRecordsResponse(
            base_offset=fetch_offset,
            records=self.journal.read(fetch_offset, max_records),
            end_offset=self.journal.end_offset,
        )

    def _release_parked(self, effects: Effects) -> None:
        end = self.journal.end_offset
        waiting = []
        for parked in self.parked:
            if parked.fetch_offset < end:
                effects.reply(parked.envelope.reply(self._fetch_response(parked.fetch_offset, parked.max_records)))
            else:
                waiting.append(parked)
        self.parked = waiting

    def _expire_parked(self, now_ms: int, effects: Effects) -> None:
        waiting = []
        for parked in self.parked:
            if parked.deadline_ms <= now_ms:
                effects.reply(parked.envelope.reply(self._fetch_response(parked.fetch_offset, parked.max_records)))
            else:
                waiting.append(parked)
        self.parked = waiting
