"""FaultService and the hooks that apply its rules to a node's gRPC traffic (TEST FACILITY).

Only wired when a node starts with ``--fault-injection``. ``FaultInjector`` holds the node's
``brokerlab.faults.FaultState`` and applies it:

- outbound: a transport awaits ``injector.outbound(dst, timeout_s)`` before each call; a dropped
  call waits out its deadline (a black hole) and fails like a timeout; a delayed one sleeps first.
  Calls carry ``brokerlab-node: <name>`` metadata so the receiver knows who is calling.
- inbound: ``injector.interceptor()`` is a server interceptor that treats calls from the peer the
  same way before the servicer sees them (FaultService, health and reflection are exempt).
- clock: ``injector.clock_ms`` is the wall clock plus the skew, for the node's CoreDriver.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any, Callable

import grpc

from brokerlab.errors import ErrorCode
from brokerlab.faults import NODE_HEADER, FaultState, LinkFault
from brokerlab.v1 import fault_pb2, fault_pb2_grpc

SERVICE_NAME = fault_pb2.DESCRIPTOR.services_by_name["FaultService"].full_name
EXEMPT_PREFIXES = (f"/{SERVICE_NAME}/", "/grpc.health.", "/grpc.reflection.")
MAX_HOLD_S = 30.0  # a dropped inbound call without a deadline is held this long at most


class FaultInjector:
    def __init__(self, node: str, base_clock_ms: Callable[[], int],
                 on_change: Callable[[str, dict], None] | None = None, rng: Any = None) -> None:
        self.state = FaultState(node)
        self.random = rng or random.Random()
        self._base_clock_ms = base_clock_ms
        self._on_change = on_change
        self.metadata = ((NODE_HEADER, node),)

    def clock_ms(self) -> int:
        return self._base_clock_ms() + self.state.clock_skew_ms

    def changed(self) -> None:
        if self._on_change is not None:
            rules = [f"{r.peer}:{_describe(r)}" for r in self.state.rules.values()]
            self._on_change("FaultsChanged", {"rules": rules, "clock_skew_ms": self.state.clock_skew_ms})

    async def outbound(self, dst: str, timeout_s: float) -> str | None:
        """None to go ahead (after any delay), or the failure reason of a lost call."""
        verdict = self.state.decide(dst, self.random)
        if verdict.drop:
            await asyncio.sleep(timeout_s)
            return f"DEADLINE_EXCEEDED: call lost (fault injection: link to {dst} dropped)"
        if verdict.delay_ms:
            await asyncio.sleep(verdict.delay_ms / 1000.0)
        return None

    def interceptor(self) -> grpc.aio.ServerInterceptor:
        return _InboundFaults(self)


def _describe(rule: LinkFault) -> str:
    if rule.drop_all:
        return "drop"
    parts = []
    if rule.delay_ms or rule.jitter_ms:
        parts.append(f"delay={rule.delay_ms}+{rule.jitter_ms}ms")
    if rule.drop_probability:
        parts.append(f"loss={rule.drop_probability:g}")
    return ",".join(parts)


def caller_of(metadata: Any) -> str | None:
    for key, value in metadata or ():
        if key == NODE_HEADER:
            return value
    return None


class _InboundFaults(grpc.aio.ServerInterceptor):
    def __init__(self, injector: FaultInjector) -> None:
        self._injector = injector

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        state = self._injector.state
        if (handler is None or not state.active or handler.unary_unary is None
                or handler_call_details.method.startswith(EXEMPT_PREFIXES)):
            return handler
        peer = caller_of(handler_call_details.invocation_metadata)
        if state.rule_for(peer) is None:
            return handler
        inner = handler.unary_unary
        injector = self._injector

        async def faulty(request, context):
            verdict = injector.state.decide(peer, injector.random)
            if verdict.drop:
                # Past the caller's deadline, so it sees a timeout as with a real black hole.
                remaining = context.time_remaining()
                await asyncio.sleep(min(remaining + 0.05 if remaining is not None else MAX_HOLD_S, MAX_HOLD_S))
                await context.abort(grpc.StatusCode.UNAVAILABLE, "call lost (fault injection)")
            if verdict.delay_ms:
                await asyncio.sleep(verdict.delay_ms / 1000.0)
            return await inner(request, context)

        return handler._replace(unary_unary=faulty)


def to_proto(rule: LinkFault) -> fault_pb2.LinkFault:
    return fault_pb2.LinkFault(peer=rule.peer, drop_all=rule.drop_all, delay_ms=rule.delay_ms,
                               jitter_ms=rule.jitter_ms, drop_probability=rule.drop_probability)


def from_proto(message: fault_pb2.LinkFault) -> LinkFault:
    return LinkFault(message.peer, message.drop_all, message.delay_ms, message.jitter_ms, message.drop_probability)


class FaultServicer(fault_pb2_grpc.FaultServiceServicer):
    def __init__(self, injector: FaultInjector) -> None:
        self._injector = injector

    async def SetLinkFaults(self, request, context):
        try:
            rules = [from_proto(f) for f in request.faults]
        except ValueError as exc:
            return fault_pb2.SetLinkFaultsResponse(error_code=ErrorCode.INVALID_REQUEST, error_message=str(exc))
        state = self._injector.state
        state.set_rules(rules, replace=request.replace)
        self._injector.changed()
        return fault_pb2.SetLinkFaultsResponse(faults=[to_proto(r) for r in state.rules.values()])

    async def ClearFaults(self, request, context):
        self._injector.state.clear()
        self._injector.changed()
        return fault_pb2.ClearFaultsResponse()

    async def SetClockSkew(self, request, context):
        self._injector.state.clock_skew_ms = request.skew_ms
        self._injector.changed()
        return fault_pb2.SetClockSkewResponse(skew_ms=request.skew_ms)

    async def DescribeFaults(self, request, context):
        state = self._injector.state
        return fault_pb2.DescribeFaultsResponse(
            node=state.node, faults=[to_proto(r) for r in state.rules.values()], clock_skew_ms=state.clock_skew_ms,
            dropped_calls=state.dropped_calls, delayed_calls=state.delayed_calls)


def add_fault_service(server: grpc.aio.Server, injector: FaultInjector) -> FaultServicer:
    servicer = FaultServicer(injector)
    fault_pb2_grpc.add_FaultServiceServicer_to_server(servicer, server)
    return servicer
