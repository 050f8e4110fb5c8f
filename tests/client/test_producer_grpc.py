"""Producer end to end over real gRPC: fake brokers (client_fakes) with a Produce that appends."""

from __future__ import annotations

import asyncio

from client_fakes import FakeBroker, FakeCluster

from brokerlab import record_batch as rb
from brokerlab.errors import ErrorCode
from brokerlab.rpc.grpc_options import new_server
from brokerlab.v1 import broker_pb2, broker_pb2_grpc
from client import Producer
from client.producer.partitioner import partition_for_key
from client.sync import EventLoopThread, SyncProducer


class ProducingBroker(FakeBroker):
    async def Produce(self, request, context):
        self.state.calls.append((f"broker-{self.broker_id}", "Produce"))
        response = broker_pb2.ProduceResponse()
        for data in request.partitions:
            code, p = self._partition(data.topic, data.partition)
            out = response.partitions.add(topic=data.topic, partition=data.partition, error_code=code,
                                          log_append_time_ms=-1)
            if p is None:
                continue
            try:
                headers = rb.validate_batches(data.records)
            except rb.CorruptBatchError as exc:
                out.error_code, out.error_message = ErrorCode.CORRUPT_MESSAGE, exc.reason
                continue
            batch = bytearray(data.records)
            rb.set_base_offset(batch, 0, p.log_end_offset)
            out.base_offset = p.log_end_offset
            p.batches.append((p.log_end_offset, bytes(batch)))
            p.log_end_offset += sum(h.record_count for h in headers)
        return response


class ProducingCluster(FakeCluster):
    async def start_broker(self, broker_id: int) -> None:
        server = new_server()
        broker_pb2_grpc.add_BrokerServiceServicer_to_server(ProducingBroker(self.state, broker_id), server)
        port = self.state.brokers.get(broker_id, 0)
        self.state.brokers[broker_id] = server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        self.servers[f"broker-{broker_id}"] = server


def stored(cluster, topic, partition):
    return [r for _, batch in cluster.state.topics[topic].partitions[partition].batches
            for r in rb.decode_records(batch)]


def test_producer_end_to_end_over_grpc_with_a_leader_move() -> None:
    async def scenario():
        cluster = await ProducingCluster(2).start()
        try:
            cluster.state.create_topic("orders", 4, [1, 2])
            async with Producer(cluster.bootstrap, key_serializer="str", value_serializer="str",
                                retry_backoff_ms=10) as producer:
                handles = [await producer.send("orders", f"value-{i}", key=f"key-{i}") for i in range(200)]
                results = [await h for h in handles]
                cluster.state.move_leader("orders", 0, 2)
                moved = await (await producer.send("orders", "after-move", partition=0))
            return cluster, results, moved
        finally:
            await cluster.stop()

    cluster, results, moved = asyncio.run(asyncio.wait_for(scenario(), 30))
    for i, r in enumerate(results):
        assert r.partition == partition_for_key(f"key-{i}".encode(), 4)
    for partition in range(4):
        records = stored(cluster, "orders", partition)
        mine = [r for r in results if r.partition == partition]
        assert [rec.offset for rec in records[: len(mine)]] == [r.offset for r in mine]
    assert stored(cluster, "orders", 0)[-1].value == b"after-move"
    assert moved.offset == len(stored(cluster, "orders", 0)) - 1
    produced_on_2 = [node for node, rpc in cluster.state.calls if rpc == "Produce"]
    assert "broker-1" in produced_on_2 and "broker-2" in produced_on_2


def test_sync_producer_over_grpc() -> None:
    servers = EventLoopThread("fake-brokers")  # the fake brokers get a loop of their own
    try:
        cluster = servers.run(ProducingCluster(1).start())
        cluster.state.create_topic("events", 1, [1])
        with SyncProducer(cluster.bootstrap, linger_ms=1) as producer:
            offsets = [producer.send("events", b"e%d" % i).result(timeout=10).offset for i in range(3)]
        assert offsets == [0, 1, 2]
        assert [r.value for r in stored(cluster, "events", 0)] == [b"e0", b"e1", b"e2"]
        servers.run(cluster.stop())
    finally:
        servers.stop()


def test_producer_keeps_refreshing_while_its_leader_is_down_and_retries_on_the_new_one() -> None:
    """Broker 1 dies; metadata names it for a while, then broker 2 at a newer epoch."""

    async def scenario():
        cluster = await ProducingCluster(2).start()
        try:
            cluster.state.create_topic("orders", 1, [1])
            async with Producer(cluster.bootstrap, retry_backoff_ms=50, retry_backoff_max_ms=5_000,
                                linger_ms=0, request_timeout_ms=2_000) as producer:
                assert (await (await producer.send("orders", b"before"))).offset == 0
                await cluster.stop_broker(1)
                pending = [await producer.send("orders", b"during-%d" % i) for i in range(5)]
                calls = len(cluster.state.calls)
                # Metadata keeps being asked for while the leader is unreachable ...
                while sum(1 for _, rpc in cluster.state.calls[calls:] if rpc == "Metadata") < 20:
                    await asyncio.sleep(0.01)
                assert not any(h.done() for h in pending)
                cluster.state.move_leader("orders", 0, 2)  # ... until it names the new leader
                loop = asyncio.get_running_loop()
                moved_at = loop.time()
                results = [await h for h in pending]
                # ~1 s down: the next scheduled retry is 0.5-2 s away (50, 100, ... 1600 ms backoff);
                # a newer leader epoch ends the backoff at the next refresh (KIP-951).
                return results, loop.time() - moved_at
        finally:
            await cluster.stop()

    results, delay_s = asyncio.run(asyncio.wait_for(scenario(), 30))
    assert [r.offset for r in results] == [1, 2, 3, 4, 5]
    assert delay_s < 0.4
