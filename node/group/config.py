"""Group coordinator configuration: Kafka's broker keys, brokerlab's one-machine defaults.

Defaults differ from Kafka where REFERENCE.md says so: ``group.initial.rebalance.delay.ms`` 100
(Kafka 3000), ``offsets.topic.num.partitions`` 8 (Kafka 50), ``group.min.session.timeout.ms``
500 (Kafka 6000: brokerlab experiments use sessions of a few seconds).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from brokerlab.config import ConfigError, int_key, require_positive

OFFSETS_TOPIC = "__consumer_offsets"

GROUP_KEYS = [
    int_key("group.min.session.timeout.ms", 500, "smallest session.timeout.ms a member may ask for"),
    int_key("group.max.session.timeout.ms", 1_800_000, "largest session.timeout.ms a member may ask for"),
    int_key("group.initial.rebalance.delay.ms", 100,
            "how long a new group's first rebalance waits for more members (extended per joiner)"),
    int_key("group.max.size", 2_147_483_647, "members per group (GROUP_MAX_SIZE_REACHED beyond)"),
    int_key("offsets.topic.num.partitions", 8, "partitions of __consumer_offsets (fixed once created)"),
    int_key("offsets.topic.replication.factor", 3,
            "replication factor of __consumer_offsets; creation waits for this many live brokers"),
    int_key("offsets.commit.timeout.ms", 5000, "how long a group write may wait for the ISR"),
    int_key("offsets.load.buffer.size", 5 * 1024 * 1024, "bytes read per step while loading a partition"),
]
GROUP_KEY_NAMES = frozenset(key.name for key in GROUP_KEYS)


def is_group_key(name: str) -> bool:
    return name in GROUP_KEY_NAMES


@dataclass(frozen=True)
class GroupConfig:
    min_session_timeout_ms: int = 500
    max_session_timeout_ms: int = 1_800_000
    initial_rebalance_delay_ms: int = 100
    max_size: int = 2_147_483_647
    offsets_topic_num_partitions: int = 8
    offsets_topic_replication_factor: int = 3
    offsets_commit_timeout_ms: int = 5000
    offsets_load_buffer_size: int = 5 * 1024 * 1024
    # How many recent generations each group remembers (causes and diffs); not a Kafka key.
    rebalance_history: int = 10

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> "GroupConfig":
        """From resolved ``{key: typed value}`` (other keys are ignored)."""
        defaults = cls()
        config = cls(
            min_session_timeout_ms=values.get("group.min.session.timeout.ms", defaults.min_session_timeout_ms),
            max_session_timeout_ms=values.get("group.max.session.timeout.ms", defaults.max_session_timeout_ms),
            initial_rebalance_delay_ms=values.get("group.initial.rebalance.delay.ms",
                                                  defaults.initial_rebalance_delay_ms),
            max_size=values.get("group.max.size", defaults.max_size),
            offsets_topic_num_partitions=values.get("offsets.topic.num.partitions",
                                                    defaults.offsets_topic_num_partitions),
            offsets_topic_replication_factor=values.get("offsets.topic.replication.factor",
                                                        defaults.offsets_topic_replication_factor),
            offsets_commit_timeout_ms=values.get("offsets.commit.timeout.ms", defaults.offsets_commit_timeout_ms),
            offsets_load_buffer_size=values.get("offsets.load.buffer.size", defaults.offsets_load_buffer_size),
        )
        config.validate()
        return config

    def validate(self) -> None:
        require_positive({
            "group.min.session.timeout.ms": self.min_session_timeout_ms,
            "group.max.size": self.max_size,
            "offsets.topic.num.partitions": self.offsets_topic_num_partitions,
            "offsets.topic.replication.factor": self.offsets_topic_replication_factor,
            "offsets.commit.timeout.ms": self.offsets_commit_timeout_ms,
            "offsets.load.buffer.size": self.offsets_load_buffer_size,
        })
        if self.max_session_timeout_ms < self.min_session_timeout_ms:
            raise ConfigError("group.max.session.timeout.ms must be at least group.min.session.timeout.ms")
        if self.initial_rebalance_delay_ms < 0:
            raise ConfigError("group.initial.rebalance.delay.ms must not be negative")
