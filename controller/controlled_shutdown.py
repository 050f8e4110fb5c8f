"""Controlled shutdown: a broker heartbeats ``want_shut_down`` and the controller drains it.

Every heartbeat of a broker in controlled shutdown (Kafka's CONTROLLED_SHUTDOWN state, soft state
here as there):

1. moves each leadership it holds to the first other eligible ISR member, in replica order
   (leader epoch + 1, reason ``controlled_shutdown``), and drops it from every ISR that keeps at
   least one member. It becomes ineligible at once: no election picks it, no AlterPartition may
   add it to an ISR (INELIGIBLE_REPLICA). Never unclean: a leadership with no other eligible ISR
   member stays with it for now (the old ZooKeeper controller's rule; KRaft makes such a
   partition leaderless at once). Repeating this on every heartbeat picks up ISR members that
   caught up meanwhile.
2. answers ``should_shut_down=false`` while it still has a leadership to move, or while a broker
   that took over from it (a new leader, or a leader whose ISR it left) has not yet replayed the
   records that say so (as reported by its heartbeats and metadata fetches): stopping earlier
   would leave that broker serving or waiting for a replica that is gone.
3. then fences it (FenceBrokerRecord; a leadership it kept becomes -1, or goes to an
   out-of-sync replica if unclean election is enabled for the topic, exactly as when a session
   expires) and answers ``should_shut_down=true, is_fenced=true``.

So with brokers that replay the journal by long-poll, a broker that leads something is told to
stop on its second shutdown heartbeat (one heartbeat interval after the first), one that leads
nothing on its first. If the broker stops heartbeating before that, its session expires and it
is fenced the usual way.
"""

from __future__ import annotations

from brokerlab.sansio import TraceEvent
from brokerlab.v1.controller_pb2 import BrokerHeartbeatRequest, BrokerHeartbeatResponse
from controller.brokers import BrokerHeartbeatManager, ShutdownProgress, fence_broker
from controller.partition_change import changes_for_controlled_shutdown, eligible_brokers
from controller.result import ControllerResult
from controller.state import ControllerState

REASON = "controlled_shutdown"


def controlled_shutdown(
    state: ControllerState,
    request: BrokerHeartbeatRequest,
    heartbeats: BrokerHeartbeatManager,
    next_offset: int,
    now_ms: int,
    unclean: bool,
) -> ControllerResult:
    """The answer to a heartbeat of a current registration that wants (or is in) a shutdown."""
    broker = state.brokers[request.broker_id]
    caught_up = request.current_metadata_offset >= broker.broker_epoch
    if broker.fenced:
        # A fenced broker leads nothing and is in no ISR it could leave: it may go.
        heartbeats.fenced(broker.broker_id)
        return ControllerResult(BrokerHeartbeatResponse(is_caught_up=caught_up, is_fenced=True, should_shut_down=True))
    result = ControllerResult()
    progress = heartbeats.shutting_down.get(broker.broker_id)
    if progress is None:
        progress = heartbeats.shutting_down[broker.broker_id] = ShutdownProgress(started_ms=now_ms)
        led = sum(1 for t in state.topics.values() for p in t.partitions.values() if p.leader_id == broker.broker_id)
        result.events.append(
            TraceEvent("ControlledShutdownStarted", {"broker_id": broker.broker_id, "broker_epoch": broker.broker_epoch, "leaderships": led})
        )
    eligible = eligible_brokers(state, heartbeats.shutting_down)
    plan = changes_for_controlled_shutdown(state, broker.broker_id, eligible)
    if plan.changes:
        last_offset = next_offset + len(plan.changes) - 1
        for change in plan.changes:
            result.records.append(change.record)
            result.events.extend(change.events)
            record = change.record.partition_change
            if record.leader_id >= 0:
                progress.waits[record.leader_id] = last_offset
            progress.leaders_moved += record.leader_changed
        result.response = BrokerHeartbeatResponse(is_caught_up=caught_up, is_fenced=False, should_shut_down=False)
        return result
    behind = sorted(b for b, offset in progress.waits.items() if b in eligible and heartbeats.metadata_offset(b) < offset)
    if behind:
        result.response = BrokerHeartbeatResponse(is_caught_up=caught_up, is_fenced=False, should_shut_down=False)
        return result
    others = set(heartbeats.shutting_down) - {broker.broker_id}
    result.add(fence_broker(state, broker, REASON, unclean, others))
    heartbeats.fenced(broker.broker_id)
    result.events.append(
        TraceEvent(
            "ControlledShutdownCompleted",
            {
                "broker_id": broker.broker_id,
                "broker_epoch": broker.broker_epoch,
                "elapsed_ms": now_ms - progress.started_ms,
                "leaders_moved": progress.leaders_moved,
                "leaderships_dropped": len(plan.kept),
            },
        )
    )
    result.response = BrokerHeartbeatResponse(is_caught_up=caught_up, is_fenced=True, should_shut_down=True)
    return result
