"""BrokerConfig from Kafka keys; storage keys reach LogConfig."""

from __future__ import annotations

import pytest

from brokerlab.config import ConfigError
from node.config import BrokerConfig, parse_endpoint


def test_defaults_and_overrides() -> None:
    config = BrokerConfig.from_values({})
    assert (config.heartbeat_interval_ms, config.session_timeout_ms, config.replica_fetch_wait_max_ms) == (100, 750, 500)
    assert config.min_insync_replicas == 2 and config.controller_endpoint is None
    config = BrokerConfig.from_values({
        "broker.id": "3",
        "controller.quorum.bootstrap.servers": "127.0.0.1:9093",
        "broker.heartbeat.interval.ms": "50",
        "log.segment.bytes": "4096",
        "message.max.bytes": "1000",
        "log.flush.policy": "batch",
        "log.dirs": "/tmp/x",
    })
    assert (config.broker_id, config.controller_endpoint, config.heartbeat_interval_ms) == (3, ("127.0.0.1", 9093), 50)
    assert config.log_config.segment_bytes == 4096 and config.log_config.max_message_bytes == 1000
    assert config.log_config.flush_policy == "batch" and config.log_dirs == "/tmp/x"


@pytest.mark.parametrize("raw", [
    {"no.such.key": "1"},
    {"log.no.such.key": "1"},
    {"broker.heartbeat.interval.ms": "soon"},
    {"broker.heartbeat.interval.ms": "0"},
    {"log.flush.policy": "sometimes"},
    {"controller.quorum.bootstrap.servers": "nohost"},
])
def test_bad_values_are_config_errors(raw) -> None:
    with pytest.raises(ConfigError):
        BrokerConfig.from_values(raw)


def test_topic_min_insync_replicas() -> None:
    config = BrokerConfig()
    assert config.topic_min_insync_replicas({}) == 2
    assert config.topic_min_insync_replicas({"min.insync.replicas": "1"}) == 1


def test_parse_endpoint() -> None:
    assert parse_endpoint("localhost:80") == ("localhost", 80)
    for bad in ("80", ":80", "h:", "h:x", "h:70000"):
        with pytest.raises(ConfigError):
            parse_endpoint(bad)
