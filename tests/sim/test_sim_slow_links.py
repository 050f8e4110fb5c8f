"""Slow links on the simulated network: the FaultService's delay, jitter and loss, per call.

A rule on the directed link caller -> callee holds each request back by the delay (plus a
uniform jitter) before it leaves, or loses it with the drop probability (the call then times
out at its deadline, as against a black hole); replies and other links are untouched. Drawn
from the network's seeded Random: the same seed, the same calls delayed and lost.
"""

from __future__ import annotations

import pytest
from sim_toy import toy_cluster

from brokerlab.v1 import broker_pb2
from lab.sim import NetworkConfig
from lab.sim.network import DEADLINE_EXCEEDED

LATENCY_MS = 2  # fixed, so what a call takes is the slow link's doing


def _cluster(seed: int = 1):
    cluster = toy_cluster(seed, nodes=2, network=NetworkConfig(min_latency_ms=LATENCY_MS, max_latency_ms=LATENCY_MS,
                                                               request_timeout_ms=1_000))
    cluster.run_for(50)  # the toys' first pings (sent before both were up) are over
    return cluster


def _round_trips(cluster, calls: int, dst: str = "toy-1") -> list[tuple[int, str | None]]:
    """Calls one after the other from a client: (how long each took, its transport error)."""
    client = cluster.client()
    out = []
    for _ in range(calls):
        started = cluster.now_ms
        answer = client.wait(client.send(dst, "Metadata", broker_pb2.MetadataRequest()))
        out.append((cluster.now_ms - started, answer.transport_error))
    return out


def test_a_slow_link_delays_each_call_by_its_delay_plus_jitter_and_only_that_link() -> None:
    cluster = _cluster()
    assert _round_trips(cluster, 3) == [(2 * LATENCY_MS, None)] * 3
    cluster.network.slow_link("client-1", "toy-1", delay_ms=150)
    assert _round_trips(cluster, 5) == [(150 + 2 * LATENCY_MS, None)] * 5  # once per call, not per message
    cluster.network.slow_link("client-1", "toy-1", delay_ms=100, jitter_ms=40)
    took = [ms - 2 * LATENCY_MS for ms, _ in _round_trips(cluster, 40)]
    assert all(100 <= ms <= 140 for ms in took) and len(set(took)) > 5  # jitter drawn per call
    assert _round_trips(cluster, 2, dst="toy-2") == [(2 * LATENCY_MS, None)] * 2  # another link: untouched
    cluster.network.clear_slow_link("client-1", "toy-1")
    assert _round_trips(cluster, 2) == [(2 * LATENCY_MS, None)] * 2


def test_a_lossy_slow_link_loses_about_its_share_of_calls_which_time_out() -> None:
    cluster = _cluster()
    cluster.network.slow_link("client-1", "toy-1", delay_ms=10, drop_probability=0.25)
    results = _round_trips(cluster, 400)
    lost = [ms for ms, error in results if error is not None]
    assert all(error in (None, DEADLINE_EXCEEDED) for _, error in results)
    assert all(ms == 1_000 for ms in lost)  # a black hole: the caller waits out its deadline
    assert all(ms == 10 + 2 * LATENCY_MS for ms, error in results if error is None)
    assert 60 <= len(lost) <= 140  # 25 % of 400 = 100, well inside binomial noise
    assert cluster.network.stats["slow_lost"] == len(lost)


def test_slow_links_are_deterministic_from_the_seed_and_cleared_by_heal() -> None:
    def run(seed: int) -> list[tuple[int, str | None]]:
        cluster = _cluster(seed)
        cluster.network.slow_link("client-1", "toy-1", delay_ms=20, jitter_ms=30, drop_probability=0.2)
        out = _round_trips(cluster, 60)
        cluster.network.heal()
        assert _round_trips(cluster, 2) == [(2 * LATENCY_MS, None)] * 2
        return out

    assert run(7) == run(7)
    assert run(7) != run(8)


def test_a_toy_node_slowed_both_ways_sees_its_pings_late() -> None:
    cluster = _cluster()
    for a, b in (("toy-1", "toy-2"), ("toy-2", "toy-1")):
        cluster.network.slow_link(a, b, delay_ms=300)
    since = cluster.now_ms
    cluster.run_for(1_000)
    delivered = [e for e in cluster.trace.named("MessageDelivered") if e.now_ms > since and not e.get("response")
                 and e.get("src", "").startswith("toy")]
    assert delivered and all(e.now_ms - since >= 300 for e in delivered)


@pytest.mark.parametrize("bad", [dict(delay_ms=-1), dict(jitter_ms=-5), dict(drop_probability=1.5)])
def test_a_slow_link_rule_must_make_sense(bad: dict) -> None:
    cluster = _cluster()
    with pytest.raises(ValueError):
        cluster.network.slow_link("client-1", "toy-1", **{"delay_ms": 10, **bad})
