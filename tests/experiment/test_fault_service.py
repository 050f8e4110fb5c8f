"""The fault-injection facility: rules (pure), the inbound interceptor and the outbound hook on an
in-process server, and a real cluster where one rule on a broker cuts it off both ways."""

from __future__ import annotations

import asyncio
import random
import sys
import time
from pathlib import Path

import grpc
import pytest

from brokerlab.faults import ANY_PEER, CLIENT_PEER, NODE_HEADER, FaultState, LinkFault
from brokerlab.rpc.faults import FaultInjector, add_fault_service
from brokerlab.rpc.grpc_options import add_health_and_reflection, insecure_channel, new_server
from brokerlab.sansio import Envelope
from brokerlab.v1 import broker_pb2, broker_pb2_grpc
from lab.local_cluster import LocalCluster
from lab.rpc.faults import FaultClient
from node.rpc.servicer import add_broker_service

# ---- pure rules ------------------------------------------------------------------------------


def test_rules_pick_the_peer_then_star_and_unnamed_callers_are_clients() -> None:
    state = FaultState("broker-1")
    assert state.rule_for("broker-2") is None and not state.active
    state.set_rules([LinkFault(ANY_PEER, delay_ms=5), LinkFault("broker-2", drop_all=True)])
    assert state.rule_for("broker-2").drop_all
    assert state.rule_for("controller").delay_ms == 5
    assert state.rule_for(None) is state.rules[ANY_PEER]
    state.set_rules([LinkFault(CLIENT_PEER, delay_ms=7)])
    assert state.rule_for(None).delay_ms == 7
    state.set_rules([LinkFault("broker-2")])  # a no-op rule removes the peer's rule
    assert "broker-2" not in state.rules
    state.set_rules([LinkFault("broker-3", drop_all=True)], replace=True)
    assert list(state.rules) == ["broker-3"]
    state.clock_skew_ms = 500
    state.clear()
    assert not state.active and state.clock_skew_ms == 0


def test_decisions_count_drops_and_delays_and_loss_follows_the_probability() -> None:
    state = FaultState("broker-1")
    state.set_rules([LinkFault("broker-2", drop_probability=0.3), LinkFault("broker-3", delay_ms=10, jitter_ms=5)])
    rng = random.Random(7)
    drops = sum(state.decide("broker-2", rng).drop for _ in range(2000))
    assert 500 < drops < 700 and state.dropped_calls == drops
    delays = [state.decide("broker-3", rng).delay_ms for _ in range(100)]
    assert all(10 <= d <= 15 for d in delays) and state.delayed_calls == 100
    assert state.decide("controller", rng).delay_ms == 0
    with pytest.raises(ValueError):
        LinkFault("x", drop_probability=1.5)


# ---- in-process server: inbound interceptor and FaultService ------------------------------------


class _FakeDriver:
    async def request(self, rpc, message, src="client"):
        return broker_pb2.MetadataResponse(cluster_id="fake")


async def _serve(injector: FaultInjector):
    server = new_server([injector.interceptor()])
    port = server.add_insecure_port("127.0.0.1:0")
    add_broker_service(server, _FakeDriver())
    add_fault_service(server, injector)
    add_health_and_reflection(server, [])
    await server.start()
    return server, f"127.0.0.1:{port}"


async def _timed_metadata(stub, metadata=None, timeout=2.0) -> tuple[float, str]:
    started = time.perf_counter()
    try:
        await stub.Metadata(broker_pb2.MetadataRequest(), timeout=timeout, metadata=metadata, wait_for_ready=True)
        outcome = "ok"
    except grpc.aio.AioRpcError as exc:
        outcome = exc.code().name
    return time.perf_counter() - started, outcome


def test_inbound_rules_delay_and_drop_calls_by_caller_and_fault_service_heals() -> None:
    async def scenario() -> None:
        injector = FaultInjector("broker-1", lambda: 1_000)
        server, address = await _serve(injector)
        faults = FaultClient()
        channel = insecure_channel(address)
        stub = broker_pb2_grpc.BrokerServiceStub(channel)
        try:
            elapsed, outcome = await _timed_metadata(stub)
            assert outcome == "ok" and elapsed < 0.2
            await faults.set_link_faults(address, [LinkFault(CLIENT_PEER, delay_ms=300)])
            elapsed, outcome = await _timed_metadata(stub)
            assert outcome == "ok" and elapsed >= 0.3, elapsed  # delay really delays
            # A call from broker-2 has its own (absent) rule: not delayed.
            elapsed, outcome = await _timed_metadata(stub, ((NODE_HEADER, "broker-2"),))
            assert outcome == "ok" and elapsed < 0.2
            await faults.set_link_faults(address, [LinkFault("broker-2", drop_all=True)], replace=True)
            elapsed, outcome = await _timed_metadata(stub, ((NODE_HEADER, "broker-2"),), timeout=0.5)
            assert outcome == "DEADLINE_EXCEEDED" and elapsed >= 0.45  # a black hole, not a quick error
            elapsed, outcome = await _timed_metadata(stub)
            assert outcome == "ok"
            await faults.set_clock_skew(address, 250)
            assert injector.clock_ms() == 1_250
            described = await faults.describe(address)
            assert described["node"] == "broker-1" and described["dropped_calls"] == 1
            assert described["clock_skew_ms"] == 250 and described["delayed_calls"] == 1
            await faults.clear(address)
            elapsed, outcome = await _timed_metadata(stub, ((NODE_HEADER, "broker-2"),))
            assert outcome == "ok" and injector.clock_ms() == 1_000
        finally:
            await faults.close()
            await channel.close()
            await server.stop(0)

    asyncio.run(scenario())


