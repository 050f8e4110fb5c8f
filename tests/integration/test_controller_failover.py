"""Controller failover with real processes: kill -9 of a leader, preferred election on demand,
controlled shutdown through ``brokerlab cluster stop-broker``.

Timings are printed (run with ``-s`` to see them) and bounded loosely: this machine is shared.
"""

from __future__ import annotations

import importlib.util
import time

import pytest
from real_cluster import RunningCluster, wait_until

import cli.main as cli_main
from brokerlab.errors import ErrorCode

TOPIC = "failover"
CONFIG = {
    "broker.heartbeat.interval.ms": "100",
    "broker.session.timeout.ms": "1000",
    "auto.leader.rebalance.enable": "false",  # the test moves leadership back itself
}


def partition_state(cluster: RunningCluster, broker_id: int, partition: int = 0):
    [topic] = cluster.metadata([TOPIC], broker_id=broker_id).topics
    assert topic.error_code == ErrorCode.NONE, topic
    return next(p for p in topic.partitions if p.partition == partition)


def controller_events(cluster: RunningCluster, name: str) -> list[dict[str, str]]:
    return [e for e in cluster.events("controller") if e.get("event") == name]


def test_kill_leader_then_preferred_election_moves_it_back(cluster_factory, capsys):
    cluster = cluster_factory(brokers=3, config=CONFIG)
    cluster.create_topic(TOPIC, partitions=1, replication_factor=3)
    before = partition_state(cluster, 1)
    old_leader, old_epoch = before.leader_id, before.leader_epoch
    assert old_leader == before.replicas[0]  # a new topic is led by its preferred replica
    survivor = next(b for b in before.replicas if b != old_leader)

    killed_at = time.monotonic()
    cluster.kill(old_leader)
    after = wait_until(
        lambda: (lambda p: p if p.leader_id not in (-1, old_leader) and p.leader_epoch > old_epoch else None)(
            partition_state(cluster, survivor)),
        timeout_s=5, interval_s=0.01, message="a new leader with a higher epoch")
    elected_s = time.monotonic() - killed_at
    assert elected_s < 2.5, f"new leader after {elected_s:.2f} s"
    assert old_leader not in after.isr and after.leader_epoch == old_epoch + 1

    with capsys.disabled():
        print(f"\n[failover] kill -9 of the leader -> new leader (epoch {after.leader_epoch}) in Metadata "
              f"after {elected_s * 1000:.0f} ms")
    if importlib.util.find_spec("node.replication") is None:
        pytest.skip("brokers do not replicate yet (node side of issue 3): a restarted broker cannot rejoin the ISR")

    cluster.restart(old_leader)
    # Back, caught up, and added to the ISR again by the new leader (AlterPartition).
    wait_until(lambda: old_leader in partition_state(cluster, survivor).isr, timeout_s=15,
               message=f"broker {old_leader} back in the ISR")
    assert partition_state(cluster, survivor).leader_id == after.leader_id  # no automatic move (disabled)

    bootstrap = ",".join(cluster.local.bootstrap_servers())
    code = cli_main.run(["leader", "elect", "--type", "preferred", "--topic", TOPIC, "--partition", "0",
                         "--bootstrap", bootstrap])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "elected" in out
    moved = wait_until(lambda: (lambda p: p if p.leader_id == old_leader else None)(partition_state(cluster, survivor)),
                       timeout_s=5, message="leadership back on the preferred replica")
    assert moved.leader_epoch == after.leader_epoch + 1
    again = cli_main.run(["leader", "elect", "--topic", TOPIC, "--partition", "0", "--bootstrap", bootstrap])
    assert again == 0 and "not needed" in capsys.readouterr().out


def test_stop_broker_moves_leadership_before_exit(cluster_factory, capsys):
    cluster = cluster_factory(brokers=3, config=CONFIG)
    cluster.create_topic(TOPIC, partitions=3, replication_factor=3)
    states = {p: partition_state(cluster, 1, p) for p in range(3)}
    victim = states[0].leader_id
    led = sorted(p for p, s in states.items() if s.leader_id == victim)
    survivor = next(b for b in (1, 2, 3) if b != victim)

    started = time.monotonic()
    code = cli_main.run(["cluster", "stop-broker", str(victim), "--data-dir", str(cluster.local.data_dir)])
    stop_s = time.monotonic() - started
    out = capsys.readouterr().out
    assert code == 0, out
    assert "stopped cleanly" in out
    started_events = [e for e in controller_events(cluster, "ControlledShutdownStarted") if e.get("broker_id") == str(victim)]
    if not started_events:
        # The broker side (node/) heartbeats want_shut_down on SIGTERM; until it does, nothing here applies.
        pytest.skip("the broker did not ask for a controlled shutdown on SIGTERM (node side of issue 3 not there yet)")
    # Right after the exit, the survivors already name other leaders, at a higher epoch.
    for p in led:
        now = partition_state(cluster, survivor, p)
        assert now.leader_id not in (-1, victim) and now.leader_epoch > states[p].leader_epoch, now
        assert victim not in now.isr
    moves = [e for e in controller_events(cluster, "LeaderChanged")
             if e.get("reason") == "controlled_shutdown" and e.get("previous_leader") == str(victim)]
    assert sorted(int(e["partition"]) for e in moves) == led
    fenced = [e for e in controller_events(cluster, "BrokerFenced") if e.get("broker_id") == str(victim)]
    assert [e["reason"] for e in fenced] == ["controlled_shutdown"]  # let go, not timed out
    [done] = [e for e in controller_events(cluster, "ControlledShutdownCompleted") if e.get("broker_id") == str(victim)]
    elapsed_ms = int(done["elapsed_ms"])
    assert elapsed_ms <= 1000, done  # target 200 ms; loose bound on a shared machine
    with capsys.disabled():
        print(f"\n[controlled shutdown] broker {victim} led {len(led)} partition(s): controller granted the "
              f"shutdown {elapsed_ms} ms after the request; stop-broker returned after {stop_s * 1000:.0f} ms")

    data_dir = str(cluster.local.data_dir)
    code = cli_main.run(["cluster", "start-broker", str(victim), "--data-dir", data_dir])
    try:
        assert code == 0 and "healthy" in capsys.readouterr().out
    finally:
        # The fixture only knows the first process of this broker: stop the one the CLI started.
        cli_main.run(["cluster", "stop-broker", str(victim), "--data-dir", data_dir])
