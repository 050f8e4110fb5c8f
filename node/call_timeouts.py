"""The deadline the broker puts on each call it makes (controller and peer brokers).

One pure rule, used by the gRPC transport (node/rpc/transport.py) and by the simulator
(lab/sim/cores.py), so a lost message costs the same time in both.
"""

from __future__ import annotations

from typing import Any

from node.config import BrokerConfig

# Room on top of a long-poll's own wait before the call counts as failed.
LONG_POLL_MARGIN_MS = 1000
LONG_POLLS = frozenset({"FetchMetadataRecords", "Fetch"})


def heartbeat_timeout_ms(config: BrokerConfig) -> int:
    """A third of the session (never under one interval): a lost heartbeat or answer costs a
    third of the session, then the next one goes out at once (it is overdue), so one loss does
    not get a live broker fenced. Kafka likewise keeps heartbeating through a failed one."""
    return min(config.controller_request_timeout_ms,
               max(config.heartbeat_interval_ms, config.session_timeout_ms // 3))


def call_timeout_ms(config: BrokerConfig, rpc: str, message: Any) -> int:
    if rpc in LONG_POLLS:
        return max(message.max_wait_ms, 0) + LONG_POLL_MARGIN_MS
    if rpc == "BrokerHeartbeat":
        return heartbeat_timeout_ms(config)
    return config.controller_request_timeout_ms
