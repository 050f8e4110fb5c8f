"""ClusterLink against fake gRPC servers on 127.0.0.1: routing, refresh fallbacks, error mapping."""

from __future__ import annotations

import asyncio
import socket

import pytest
from client_fakes import FakeCluster

from brokerlab.errors import ErrorCode, KafkaError
from brokerlab.v1 import broker_pb2, controller_pb2
from client.rpc.cluster_link import ClusterLink, parse_bootstrap


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))


def dead_address() -> str:
    """A loopback port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def test_parse_bootstrap():
    assert parse_bootstrap("a:1, b:2,a:1") == ["a:1", "b:2"]
    assert parse_bootstrap(["a:1", "b:2,c:3"]) == ["a:1", "b:2", "c:3"]
    with pytest.raises(ValueError):
        parse_bootstrap(" , ")


def test_refresh_skips_dead_bootstrap_addresses_and_fills_the_cache():
    async def scenario():
        cluster = await FakeCluster(2).start()
        cluster.state.create_topic("orders", 2, [1, 2])
        link = ClusterLink([dead_address(), cluster.address(2)])
        try:
            response = await link.refresh_metadata()
            assert response.cluster_id == "fake-cluster"
            assert link.cache.brokers() == {1: cluster.address(1), 2: cluster.address(2)}
            assert link.cache.leader_for(("orders", 1)) == 2
            assert link.cache.controller_address() == f"127.0.0.1:{cluster.state.controller_port}"
            # Known brokers come first next time; broker 1 down is skipped.
            await cluster.stop_broker(1)
            await link.refresh_metadata(["orders"])
            assert link.cache.update_count == 2
            answer = await link.call_controller("DescribeCluster", controller_pb2.DescribeClusterRequest())
            assert answer.metadata_end_offset == 7
        finally:
            await link.close()
            await cluster.stop()

    run(scenario())


def test_concurrent_refreshes_share_one_call():
    async def scenario():
        cluster = await FakeCluster(1).start()
        link = ClusterLink(cluster.bootstrap)
        try:
            await asyncio.gather(*(link.refresh_metadata() for _ in range(5)))
            assert cluster.state.calls.count(("broker-1", "Metadata")) == 1
        finally:
            await link.close()
            await cluster.stop()

    run(scenario())


def test_no_broker_reachable_is_a_network_exception_with_one_line():
    async def scenario():
        link = ClusterLink([dead_address(), dead_address()], request_timeout_ms=2_000)
        try:
            with pytest.raises(KafkaError) as info:
                await link.refresh_metadata()
            assert info.value.code == ErrorCode.NETWORK_EXCEPTION
            assert "no broker answered Metadata" in info.value.message
            assert "\n" not in str(info.value)
        finally:
            await link.close()

    run(scenario())


def test_deadline_becomes_request_timed_out_and_unknown_broker_is_reported():
    async def scenario():
        cluster = await FakeCluster(1).start()
        cluster.state.create_topic("orders", 1, [1])
        cluster.state.fetch_delay_s = 1.0
        link = ClusterLink(cluster.bootstrap)
        try:
            await link.refresh_metadata()
            request = broker_pb2.FetchRequest(max_wait_ms=0)
            with pytest.raises(KafkaError) as info:
                await link.call_broker(1, "Fetch", request, timeout_ms=100)
            assert info.value.code == ErrorCode.REQUEST_TIMED_OUT
            assert info.value.message.startswith(f"Fetch to {cluster.address(1)} failed: DEADLINE_EXCEEDED")
            with pytest.raises(KafkaError) as info:
                link.broker_stub(42)
            assert info.value.code == ErrorCode.BROKER_NOT_AVAILABLE
            assert link.cache.update_requested
        finally:
            await link.close()
            await cluster.stop()

    run(scenario())


def test_a_dead_broker_maps_to_network_exception_and_asks_for_a_refresh():
    async def scenario():
        cluster = await FakeCluster(2).start()
        link = ClusterLink(cluster.bootstrap)
        try:
            await link.refresh_metadata()
            await cluster.stop_broker(2)
            with pytest.raises(KafkaError) as info:
                await link.call_broker(2, "Metadata", broker_pb2.MetadataRequest(), timeout_ms=2_000)
            assert info.value.code == ErrorCode.NETWORK_EXCEPTION
            assert info.value.retriable
            assert link.cache.update_requested
        finally:
            await link.close()
            await cluster.stop()

    run(scenario())


def test_a_silent_broker_does_not_hold_up_a_metadata_refresh():
    """A paused broker (SIGSTOP) accepts connections and never answers: the refresh is hedged."""

    async def scenario():
        cluster = await FakeCluster(1).start()
        silent = socket.socket()
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)  # the kernel completes handshakes; nobody ever answers
        silent_address = f"127.0.0.1:{silent.getsockname()[1]}"
        link = ClusterLink([silent_address, cluster.address(1)], request_timeout_ms=30_000)
        loop = asyncio.get_running_loop()
        try:
            started = loop.time()
            response = await link.refresh_metadata()
            assert response.cluster_id == "fake-cluster"
            assert loop.time() - started < 5  # not request.timeout.ms
        finally:
            await link.close()
            silent.close()
            await cluster.stop()

    run(scenario())
