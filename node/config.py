"""Broker configuration: Kafka's key names and (failover-friendly) defaults.

``BrokerConfig.from_values(raw)`` takes the merged ``key -> string`` pairs of a properties file
and ``--config`` flags. Storage keys (``log.*`` and ``message.max.bytes``) go to
``LogConfig.from_values``; the rest are the broker's own. Unknown keys are an error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from brokerlab.config import ConfigError, bool_key, int_key, require_positive, resolve, str_key
from node.group.config import GROUP_KEYS, GroupConfig
from node.log.config import BROKER_LOG_KEYS, LogConfig

# Keys the broker core reads. Defaults follow ../shared/REFERENCE.md ("brokerlab default").
BROKER_KEYS = [
    int_key("broker.id", -1, "this broker's id (the --broker-id flag sets it)"),
    str_key("controller.quorum.bootstrap.servers", "", "host:port of the controller (--controller)"),
    str_key("log.dirs", "", "the data directory, as shown by DescribeLogDirs (--data-dir)"),
    int_key("broker.heartbeat.interval.ms", 100, "how often the broker heartbeats the controller"),
    int_key(
        "broker.session.timeout.ms",
        750,
        "the controller fences a broker silent this long; the broker gives a heartbeat call a "
        "third of it (node/call_timeouts.py) before treating it as failed",
    ),
    int_key("metadata.fetch.max.wait.ms", 1000, "long-poll wait of FetchMetadataRecords"),
    int_key("metadata.fetch.max.records", 1000, "records per FetchMetadataRecords answer"),
    int_key("controller.quorum.request.timeout.ms", 2000, "timeout of a unary call to the controller"),
    int_key("retry.backoff.ms", 100, "first back-off after a failed registration or metadata fetch"),
    int_key("retry.backoff.max.ms", 1000, "longest back-off (doubling from retry.backoff.ms)"),
    int_key("min.insync.replicas", 2, "acks=all needs at least this many replicas in the ISR"),
    int_key("num.partitions", 1, "informational: the controller's default partition count"),
    int_key("default.replication.factor", 3, "informational: the controller's default"),
    int_key("replica.fetch.wait.max.ms", 500, "follower fetch long-poll wait"),
    int_key("replica.fetch.max.bytes", 1024 * 1024, "follower fetch size per partition"),
    int_key(
        "replica.fetch.backoff.ms",
        20,
        "first back-off after a failed follower fetch or OffsetForLeaderEpoch (doubling up to "
        "retry.backoff.max.ms); Kafka's default is 1000, brokerlab's is short for fast failover",
    ),
    int_key(
        "replica.lag.time.max.ms",
        3000,
        "a follower not caught up with the leader's log end for this long leaves the ISR",
    ),
    bool_key("controlled.shutdown.enable", True, "on SIGTERM, hand leadership over before stopping"),
    int_key(
        "controlled.shutdown.timeout.ms",
        5000,
        "longest wait for the controller to grant a controlled shutdown before stopping anyway",
    ),
    *GROUP_KEYS,
    int_key(
        "test.produce.response.delay.ms",
        0,
        "TEST FAULT KNOB (0 = off): hold back answers to clients' Produce this long after the append, "
        "so producers time out and retry (node/response_delay.py)",
    ),
    int_key("test.produce.response.delay.every", 1, "TEST FAULT KNOB: delay every N-th Produce answer (1 = all)"),
]

# Storage keys handed to LogConfig.from_values (log.segment.bytes, message.max.bytes, ...).
LOG_KEY_NAMES = frozenset(key.name for key in BROKER_LOG_KEYS)

# Topic-level keys the broker itself uses; the rest of a topic's configs go to the log.
TOPIC_BROKER_KEYS = frozenset({"min.insync.replicas", "unclean.leader.election.enable"})


def is_log_key(name: str) -> bool:
    return name in LOG_KEY_NAMES


def parse_endpoint(text: str, allow_any_port: bool = False) -> tuple[str, int]:
    """``"host:port"`` -> ``(host, port)``; raises ConfigError. Port 0 only if ``allow_any_port``."""
    host, sep, port = text.strip().rpartition(":")
    lowest = 0 if allow_any_port else 1
    if not sep or not host or not port.isdigit() or not lowest <= int(port) < 65536:
        raise ConfigError(f"expected host:port, got {text!r}")
    return host, int(port)


@dataclass(frozen=True)
class BrokerConfig:
    broker_id: int = 1
    controller_endpoint: tuple[str, int] | None = None
    log_dirs: str = ""
    heartbeat_interval_ms: int = 100
    session_timeout_ms: int = 750
    metadata_fetch_max_wait_ms: int = 1000
    metadata_fetch_max_records: int = 1000
    controller_request_timeout_ms: int = 2000
    retry_backoff_ms: int = 100
    retry_backoff_max_ms: int = 1000
    min_insync_replicas: int = 2
    num_partitions: int = 1
    default_replication_factor: int = 3
    replica_fetch_wait_max_ms: int = 500
    replica_fetch_max_bytes: int = 1024 * 1024
    replica_lag_time_max_ms: int = 3000
    replica_fetch_backoff_ms: int = 20
    controlled_shutdown_enable: bool = True
    controlled_shutdown_timeout_ms: int = 5000
    log_config: LogConfig = field(default_factory=LogConfig)
    # Consumer groups (group.*, offsets.topic.*: node/group/config.py).
    group_config: GroupConfig = field(default_factory=GroupConfig)
    # Advertised endpoint of the optional external listener (--advertised-external-listener):
    # registered with the controller so every broker can answer outside clients (docker-compose).
    external_endpoint: tuple[str, int] | None = None
    # Test-only fault knob (node/response_delay.py): slow Produce answers; 0 = off.
    test_produce_response_delay_ms: int = 0
    test_produce_response_delay_every: int = 1

    @classmethod
    def from_values(cls, raw: Mapping[str, Any]) -> "BrokerConfig":
        log_raw = {k: v for k, v in raw.items() if is_log_key(k)}
        values = resolve(BROKER_KEYS, {k: v for k, v in raw.items() if not is_log_key(k)})
        log_config = LogConfig.from_values(log_raw)  # raises ConfigError
        controller = values["controller.quorum.bootstrap.servers"]
        config = cls(
            broker_id=values["broker.id"],
            controller_endpoint=parse_endpoint(controller) if controller else None,
            log_dirs=values["log.dirs"],
            heartbeat_interval_ms=values["broker.heartbeat.interval.ms"],
            session_timeout_ms=values["broker.session.timeout.ms"],
            metadata_fetch_max_wait_ms=values["metadata.fetch.max.wait.ms"],
            metadata_fetch_max_records=values["metadata.fetch.max.records"],
            controller_request_timeout_ms=values["controller.quorum.request.timeout.ms"],
            retry_backoff_ms=values["retry.backoff.ms"],
            retry_backoff_max_ms=values["retry.backoff.max.ms"],
            min_insync_replicas=values["min.insync.replicas"],
            num_partitions=values["num.partitions"],
            default_replication_factor=values["default.replication.factor"],
            replica_fetch_wait_max_ms=values["replica.fetch.wait.max.ms"],
            replica_fetch_max_bytes=values["replica.fetch.max.bytes"],
            replica_lag_time_max_ms=values["replica.lag.time.max.ms"],
            replica_fetch_backoff_ms=values["replica.fetch.backoff.ms"],
            controlled_shutdown_enable=values["controlled.shutdown.enable"],
            controlled_shutdown_timeout_ms=values["controlled.shutdown.timeout.ms"],
            log_config=log_config,
            group_config=GroupConfig.from_values(values),
            test_produce_response_delay_ms=values["test.produce.response.delay.ms"],
            test_produce_response_delay_every=values["test.produce.response.delay.every"],
        )
        config.validate()
        return config

    def validate(self) -> None:
        require_positive({
            "broker.heartbeat.interval.ms": self.heartbeat_interval_ms,
            "broker.session.timeout.ms": self.session_timeout_ms,
            "controller.quorum.request.timeout.ms": self.controller_request_timeout_ms,
            "retry.backoff.ms": self.retry_backoff_ms,
            "metadata.fetch.max.records": self.metadata_fetch_max_records,
            "min.insync.replicas": self.min_insync_replicas,
            "replica.fetch.backoff.ms": self.replica_fetch_backoff_ms,
            "replica.lag.time.max.ms": self.replica_lag_time_max_ms,
            "replica.fetch.max.bytes": self.replica_fetch_max_bytes,
        })
        if self.replica_fetch_wait_max_ms < 0 or self.controlled_shutdown_timeout_ms < 0:
            raise ConfigError("replica.fetch.wait.max.ms and controlled.shutdown.timeout.ms must not be negative")
        if self.metadata_fetch_max_wait_ms < 0:
            raise ConfigError("metadata.fetch.max.wait.ms must not be negative")
        if self.retry_backoff_max_ms < self.retry_backoff_ms:
            raise ConfigError("retry.backoff.max.ms must be at least retry.backoff.ms")

    def topic_min_insync_replicas(self, topic_configs: Mapping[str, str]) -> int:
        """``min.insync.replicas`` of a topic: its own override, else the broker's."""
        value = topic_configs.get("min.insync.replicas")
        try:
            return int(value) if value is not None else self.min_insync_replicas
        except ValueError:
            return self.min_insync_replicas


def log_topic_configs(topic_configs: Mapping[str, str]) -> dict[str, str]:
    """The part of a topic's configs that belongs to its log (LogConfig.with_topic_overrides)."""
    return {k: v for k, v in topic_configs.items() if k not in TOPIC_BROKER_KEYS}
