"""ControllerService over grpc.aio: each call becomes one request to the core through the driver.

Thin on purpose: no protocol logic here. Errors travel inside the responses as Kafka error
codes; a gRPC status is used only when the core itself failed (INTERNAL), e.g. the journal
could not be written, in which case nothing was applied.
"""

from __future__ import annotations

import logging

import grpc

from brokerlab.driver import CoreDriver
from brokerlab.ids import broker_node
from brokerlab.rpc.core_call import call_core
from brokerlab.v1 import controller_pb2, controller_pb2_grpc

SERVICE_NAME = controller_pb2.DESCRIPTOR.services_by_name["ControllerService"].full_name
log = logging.getLogger("controller.rpc")


class ControllerServicer(controller_pb2_grpc.ControllerServiceServicer):
    def __init__(self, driver: CoreDriver) -> None:
        self._driver = driver

    async def _call(self, rpc: str, request, context: grpc.aio.ServicerContext, src: str = "client"):
        return await call_core(self._driver, rpc, request, context, log, src)

    async def RegisterBroker(self, request, context):
        return await self._call("RegisterBroker", request, context, broker_node(request.broker_id))

    async def BrokerHeartbeat(self, request, context):
        return await self._call("BrokerHeartbeat", request, context, broker_node(request.broker_id))

    async def FetchMetadataRecords(self, request, context):
        return await self._call("FetchMetadataRecords", request, context, broker_node(request.broker_id))

    async def CreateTopics(self, request, context):
        return await self._call("CreateTopics", request, context)

    async def DeleteTopics(self, request, context):
        return await self._call("DeleteTopics", request, context)

    async def DescribeCluster(self, request, context):
        return await self._call("DescribeCluster", request, context)

    async def AlterPartition(self, request, context):
        return await self._call("AlterPartition", request, context, broker_node(request.broker_id))

    async def ElectLeaders(self, request, context):
        return await self._call("ElectLeaders", request, context)

    async def AllocateProducerIds(self, request, context):
        return await self._call("AllocateProducerIds", request, context, broker_node(request.broker_id))


def add_controller_service(server: grpc.aio.Server, driver: CoreDriver) -> ControllerServicer:
    servicer = ControllerServicer(driver)
    controller_pb2_grpc.add_ControllerServiceServicer_to_server(servicer, server)
    return servicer
