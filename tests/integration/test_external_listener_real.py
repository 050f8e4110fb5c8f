"""The external listener with real processes: what the docker-compose cluster relies on.

Each broker gets a second listener whose advertised endpoint is spelled ``localhost:PORT``
(the compose file uses ``127.0.0.1:<published port>``), and the controller's external endpoint
is ``localhost:PORT`` too, while everything internal is ``127.0.0.1``. A client that bootstraps
through an external listener must be given only external endpoints, and the client library
(Admin, Producer, Consumer) must work through them; internal answers stay internal.
"""

from __future__ import annotations

import grpc
import pytest

from brokerlab.ids import TopicPartition
from brokerlab.rpc.grpc_options import CHANNEL_OPTIONS
from brokerlab.v1 import broker_pb2, broker_pb2_grpc
from client import NewTopic
from client.sync import SyncAdmin, SyncConsumer, SyncProducer
from lab.local_cluster import LocalCluster
from lab.ports import free_ports

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def metadata(address: str) -> broker_pb2.MetadataResponse:
    with grpc.insecure_channel(address, options=CHANNEL_OPTIONS) as channel:
        return broker_pb2_grpc.BrokerServiceStub(channel).Metadata(broker_pb2.MetadataRequest(), timeout=10)


def endpoints(response: broker_pb2.MetadataResponse) -> dict[int, str]:
    return {b.broker_id: f"{b.endpoint.host}:{b.endpoint.port}" for b in response.brokers}


@pytest.fixture
def cluster(tmp_path):
    local = LocalCluster.plan(brokers=2, data_dir=tmp_path / "cluster")
    controller_port = local.controller.address.rpartition(":")[2]
    external_ports = free_ports(len(local.brokers))
    for broker, port in zip(local.brokers, external_ports):
        broker.command += ["--external-listener", f"127.0.0.1:{port}",
                           "--advertised-external-listener", f"localhost:{port}",
                           "--external-controller", f"localhost:{controller_port}"]
    local.save()
    local.start()
    try:
        yield local, {b.id: f"localhost:{port}" for b, port in zip(local.brokers, external_ports)}
    finally:
        assert not local.stop(), "a node needed SIGKILL"


def test_answers_carry_the_endpoints_of_the_listener_asked(cluster) -> None:
    local, external = cluster
    internal = {b.id: b.address for b in local.brokers}
    controller_port = local.controller.address.rpartition(":")[2]

    inside = metadata(internal[1])
    assert endpoints(inside) == internal
    assert f"{inside.controller_endpoint.host}:{inside.controller_endpoint.port}" == local.controller.address

    outside = metadata(external[1].replace("localhost", "127.0.0.1"))
    assert endpoints(outside) == external
    assert outside.controller_endpoint.host == "localhost"
    assert str(outside.controller_endpoint.port) == controller_port


def test_clients_work_through_the_external_listener(cluster) -> None:
    _, external = cluster
    bootstrap = [external[1]]
    with SyncAdmin(bootstrap) as admin:  # CreateTopics goes to the controller's external endpoint
        admin.create_topics([NewTopic("outside", 2, 1)])
        admin.wait_for_topics(["outside"], timeout_ms=15_000)
        (description,) = admin.describe_topics(["outside"])
    # one partition led by each broker, so both external endpoints are used
    assert sorted(p.leader for p in description.partitions) == [1, 2]
    with SyncProducer(bootstrap, acks="1") as producer:
        handles = [producer.send("outside", f"v{i}".encode(), partition=i % 2) for i in range(6)]
        acked = {h.result(timeout=15).offset for h in handles}
    assert acked == {0, 1, 2}
    partitions = [TopicPartition("outside", p) for p in (0, 1)]
    with SyncConsumer(bootstrap, auto_offset_reset="earliest", fetch_max_wait_ms=100) as consumer:
        consumer.assign(partitions)
        values: list[bytes] = []
        for _ in range(50):
            values += [r.value for r in consumer.poll(timeout_ms=200)]
            if len(values) >= 6:
                break
    assert sorted(values) == sorted(f"v{i}".encode() for i in range(6))