def test_outbound_hook_drops_until_the_deadline_and_delays() -> None:
    async def scenario() -> None:
        injector = FaultInjector("broker-1", lambda: 0)
        injector.state.set_rules([LinkFault("controller", drop_all=True), LinkFault("broker-3", delay_ms=200)])
        started = time.perf_counter()
        assert "lost" in await injector.outbound("controller", 0.3)
        assert time.perf_counter() - started >= 0.3
        started = time.perf_counter()
        assert await injector.outbound("broker-3", 1.0) is None
        assert time.perf_counter() - started >= 0.2
        assert await injector.outbound("broker-2", 1.0) is None

    asyncio.run(scenario())


def test_broker_transport_applies_rules_and_names_itself() -> None:
    from node.config import BrokerConfig
    from node.rpc.transport import BrokerTransport

    async def scenario() -> None:
        receiver = FaultInjector("broker-2", lambda: 0)
        server, address = await _serve(receiver)
        host, port = address.rsplit(":", 1)
        sender = FaultInjector("broker-1", lambda: 0)
        transport = BrokerTransport(BrokerConfig(), lambda broker_id: (host, int(port)), sender)
        envelope = Envelope("broker-1", "broker-2", "Metadata", broker_pb2.MetadataRequest(), 1)
        try:
            assert (await transport(envelope)).transport_error is None
            receiver.state.set_rules([LinkFault("broker-1", delay_ms=250)])  # the receiver knows the caller
            started = time.perf_counter()
            assert (await transport(envelope)).transport_error is None
            assert time.perf_counter() - started >= 0.25
            receiver.state.clear()
            sender.state.set_rules([LinkFault("broker-2", drop_all=True)])
            transport.timeout_s = lambda envelope: 0.2
            answer = await transport(envelope)
            assert answer.transport_error and "fault injection" in answer.transport_error
        finally:
            await transport.close()
            await server.stop(0)

    asyncio.run(scenario())


# ---- real processes: one rule on a broker cuts it off from the controller both ways -----------


def _events(path: str, name: str) -> list[str]:
    return [line for line in Path(path).read_text(errors="replace").splitlines() if f"event={name} " in line]


@pytest.mark.integration
@pytest.mark.timeout(90)
def test_partitioned_broker_is_fenced_and_rejoins_when_healed(tmp_path: Path) -> None:
    flag = ["--fault-injection"]
    local = LocalCluster.plan(brokers=2, data_dir=tmp_path / "cluster", base_dir=tmp_path,
                              config={"broker.heartbeat.interval.ms": "100", "broker.session.timeout.ms": "1000"},
                              controller_command=[sys.executable, "-m", "controller", *flag],
                              broker_command=[sys.executable, "-m", "node", *flag])
    local.start()
    faults = FaultClient()
    broker = local.node("broker-2")
    controller = local.controller

    async def fenced_count() -> int:
        return len(_events(controller.log, "BrokerFenced"))

    async def wait(condition, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not await condition():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            await asyncio.sleep(0.05)

    async def scenario() -> None:
        try:
            # Outbound cut (the broker's own calls to the controller are lost): fenced.
            await faults.set_link_faults(broker.address, [LinkFault("controller", drop_all=True)])
            await wait(lambda: _gt(fenced_count, 0), 10, "broker-2 fenced (outbound cut)")
            await faults.clear(broker.address)
            await wait(lambda: _unfenced(controller.log, 1), 10, "broker-2 unfenced after the heal")
            # Inbound cut on the controller (calls from broker-2 are lost there): fenced again.
            await faults.set_link_faults(controller.address, [LinkFault("broker-2", drop_all=True)])
            await wait(lambda: _gt(fenced_count, 1), 10, "broker-2 fenced (inbound cut at the controller)")
            described = await faults.describe(controller.address)
            assert described["dropped_calls"] > 0
            await faults.clear(controller.address)
            await wait(lambda: _unfenced(controller.log, 2), 10, "broker-2 unfenced after the second heal")
        finally:
            await faults.close()

    try:
        asyncio.run(scenario())
    finally:
        local.stop()
    assert _events(broker.log, "FaultsChanged")


async def _gt(counter, n: int) -> bool:
    return await counter() > n


async def _unfenced(controller_log: str, times: int) -> bool:
    return len([line for line in _events(controller_log, "BrokerUnfenced") if "broker_id=2 " in line]) > times
