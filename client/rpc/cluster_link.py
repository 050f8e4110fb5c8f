"""ClusterLink: the one place a client talks gRPC.

One grpc.aio channel (and stub) per address, the metadata refresh that fills the sans-IO
MetadataCache (known brokers first, then the bootstrap list), the controller's stub from
MetadataResponse.controller_endpoint, a deadline on every call, and gRPC failures turned into
KafkaError(NETWORK_EXCEPTION | REQUEST_TIMED_OUT | ...) with a one-line message. Producer,
Consumer and Admin call through it and never import grpc themselves.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Iterable

import grpc

from brokerlab.errors import ErrorCode, KafkaError
from brokerlab.rpc.grpc_options import insecure_channel
from brokerlab.v1 import broker_pb2
from brokerlab.v1.broker_pb2_grpc import BrokerServiceStub
from brokerlab.v1.controller_pb2_grpc import ControllerServiceStub
from brokerlab.v1.group_pb2_grpc import GroupServiceStub
from client.metadata import METADATA_HEDGE_MS, MetadataBrokerOrder, MetadataCache

# Status codes for a whole request -> the Kafka code a client acts on.
_STATUS_TO_ERROR = {
    grpc.StatusCode.DEADLINE_EXCEEDED: ErrorCode.REQUEST_TIMED_OUT,
    grpc.StatusCode.INVALID_ARGUMENT: ErrorCode.INVALID_REQUEST,
    grpc.StatusCode.UNIMPLEMENTED: ErrorCode.INVALID_REQUEST,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ErrorCode.MESSAGE_TOO_LARGE,
    grpc.StatusCode.PERMISSION_DENIED: ErrorCode.UNKNOWN_SERVER_ERROR,
    grpc.StatusCode.UNAUTHENTICATED: ErrorCode.UNKNOWN_SERVER_ERROR,
}
_MAX_DETAIL_CHARS = 200


def _ignore_outcome(task: asyncio.Task) -> None:
    if not task.cancelled():
        task.exception()  # retrieved, so an abandoned hedge logs nothing


def grpc_error_to_kafka(error: grpc.aio.AioRpcError, rpc: str, address: str) -> KafkaError:
    """A one-line KafkaError for a failed call; anything not listed is a network failure."""
    status = error.code()
    code = _STATUS_TO_ERROR.get(status, ErrorCode.NETWORK_EXCEPTION)
    details = (error.details() or "").strip().splitlines()
    detail = details[0][:_MAX_DETAIL_CHARS] if details else ""
    message = f"{rpc} to {address} failed: {status.name}" + (f" ({detail})" if detail else "")
    return KafkaError(code, message)


def parse_bootstrap(bootstrap: str | Iterable[str]) -> list[str]:
    """``"a:1,b:2"`` or ``["a:1", "b:2"]`` -> ``["a:1", "b:2"]`` (order kept, duplicates dropped)."""
    items = bootstrap.split(",") if isinstance(bootstrap, str) else list(bootstrap)
    out: list[str] = []
    for item in items:
        for address in str(item).split(","):
            address = address.strip()
            if address and address not in out:
                out.append(address)
    if not out:
        raise ValueError("no bootstrap address given")
    return out


class ClusterLink:
    def __init__(
        self,
        bootstrap: str | Iterable[str],
        metadata_max_age_ms: int = 300_000,
        request_timeout_ms: int = 30_000,
    ) -> None:
        self.bootstrap = parse_bootstrap(bootstrap)
        self.request_timeout_ms = request_timeout_ms
        self.cache = MetadataCache(metadata_max_age_ms)
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._broker_stubs: dict[str, BrokerServiceStub] = {}
        self._controller_stubs: dict[str, ControllerServiceStub] = {}
        self._group_stubs: dict[str, GroupServiceStub] = {}
        self._refreshes: dict[tuple[str, ...] | None, asyncio.Future] = {}
        self._broker_order = MetadataBrokerOrder(self.bootstrap)
        self._closed = False

    @staticmethod
    def now_ms() -> int:
        """Monotonic milliseconds: the clock the cache's staleness and client backoffs use."""
        return int(time.monotonic() * 1000)

    # ---- channels and stubs ------------------------------------------------------------

    def _channel(self, address: str) -> grpc.aio.Channel:
        if self._closed:
            raise KafkaError(ErrorCode.NETWORK_EXCEPTION, "the client is closed")
        channel = self._channels.get(address)
        if channel is None:
            channel = insecure_channel(address)
            self._channels[address] = channel
        return channel

    def broker_stub_at(self, address: str) -> BrokerServiceStub:
        stub = self._broker_stubs.get(address)
        if stub is None:
            stub = BrokerServiceStub(self._channel(address))
            self._broker_stubs[address] = stub
        return stub

    def broker_address(self, broker_id: int) -> str:
        address = self.cache.broker_address(broker_id)
        if address is None:
            self.cache.request_update()
            raise KafkaError(ErrorCode.BROKER_NOT_AVAILABLE, f"broker {broker_id} is not in the metadata")
        return address

    def broker_stub(self, broker_id: int) -> BrokerServiceStub:
        return self.broker_stub_at(self.broker_address(broker_id))

    async def controller_address(self) -> str:
        address = self.cache.controller_address()
        if address is None:
            await self.refresh_metadata(self.cache.wanted_topics() or None)
            address = self.cache.controller_address()
        if address is None:
            raise KafkaError(ErrorCode.NOT_CONTROLLER, "no broker reported a controller endpoint")
        return address

    async def controller_stub(self) -> ControllerServiceStub:
        return self._controller_stub_at(await self.controller_address())

    def _controller_stub_at(self, address: str) -> ControllerServiceStub:
        stub = self._controller_stubs.get(address)
        if stub is None:
            stub = ControllerServiceStub(self._channel(address))
            self._controller_stubs[address] = stub
        return stub

    # ---- calls -----------------------------------------------------------------------------

    async def call_broker_at(self, address: str, rpc: str, request: Any, timeout_ms: int | None = None) -> Any:
        """One BrokerService call with a deadline; failures raise KafkaError."""
        method = getattr(self.broker_stub_at(address), rpc)
        return await self._call(method, rpc, address, request, timeout_ms)

    async def call_broker(self, broker_id: int, rpc: str, request: Any, timeout_ms: int | None = None) -> Any:
        address = self.broker_address(broker_id)
        try:
            return await self.call_broker_at(address, rpc, request, timeout_ms)
        except KafkaError as exc:
            if exc.code == ErrorCode.NETWORK_EXCEPTION:
                self.cache.request_update()  # the broker may be gone or moved
            raise

    async def call_group_at(self, address: str, rpc: str, request: Any, timeout_ms: int | None = None) -> Any:
        """One GroupService call (consumer groups) to the broker at ``address``."""
        stub = self._group_stubs.get(address)
        if stub is None:
            stub = self._group_stubs[address] = GroupServiceStub(self._channel(address))
        return await self._call(getattr(stub, rpc), rpc, address, request, timeout_ms)

    async def call_controller(self, rpc: str, request: Any, timeout_ms: int | None = None) -> Any:
        address = await self.controller_address()
        try:
            return await self._call(getattr(self._controller_stub_at(address), rpc), rpc, address, request, timeout_ms)
        except KafkaError as exc:
            if exc.code == ErrorCode.NETWORK_EXCEPTION:
                self.cache.request_update()
            raise

    async def _call(self, method, rpc: str, address: str, request: Any, timeout_ms: int | None) -> Any:
        timeout_s = (self.request_timeout_ms if timeout_ms is None else timeout_ms) / 1000.0
        try:
            return await method(request, timeout=timeout_s)
        except grpc.aio.AioRpcError as exc:
            raise grpc_error_to_kafka(exc, rpc, address) from None
        except grpc.aio.UsageError as exc:  # the channel was closed under the call
            raise KafkaError(ErrorCode.NETWORK_EXCEPTION, f"{rpc} to {address} failed: {exc}") from None

    # ---- metadata ------------------------------------------------------------------------

    async def refresh_metadata(self, topics: list[str] | None = None) -> broker_pb2.MetadataResponse:
        """Fetch metadata (for ``topics``, or every topic) into ``cache``; returns the response.

        Asks the known brokers first (rotating which one goes first), then the bootstrap
        addresses; the first answer wins. Concurrent refreshes of the same topics share one call.
        An empty list means every topic, as on the wire.
        """
        key = tuple(sorted(set(topics))) if topics else None
        future = self._refreshes.get(key)
        if future is None:
            future = asyncio.ensure_future(self._refresh(key))
            self._refreshes[key] = future
            future.add_done_callback(lambda f, k=key: self._refresh_done(k, f))
        return await asyncio.shield(future)

    def _refresh_done(self, key, future: asyncio.Future) -> None:
        if self._refreshes.get(key) is future:
            del self._refreshes[key]
        if not future.cancelled():
            future.exception()  # retrieved here so an abandoned refresh logs nothing

    async def maybe_refresh_metadata(self, topics: list[str] | None = None) -> None:
        """Refresh only if the cache is stale or a refresh was requested."""
        if self.cache.needs_update(self.now_ms()):
            await self.refresh_metadata(topics)

    def _metadata_candidates(self) -> list[str]:
        return self._broker_order.candidates(list(self.cache.brokers().values()), self.now_ms())

    async def _refresh(self, topics: tuple[str, ...] | None) -> broker_pb2.MetadataResponse:
        """Ask candidates one after another, hedged: one that is silent for METADATA_HEDGE_MS
        (a paused broker accepts the call and never answers) gets company from the next, and the
        first answer wins. Kafka picks its least loaded node for the same reason."""
        request = broker_pb2.MetadataRequest(topics=list(topics or ()))
        errors: list[str] = []
        pending: dict[asyncio.Task, str] = {}
        candidates = self._metadata_candidates()
        try:
            while candidates or pending:
                if candidates:
                    address = candidates.pop(0)
                    task = asyncio.ensure_future(self.call_broker_at(address, "Metadata", request))
                    pending[task] = address
                hedge_s = METADATA_HEDGE_MS / 1000 if candidates else None
                done, _ = await asyncio.wait(pending, timeout=hedge_s, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    address = pending.pop(task)
                    exc = task.exception() if not task.cancelled() else KafkaError(ErrorCode.NETWORK_EXCEPTION, "cancelled")
                    if exc is None:
                        self._broker_order.answered(address)
                        response = task.result()
                        self.cache.update(response, self.now_ms(), full=topics is None)
                        return response
                    self._broker_order.failed(address, self.now_ms())
                    errors.append(exc.message if isinstance(exc, KafkaError) else repr(exc))
        finally:
            for task in pending:
                task.cancel()
                task.add_done_callback(_ignore_outcome)
        raise KafkaError(
            ErrorCode.NETWORK_EXCEPTION,
            f"no broker answered Metadata; last error: {errors[-1] if errors else 'no address to try'}",
        )

    async def close(self) -> None:
        self._closed = True
        for future in list(self._refreshes.values()):
            future.cancel()
        channels = list(self._channels.values())
        self._channels.clear()
        self._broker_stubs.clear()
        self._controller_stubs.clear()
        self._group_stubs.clear()
        await asyncio.gather(*(channel.close() for channel in channels), return_exceptions=True)
