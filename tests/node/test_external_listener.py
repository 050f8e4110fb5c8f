"""The external listener (Kafka's EXTERNAL listener, used by the docker-compose cluster).

From registration to answer, without sockets: the broker registers its external endpoint, the
controller journals it, every broker's image keeps it, and answers given on the external
listener carry external endpoints while the hot-path responses pass through untouched.
"""

from __future__ import annotations

import asyncio
import random
import sys
from pathlib import Path

from brokerlab.disk import MemoryDisk
from brokerlab.sansio import Effects, Envelope, RequestIds
from brokerlab.v1 import broker_pb2, common_pb2, controller_pb2, metadata_pb2
from controller.config import ControllerConfig
from controller.core import ControllerCore
from controller.journal import MetadataJournal
from node.config import BrokerConfig
from node.lifecycle import BrokerLifecycle
from node.metadata_image import MetadataImage
from node.rpc.external_listener import ExternalView, external_endpoints, translate

sys.path.insert(0, str(Path(__file__).resolve().parent))
from broker_harness import partition_record, topic_record, unfence_record  # noqa: E402

CONTROLLER = ("controller", 9090)
EXTERNAL_CONTROLLER = ("127.0.0.1", 19090)


def register(broker_id: int, epoch: int, external: bool = True) -> metadata_pb2.MetadataRecord:
    record = metadata_pb2.RegisterBrokerRecord(
        broker_id=broker_id, broker_epoch=epoch, fenced=True,
        endpoint=common_pb2.Endpoint(host=f"broker-{broker_id}", port=9092))
    if external:
        record.external_endpoint.CopyFrom(common_pb2.Endpoint(host="127.0.0.1", port=19090 + broker_id))
    return metadata_pb2.MetadataRecord(register_broker=record)


def image_of(records) -> MetadataImage:
    image = MetadataImage()
    for record in records:
        image.replay(record)
    return image


def three_brokers(external_for=(1, 2, 3)) -> MetadataImage:
    records = []
    for broker_id in (1, 2, 3):
        records += [register(broker_id, broker_id, broker_id in external_for), unfence_record(broker_id, broker_id)]
    return image_of(records + [topic_record("orders", "t1"), partition_record("t1", 0, [1, 2, 3], leader=2)])


def test_registration_carries_the_external_endpoint_only_when_configured() -> None:
    for external in (None, ("127.0.0.1", 19091)):
        config = BrokerConfig(broker_id=1, controller_endpoint=CONTROLLER, external_endpoint=external)
        lifecycle = BrokerLifecycle(config, ("broker-1", 9092), "", "inc-1", RequestIds())
        fx = Effects()
        lifecycle.maybe_send(0, -1, fx)
        request = next(e.message for e in fx.sends if e.rpc == "RegisterBroker")
        assert (request.endpoint.host, request.endpoint.port) == ("broker-1", 9092)
        assert request.HasField("external_endpoint") == (external is not None)
        if external is not None:
            assert (request.external_endpoint.host, request.external_endpoint.port) == external


def test_controller_journals_the_external_endpoint() -> None:
    core = ControllerCore(ControllerConfig(), MetadataJournal(MemoryDisk()), random.Random(0), "cluster")
    request = controller_pb2.RegisterBrokerRequest(
        broker_id=1, endpoint=common_pb2.Endpoint(host="broker-1", port=9092), incarnation_id="inc-1",
        external_endpoint=common_pb2.Endpoint(host="127.0.0.1", port=19091))
    core.step(Envelope("broker-1", "controller", "RegisterBroker", request, 1), 0)
    plain = controller_pb2.RegisterBrokerRequest(
        broker_id=2, endpoint=common_pb2.Endpoint(host="broker-2", port=9092), incarnation_id="inc-2")
    core.step(Envelope("broker-2", "controller", "RegisterBroker", plain, 2), 0)
    registrations = {r.register_broker.broker_id: r.register_broker
                     for r in core.journal.records() if r.WhichOneof("record") == "register_broker"}
    assert registrations[1].external_endpoint == common_pb2.Endpoint(host="127.0.0.1", port=19091)
    assert not registrations[2].HasField("external_endpoint")


def test_image_keeps_external_endpoints_and_maps_internal_to_external() -> None:
    image = three_brokers(external_for=(1, 3))
    assert (image.broker(1).external_host, image.broker(1).external_port) == ("127.0.0.1", 19091)
    assert (image.broker(2).external_host, image.broker(2).external_port) == ("", 0)
    assert external_endpoints(image, CONTROLLER, EXTERNAL_CONTROLLER) == {
        ("broker-1", 9092): ("127.0.0.1", 19091),
        ("broker-3", 9092): ("127.0.0.1", 19093),
        CONTROLLER: EXTERNAL_CONTROLLER,
    }
    assert CONTROLLER not in external_endpoints(image, CONTROLLER, None)


def test_metadata_answer_is_translated_on_a_copy() -> None:
    image = three_brokers()
    response = image.metadata_response([], controller_id=0, controller_endpoint=CONTROLLER, cluster_id="c")
    before = response.SerializeToString()
    out = translate(response, external_endpoints(image, CONTROLLER, EXTERNAL_CONTROLLER))
    assert response.SerializeToString() == before  # the core's object is left alone
    assert {b.broker_id: (b.endpoint.host, b.endpoint.port) for b in out.brokers} == {
        1: ("127.0.0.1", 19091), 2: ("127.0.0.1", 19092), 3: ("127.0.0.1", 19093)}
    assert (out.controller_endpoint.host, out.controller_endpoint.port) == EXTERNAL_CONTROLLER
    assert [t.name for t in out.topics] == ["orders"] and out.topics[0].partitions[0].leader_id == 2


def test_a_broker_without_external_listener_keeps_its_internal_endpoint() -> None:
    image = three_brokers(external_for=(1,))
    response = image.metadata_response([], controller_id=0, controller_endpoint=CONTROLLER)
    out = translate(response, external_endpoints(image, CONTROLLER, None))
    assert {b.broker_id: b.endpoint.host for b in out.brokers} == {1: "127.0.0.1", 2: "broker-2", 3: "broker-3"}
    assert out.controller_endpoint.host == "controller"


def test_responses_without_endpoints_pass_through_as_they_are() -> None:
    mapping = {("broker-1", 9092): ("127.0.0.1", 19091)}
    produce = broker_pb2.ProduceResponse()
    assert translate(produce, mapping) is produce
    fetch = broker_pb2.FetchResponse()
    assert translate(fetch, mapping) is fetch


def test_external_view_translates_driver_answers_and_delegates_the_rest() -> None:
    image = three_brokers()

    class FakeDriver:
        closed = False

        async def request(self, rpc, message, src="client"):
            return image.metadata_response([], controller_id=0, controller_endpoint=CONTROLLER)

        async def close(self):
            self.closed = True

    driver = FakeDriver()
    view = ExternalView(driver, lambda: external_endpoints(image, CONTROLLER, EXTERNAL_CONTROLLER))
    out = asyncio.run(view.request("Metadata", broker_pb2.MetadataRequest()))
    assert {b.endpoint.port for b in out.brokers} == {19091, 19092, 19093}
    asyncio.run(view.close())
    assert driver.closed
