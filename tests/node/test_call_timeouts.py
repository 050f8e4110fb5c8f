"""The broker's call deadlines (node/call_timeouts.py), shared by the gRPC transport and the simulator."""

from __future__ import annotations

from brokerlab.v1 import broker_pb2, controller_pb2
from node.call_timeouts import LONG_POLL_MARGIN_MS, call_timeout_ms
from node.config import BrokerConfig


def test_a_heartbeat_deadline_is_a_third_of_the_session_so_one_loss_is_not_a_fencing() -> None:
    heartbeat = controller_pb2.BrokerHeartbeatRequest()
    config = BrokerConfig(broker_id=1, session_timeout_ms=750, heartbeat_interval_ms=100)
    assert call_timeout_ms(config, "BrokerHeartbeat", heartbeat) == 250
    # Never under one interval, never over the controller request timeout.
    assert call_timeout_ms(BrokerConfig(broker_id=1, session_timeout_ms=150, heartbeat_interval_ms=100),
                           "BrokerHeartbeat", heartbeat) == 100
    assert call_timeout_ms(BrokerConfig(broker_id=1, session_timeout_ms=9_000, controller_request_timeout_ms=2_000),
                           "BrokerHeartbeat", heartbeat) == 2_000


def test_long_polls_get_their_wait_plus_a_margin_and_the_rest_the_request_timeout() -> None:
    config = BrokerConfig(broker_id=1, controller_request_timeout_ms=2_000)
    fetch = controller_pb2.FetchMetadataRecordsRequest(max_wait_ms=1234)
    assert call_timeout_ms(config, "FetchMetadataRecords", fetch) == 1234 + LONG_POLL_MARGIN_MS
    assert call_timeout_ms(config, "Fetch", broker_pb2.FetchRequest(max_wait_ms=500)) == 500 + LONG_POLL_MARGIN_MS
    assert call_timeout_ms(config, "RegisterBroker", controller_pb2.RegisterBrokerRequest()) == 2_000
