"""Bugs in node/ or controller/ the simulator found, each reduced to a deterministic reproduction.

A bug not fixed yet is ``xfail(strict=True)``: the test states the behaviour Kafka has and fails
because of the bug; once fixed, the strict xfail fails, the marker goes and the test stays as a
regression test (as below).
"""

from __future__ import annotations

from brokerlab.ids import TopicPartition
from lab.sim.cores import ClusterSpec, build_cluster, wait_ready
from lab.sim.invariants import InvariantSuite, replication_checks

HOLD_MS = 30


# Fixed: node/lifecycle.py counted a (re)started broker caught up with the journal end of its
# first FetchMetadataRecords answer, which may predate its own RegisterBroker; BrokerCore then led
# (and served) at the previous incarnation's leader epoch with the high watermark restarted from
# its recovered log. Found by the seed sweeps (.venv/bin/python -m lab.sim --scenario
# leader-bounce-hard --seed 8). Kafka's broker acts on no metadata until it has replayed its own
# registration record (offset = broker_epoch).
def test_a_restarted_broker_does_not_lead_before_its_registration_is_applied() -> None:
    """Kill the leader and start it again before its session expires, with its registration
    reaching the controller a few ms after its first metadata fetch (two unary calls on one
    connection may be served in either order). The new incarnation must not act as leader
    until its image holds its own new registration."""
    cluster = build_cluster(11, ClusterSpec(brokers=3, broker_config={"replica.fetch.wait.max.ms": "200"}),
                            invariants=[InvariantSuite(replication_checks())])
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
    # ... and it does come back: ready once its image holds its registration.
    assert cluster.run_until(lambda: cluster.core(leader) is not None and cluster.core(leader).is_ready, 5_000)
