"""Controller configuration: Kafka's key names, brokerlab's failover-friendly defaults.

===========================================  =========  =====  =============================================
key                                          brokerlab  Kafka  what it does here
===========================================  =========  =====  =============================================
``broker.session.timeout.ms``                750        9000   a broker silent this long is fenced
``broker.heartbeat.interval.ms``             100        2000   informational (brokers read their own)
``num.partitions``                           1          1      partitions of a topic created with -1
``default.replication.factor``               3          1      replication factor of a topic created with -1
``min.insync.replicas``                      2          1      cluster default; topics may override it
``unclean.leader.election.enable``           false      false  cluster default; topics may override it
``auto.leader.rebalance.enable``             true       true   move leaders back to preferred replicas
``leader.imbalance.check.interval.seconds``  15         300    how often the rebalance looks
``leader.imbalance.per.broker.percentage``   10         10     a broker's ratio above which it acts
===========================================  =========  =====  =============================================

Shorter timings than Kafka's are the fast-failover defaults of ../shared/REFERENCE.md (one
machine, heartbeats in the low hundreds of ms, sessions below a second or two). The session is
750 ms so that a killed leader's successor acknowledges acks=all within 1 s: detection is the
session timeout, election and the first acknowledgement take the rest (~50-100 ms).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from brokerlab.config import ConfigError, bool_key, int_key, resolve

CONTROLLER_KEYS = (
    int_key("broker.session.timeout.ms", 750, "a broker silent this long is fenced"),
    int_key("broker.heartbeat.interval.ms", 100, "how often brokers heartbeat (informational here)"),
    int_key("num.partitions", 1, "partitions of a topic created with num_partitions=-1"),
    int_key("default.replication.factor", 3, "replication factor of a topic created with -1"),
    int_key("min.insync.replicas", 2, "cluster default; topics may override it"),
    bool_key("unclean.leader.election.enable", False, "elect an out-of-sync replica when no ISR member lives"),
    bool_key("auto.leader.rebalance.enable", True, "move leaderships back to preferred replicas when imbalanced"),
    int_key("leader.imbalance.check.interval.seconds", 15, "how often the automatic leader rebalance looks"),
    int_key("leader.imbalance.per.broker.percentage", 10, "a broker's share of not-led preferred partitions that triggers it"),
)


@dataclass(frozen=True)
class ControllerConfig:
    session_timeout_ms: int = 750
    heartbeat_interval_ms: int = 100
    num_partitions: int = 1
    default_replication_factor: int = 3
    min_insync_replicas: int = 2
    unclean_leader_election_enable: bool = False
    auto_leader_rebalance_enable: bool = True
    leader_imbalance_check_interval_seconds: int = 15
    leader_imbalance_per_broker_percentage: int = 10
    # Not Kafka keys: who this controller is, for DescribeCluster (set by __main__ from its flags).
    node_id: int = 0
    endpoint_host: str = ""
    endpoint_port: int = 0

    @property
    def leader_imbalance_check_interval_ms(self) -> int:
        return self.leader_imbalance_check_interval_seconds * 1000

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
            auto_leader_rebalance_enable=values["auto.leader.rebalance.enable"],
            leader_imbalance_check_interval_seconds=values["leader.imbalance.check.interval.seconds"],
            leader_imbalance_per_broker_percentage=values["leader.imbalance.per.broker.percentage"],
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
            ("leader.imbalance.check.interval.seconds", self.leader_imbalance_check_interval_seconds, 1),
            ("leader.imbalance.per.broker.percentage", self.leader_imbalance_per_broker_percentage, 0),
        ]
        for name, value, minimum in checks:
            if value < minimum:
                raise ConfigError(f"{name}: must be at least {minimum}, got {value}")
        if self.leader_imbalance_per_broker_percentage > 100:
            raise ConfigError(
                f"leader.imbalance.per.broker.percentage: must be at most 100, got {self.leader_imbalance_per_broker_percentage}"
            )
