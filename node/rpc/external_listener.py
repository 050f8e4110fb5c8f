"""The external listener: Kafka's EXTERNAL listener, for clients outside the brokers' network.

A broker may serve BrokerService on a second port (``--external-listener``). Requests arriving
there go to the same core as any other; only the answers differ: every ``Endpoint`` in them
that names a node's internal listener (the brokers of a MetadataResponse, the controller) is
swapped for that node's external endpoint. So a client that bootstrapped through
``127.0.0.1:<published port>`` of a docker-compose cluster is sent on to the other published
ports, never to names that only the compose network resolves. As in Kafka, a client is given
the addresses of the listener it came in on; brokers talk to each other (replication, the
controller) on the internal one. Brokers learn each other's external endpoints from their
registrations in the metadata journal (``RegisterBrokerRecord.external_endpoint``).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from google.protobuf.descriptor import Descriptor, FieldDescriptor

from brokerlab.rpc.grpc_options import add_health_and_reflection, new_server, set_serving
from brokerlab.v1 import common_pb2
from node.metadata_image import MetadataImage
from node.rpc.group_servicer import add_group_service
from node.rpc.servicer import SERVICE_NAME, add_broker_service

Address = tuple[str, int]
_ENDPOINT = common_pb2.Endpoint.DESCRIPTOR


def external_endpoints(
    image: MetadataImage,
    controller_endpoint: Address | None,
    external_controller: Address | None,
) -> dict[Address, Address]:
    """internal (host, port) -> external (host, port), for every node that has both."""
    mapping: dict[Address, Address] = {}
    for broker in image.brokers.values():
        if broker.external_host and broker.external_port:
            mapping[(broker.host, broker.port)] = (broker.external_host, broker.external_port)
    if controller_endpoint is not None and external_controller is not None:
        mapping[controller_endpoint] = external_controller
    return mapping


def _holds_endpoint(descriptor: Descriptor, seen: dict[str, bool]) -> bool:
    """Whether a message of this type can contain an Endpoint (memoised; cycles count as no)."""
    name = descriptor.full_name
    if name in seen:
        return seen[name]
    seen[name] = False
    found = descriptor is _ENDPOINT or any(
        field.type == FieldDescriptor.TYPE_MESSAGE and _holds_endpoint(field.message_type, seen)
        for field in descriptor.fields
    )
    seen[name] = found
    return found


_SEEN: dict[str, bool] = {}


def _rewrite(message: Any, mapping: Mapping[Address, Address]) -> None:
    descriptor = message.DESCRIPTOR
    if descriptor is _ENDPOINT:
        external = mapping.get((message.host, message.port))
        if external is not None:
            message.host, message.port = external
        return
    for field in descriptor.fields:
        if field.type != FieldDescriptor.TYPE_MESSAGE or not _holds_endpoint(field.message_type, _SEEN):
            continue
        if field.is_repeated:
            if field.message_type.GetOptions().map_entry:
                continue  # no map of ours holds endpoints
            for item in getattr(message, field.name):
                _rewrite(item, mapping)
        elif message.HasField(field.name):
            _rewrite(getattr(message, field.name), mapping)


def translate(response: Any, mapping: Mapping[Address, Address]) -> Any:
    """A copy of ``response`` with internal endpoints swapped for external ones.

    Responses without endpoints (Produce, Fetch: the hot path) are returned as they are.
    """
    if not mapping or not _holds_endpoint(response.DESCRIPTOR, _SEEN):
        return response
    out = type(response)()
    out.CopyFrom(response)  # the core may keep the object it answered with
    _rewrite(out, mapping)
    return out


class ExternalView:
    """Stands in for the CoreDriver behind the external listener's servicer."""

    def __init__(self, driver: Any, mapping: Callable[[], Mapping[Address, Address]]) -> None:
        self._driver = driver
        self._mapping = mapping

    async def request(self, rpc: str, message: Any, src: str = "client") -> Any:
        return translate(await self._driver.request(rpc, message, src), self._mapping())

    def __getattr__(self, name: str) -> Any:  # anything else the servicer uses goes to the driver
        return getattr(self._driver, name)


class ExternalListener:
    """The second gRPC server: BrokerService (translated), health and reflection."""

    def __init__(self, listen: str, advertised: Address | None, interceptors: Any = None) -> None:
        self.server = new_server(interceptors)
        port = self.server.add_insecure_port(listen)  # RuntimeError if the address is taken
        if port == 0:
            raise RuntimeError(f"cannot listen on {listen}")
        host = listen.rpartition(":")[0]
        self.listen = f"{host}:{port}"
        self.advertised: Address = advertised if advertised is not None else (host, port)
        self._health: Any = None

    def attach(self, driver: Any, mapping: Callable[[], Mapping[Address, Address]]) -> None:
        add_broker_service(self.server, ExternalView(driver, mapping))
        add_group_service(self.server, ExternalView(driver, mapping))  # FindCoordinator endpoints too
        self._health = add_health_and_reflection(self.server, [SERVICE_NAME])

    async def set_serving(self, serving: bool) -> None:
        await set_serving(self._health, [SERVICE_NAME], serving)

    async def start(self) -> None:
        await self.set_serving(False)
        await self.server.start()

    async def stop(self, grace_s: float) -> None:
        await self.server.stop(grace_s)


__all__ = ["ExternalListener", "ExternalView", "external_endpoints", "translate"]
