"""Controller configuration: Kafka's key names, brokerlab's failover-friendly defaults.

Defaults differ from Kafka where REFERENCE.md says so (fast failover on one machine):
``broker.session.timeout.ms`` 1000 (Kafka 9000), ``default.replication.factor`` 3 (Kafka 1),
``min.insync.replicas`` 2 (Kafka 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from brokerlab.config import ConfigError, bool_key, int_key, resolve

CONTROLLER_KEYS = (
    int_key("broker.session.timeout.ms", 1000, "a broker silent this long is fenced"),
    int_key("broker.heartbeat.interval.ms", 200, "how often brokers heartbeat (informational here)"),
    int_key("num.partitions", 1, "partitions of a topic created with num_partitions=-1"),
    int_key("default.replication.factor", 3, "replication factor of a topic created with -1"),
    int_key("min.insync.replicas", 2, "cluster default; topics may override it"),
    bool_key("unclean.leader.election.enable", False, "elect an out-of-sync replica when no ISR member lives"),
)


@dataclass(frozen=True)
class ControllerConfig:
    session_timeout_ms: int = 1000
    heartbeat_interval_ms: int = 200
    num_partitions: int = 1
    default_replication_factor: int = 3
    min_insync_replicas: int = 2
    unclean_leader_election_enable: bool = False
    # Not Kafka keys: who this controller is, for DescribeCluster (set by __main__ from its flags).
    node_id: int = 0
    endpoint_host: str = ""
    endpoint_port: int = 0

    @classmethod
    def from_values(cls, raw: Mapping[str, Any], node_id: int = 0, endpoint: tuple[str, int] = ("", 0)) -> "ControllerConfig":
        """Typed config from Kafka keys (strings from files/flags, or typed values); ConfigError if invalid."""
        values = resolve(CONTROLLER_KEYS, raw)
        config = cls(
            session_timeout_ms=values["broker.session.timeout.ms"],
            heartbeat_interval_ms=values["broker.heartbeat.interval.ms"],
            num_partitions=values["num.partitions"],
            default_replication_factor=values["default.replication.factor"],
            min_insync_replicas=values["min.insync.replicas"],
            unclean_leader_election_enable=values["unclean.leader.election.enable"],
            node_id=node_id,
            endpoint_host=endpoint[0],
            endpoint_port=endpoint[1],
        )
        config.validate()
        return config

    def validate(self) -> None:
        checks = [
            ("broker.session.timeout.ms", self.session_timeout_ms, 1),
            ("broker.heartbeat.interval.ms", self.heartbeat_interval_ms, 1),
            ("num.partitions", self.num_partitions, 1),
            ("default.replication.factor", self.default_replication_factor, 1),
            ("min.insync.replicas", self.min_insync_replicas, 1),
        ]
        for name, value, minimum in checks:
            if value < minimum:
                raise ConfigError(f"{name}: must be at least {minimum}, got {value}")
