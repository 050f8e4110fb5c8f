"""The lab's side of FaultService (brokerlab/rpc/faults.py): set and clear link faults and clock
skew on running nodes, which must have been started with ``--fault-injection``."""

from __future__ import annotations

import grpc

from brokerlab.errors import ErrorCode, KafkaError
from brokerlab.faults import LinkFault
from brokerlab.rpc.faults import from_proto, to_proto
from brokerlab.rpc.grpc_options import insecure_channel
from brokerlab.v1 import fault_pb2, fault_pb2_grpc

CALL_TIMEOUT_S = 5.0


class FaultClient:
    """One channel per node address; every call has a deadline and raises KafkaError on failure."""

    def __init__(self) -> None:
        self._channels: dict[str, grpc.aio.Channel] = {}

    def _stub(self, address: str) -> fault_pb2_grpc.FaultServiceStub:
        channel = self._channels.get(address)
        if channel is None:
            channel = self._channels[address] = insecure_channel(address)
        return fault_pb2_grpc.FaultServiceStub(channel)

    async def _call(self, address: str, rpc: str, request):
        try:
            return await getattr(self._stub(address), rpc)(request, timeout=CALL_TIMEOUT_S)
        except grpc.aio.AioRpcError as exc:
            hint = " (was the node started with --fault-injection?)" if exc.code() == grpc.StatusCode.UNIMPLEMENTED else ""
            raise KafkaError(ErrorCode.NETWORK_EXCEPTION,
                             f"FaultService.{rpc} at {address}: {exc.code().name} {exc.details()}{hint}") from None

    async def set_link_faults(self, address: str, faults: list[LinkFault], replace: bool = False) -> list[LinkFault]:
        response = await self._call(address, "SetLinkFaults", fault_pb2.SetLinkFaultsRequest(
            faults=[to_proto(f) for f in faults], replace=replace))
        if response.error_code:
            raise KafkaError(response.error_code, response.error_message)
        return [from_proto(f) for f in response.faults]

    async def clear(self, address: str) -> None:
        await self._call(address, "ClearFaults", fault_pb2.ClearFaultsRequest())

    async def set_clock_skew(self, address: str, skew_ms: int) -> None:
        await self._call(address, "SetClockSkew", fault_pb2.SetClockSkewRequest(skew_ms=skew_ms))

    async def describe(self, address: str) -> dict:
        response = await self._call(address, "DescribeFaults", fault_pb2.DescribeFaultsRequest())
        return {"node": response.node, "faults": [from_proto(f) for f in response.faults],
                "clock_skew_ms": response.clock_skew_ms, "dropped_calls": response.dropped_calls,
                "delayed_calls": response.delayed_calls}

    async def close(self) -> None:
        channels, self._channels = self._channels, {}
        for channel in channels.values():
            await channel.close()
