"""GroupService over grpc.aio: consumer group requests to the broker core, through its driver.

Thin like BrokerServicer. One thing it adds: JoinGroup's ``client_host`` comes from the
connection's peer address (Kafka takes it from the socket), so ``group describe`` shows it.
"""

from __future__ import annotations

import logging

import grpc

from brokerlab.driver import CoreDriver
from brokerlab.rpc.core_call import call_core
from brokerlab.v1 import group_pb2, group_pb2_grpc

SERVICE_NAME = group_pb2.DESCRIPTOR.services_by_name["GroupService"].full_name
log = logging.getLogger("node.rpc")


def peer_host(peer: str | None) -> str:
    """``ipv4:127.0.0.1:5000`` -> ``/127.0.0.1`` (Kafka's way of showing a client host)."""
    if not peer:
        return ""
    kind, _, rest = peer.partition(":")
    if kind == "ipv6":
        host = rest.rsplit(":", 1)[0].strip("[]")
    elif kind == "ipv4":
        host = rest.rsplit(":", 1)[0]
    else:
        host = rest or peer
    return f"/{host}"


class GroupServicer(group_pb2_grpc.GroupServiceServicer):
    def __init__(self, driver: CoreDriver) -> None:
        self._driver = driver

    async def _call(self, rpc: str, request, context: grpc.aio.ServicerContext):
        return await call_core(self._driver, rpc, request, context, log)

    async def FindCoordinator(self, request, context):
        return await self._call("FindCoordinator", request, context)

    async def JoinGroup(self, request, context):
        if not request.client_host:
            request.client_host = peer_host(context.peer())
        return await self._call("JoinGroup", request, context)

    async def SyncGroup(self, request, context):
        return await self._call("SyncGroup", request, context)

    async def Heartbeat(self, request, context):
        return await self._call("Heartbeat", request, context)

    async def LeaveGroup(self, request, context):
        return await self._call("LeaveGroup", request, context)

    async def OffsetCommit(self, request, context):
        return await self._call("OffsetCommit", request, context)

    async def OffsetFetch(self, request, context):
        return await self._call("OffsetFetch", request, context)

    async def ListGroups(self, request, context):
        return await self._call("ListGroups", request, context)

    async def DescribeGroups(self, request, context):
        return await self._call("DescribeGroups", request, context)

    async def DeleteGroups(self, request, context):
        return await self._call("DeleteGroups", request, context)


def add_group_service(server: grpc.aio.Server, driver: CoreDriver) -> GroupServicer:
    servicer = GroupServicer(driver)
    group_pb2_grpc.add_GroupServiceServicer_to_server(servicer, server)
    return servicer
