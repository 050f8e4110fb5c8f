"""Executes the broker core's sends over gRPC and hands back the answer as an Envelope.

"controller" goes to the ControllerService at the configured address; "broker-N" (follower
Fetch and OffsetForLeaderEpoch) to BrokerService at the endpoint the metadata image gives for
broker N.
A gRPC failure becomes ``envelope.failed(reason)``: the core decides what to do about it.
"""

from __future__ import annotations

from typing import Any, Callable

import grpc

from brokerlab.ids import CONTROLLER_NODE, broker_id_of
from brokerlab.rpc.grpc_options import insecure_channel
from brokerlab.sansio import Envelope
from brokerlab.v1 import broker_pb2_grpc, controller_pb2_grpc
from node.call_timeouts import call_timeout_ms
from node.config import BrokerConfig

EndpointOf = Callable[[int], "tuple[str, int] | None"]


class BrokerTransport:
    def __init__(self, config: BrokerConfig, endpoint_of: EndpointOf, faults: Any = None) -> None:
        self._config = config
        self._endpoint_of = endpoint_of
        self._faults = faults  # brokerlab.rpc.faults.FaultInjector with --fault-injection, else None
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._stubs: dict[tuple[str, str], object] = {}

    def _address(self, node: str) -> str:
        if node == CONTROLLER_NODE:
            if self._config.controller_endpoint is None:
                raise LookupError("no controller address configured")
            host, port = self._config.controller_endpoint
        else:
            endpoint = self._endpoint_of(broker_id_of(node))
            if endpoint is None:
                raise LookupError(f"no endpoint known for {node}")
            host, port = endpoint
        return f"{host}:{port}"

    def _stub(self, node: str):
        address = self._address(node)
        kind = "controller" if node == CONTROLLER_NODE else "broker"
        stub = self._stubs.get((kind, address))
        if stub is None:
            channel = self._channels.get(address)
            if channel is None:
                channel = self._channels[address] = insecure_channel(address)
            factory = controller_pb2_grpc.ControllerServiceStub if kind == "controller" else broker_pb2_grpc.BrokerServiceStub
            stub = self._stubs[(kind, address)] = factory(channel)
        return stub

    def timeout_s(self, envelope: Envelope) -> float:
        return call_timeout_ms(self._config, envelope.rpc, envelope.message) / 1000.0

    async def __call__(self, envelope: Envelope) -> Envelope:
        try:
            method = getattr(self._stub(envelope.dst), envelope.rpc)
        except (LookupError, ValueError, AttributeError) as exc:
            return envelope.failed(f"cannot route {envelope.rpc} to {envelope.dst}: {exc}")
        options = {"timeout": self.timeout_s(envelope)}
        if self._faults is not None:  # test facility: lost or delayed links (brokerlab/rpc/faults.py)
            lost = await self._faults.outbound(envelope.dst, options["timeout"])
            if lost is not None:
                return envelope.failed(lost)
            options["metadata"] = self._faults.metadata
        try:
            response = await method(envelope.message, **options)
        except grpc.aio.AioRpcError as exc:
            return envelope.failed(f"{exc.code().name}: {exc.details()}")
        return envelope.reply(response)

    async def close(self) -> None:
        channels, self._channels, self._stubs = self._channels, {}, {}
        for channel in channels.values():
            await channel.close()
