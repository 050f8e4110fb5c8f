"""The one thing every gRPC servicer does: hand a request to its core's driver."""

from __future__ import annotations

import logging
from typing import Any

import grpc

from brokerlab.driver import CoreDriver


async def call_core(
    driver: CoreDriver,
    rpc: str,
    request: Any,
    context: grpc.aio.ServicerContext,
    log: logging.Logger,
    src: str = "client",
) -> Any:
    """``await driver.request(...)``; a core that raises answers INTERNAL (one line), never hangs."""
    try:
        return await driver.request(rpc, request, src)
    except Exception as exc:
        log.exception("core failed on %s", rpc)
        await context.abort(grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {exc}")
