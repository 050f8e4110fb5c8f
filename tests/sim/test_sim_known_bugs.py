"""Bugs in node/ or controller/ the simulator found, each reduced to a deterministic reproduction.

They are ``xfail(strict=True)``: the test states the behaviour Kafka has; it fails today because
of the bug, and passes (so the strict xfail fails) once the bug is fixed, which is the signal
to drop the xfail here and the bug's entry in test_sim_failover.py's KNOWN_BUGS.
"""

from __future__ import annotations

import pytest

from brokerlab.ids import TopicPartition
from lab.sim.cores import ClusterSpec, build_cluster, wait_ready
from lab.sim.invariants import InvariantSuite, replication_checks

HOLD_MS = 30


@pytest.mark.xfail(strict=True, reason=(
    "node/lifecycle.py: a (re)started broker counts itself caught up with the journal end of the "
    "first FetchMetadataRecords answer, which may predate its own RegisterBroker; BrokerCore then "
    "acts on that image: it leads (and serves) at its previous incarnation's leader epoch, with the "
    "high watermark restarted from its recovered log. Kafka's broker publishes no leadership until "
    "it has replayed its own registration record (offset = broker_epoch). Found by the seed sweeps: "
    ".venv/bin/python -m lab.sim --scenario leader-bounce-hard --seed 8"))
def test_a_restarted_broker_does_not_lead_before_its_registration_is_applied() -> None:
    """Kill the leader and start it again before its session expires, with its registration
    reaching the controller a few ms after its first metadata fetch (two unary calls on one
    connection may be served in either order). The new incarnation must not act as leader
    until its image holds its own new registration."""
    # Without the high-watermark check, which trips on the symptom first: this test states the cause.
    checks = [c for c in replication_checks() if c.__name__ != "high_watermark_monotonic_within_epoch"]
    cluster = build_cluster(11, ClusterSpec(brokers=3, broker_config={"replica.fetch.wait.max.ms": "200"}),
                            invariants=[InvariantSuite(checks)])
    wait_ready(cluster)
    client = cluster.client()
    client.create_topic("events", 1, 3)
    leader = client.wait_for_leader("events", 0)
    for batch in range(5):
        client.produce("events", 0, [f"v{batch}".encode()], acks=-1)
    tp = TopicPartition("events", 0)

    network = cluster.network
    send = network.send

    def hold_registration(envelope) -> None:
        if envelope.rpc == "RegisterBroker" and envelope.src == leader and not envelope.is_response:
            cluster.scheduler.after(HOLD_MS, send, envelope, label="held RegisterBroker")
        else:
            send(envelope)

    network.send = hold_registration
    cluster.crash(leader)
    cluster.run_for(100)  # far less than broker.session.timeout.ms: the controller still has it
    cluster.start(leader)
    broker_id = int(leader.split("-")[1])
    stale = []

    def watch() -> None:
        core = cluster.core(leader)
        if core is None or tp not in core.replica_manager.leaders:
            return
        own = core.image.broker(broker_id)
        if own is None or own.broker_epoch != core.lifecycle.broker_epoch or core.lifecycle.broker_epoch < 0:
            stale.append((cluster.now_ms, core.replica_manager.leaders[tp].leader_epoch,
                          core.log_manager.get(tp).high_watermark))

    cluster.scheduler.after_event.append(watch)
    cluster.run_for(2 * HOLD_MS + 20)
    network.send = send
    assert not stale, (
        f"{leader} (incarnation 2) acted as leader of {tp} before applying its own registration: "
        f"(time, leader epoch, high watermark) {stale[:3]}")
