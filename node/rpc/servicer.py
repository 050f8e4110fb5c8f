"""BrokerService over grpc.aio: each call becomes one request to the core through the driver.

Thin on purpose: no protocol logic here. Per-partition errors travel inside the responses
(Kafka error codes); a gRPC status is used only when the core itself failed (INTERNAL).
"""

from __future__ import annotations

import logging

import grpc

from brokerlab.driver import CoreDriver
from brokerlab.rpc.core_call import call_core
from brokerlab.v1 import broker_pb2, broker_pb2_grpc

SERVICE_NAME = broker_pb2.DESCRIPTOR.services_by_name["BrokerService"].full_name
log = logging.getLogger("node.rpc")


class BrokerServicer(broker_pb2_grpc.BrokerServiceServicer):
    def __init__(self, driver: CoreDriver) -> None:
        self._driver = driver

    async def _call(self, rpc: str, request, context: grpc.aio.ServicerContext):
        return await call_core(self._driver, rpc, request, context, log)

    async def Produce(self, request, context):
        return await self._call("Produce", request, context)

    async def Fetch(self, request, context):
        return await self._call("Fetch", request, context)

    async def ListOffsets(self, request, context):
        return await self._call("ListOffsets", request, context)

    async def Metadata(self, request, context):
        return await self._call("Metadata", request, context)

    async def DescribeLogDirs(self, request, context):
        return await self._call("DescribeLogDirs", request, context)

    async def OffsetForLeaderEpoch(self, request, context):
        return await self._call("OffsetForLeaderEpoch", request, context)

    async def InitProducerId(self, request, context):
        return await self._call("InitProducerId", request, context)


def add_broker_service(server: grpc.aio.Server, driver: CoreDriver) -> BrokerServicer:
    servicer = BrokerServicer(driver)
    broker_pb2_grpc.add_BrokerServiceServicer_to_server(servicer, server)
    return servicer
