"""Storage configuration: broker-level ``log.*`` keys with topic-level overrides (Kafka's names).

``LogConfig.from_values`` takes the broker's storage keys (``log.segment.bytes``,
``message.max.bytes``...); ``with_topic_overrides`` applies a topic's own keys
(``segment.bytes``, ``retention.ms``...). Unknown keys are an error, so a typo never silently
falls back to a default.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

from brokerlab.config import ConfigError, choice_key, int_key, resolve

FLUSH_POLICIES = ("none", "batch", "interval")
DAY_MS = 24 * 3600 * 1000
# Kafka's floor for segment.bytes (its record overhead); positions in the index are 32-bit.
MIN_SEGMENT_BYTES = 14
MAX_SEGMENT_BYTES = (1 << 31) - 1


@dataclass(frozen=True)
class LogConfig:
    segment_bytes: int = 64 * 1024 * 1024
    segment_ms: int = 7 * DAY_MS
    retention_ms: int = 7 * DAY_MS  # -1 = keep forever
    retention_bytes: int = -1  # negative = no size limit
    index_interval_bytes: int = 4096
    flush_policy: str = "none"  # none | batch | interval
    flush_interval_ms: int = 1000
    max_message_bytes: int = 1024 * 1024 + 12  # per batch (Kafka's message.max.bytes)
    # Housekeeping periods (Kafka's log.retention.check.interval.ms,
    # log.flush.offset.checkpoint.interval.ms, replica.high.watermark.checkpoint.interval.ms).
    retention_check_interval_ms: int = 300_000
    checkpoint_interval_ms: int = 60_000
    high_watermark_checkpoint_interval_ms: int = 5_000

    def __post_init__(self) -> None:
        if not MIN_SEGMENT_BYTES <= self.segment_bytes <= MAX_SEGMENT_BYTES:
            raise ValueError(
                f"segment.bytes must be in [{MIN_SEGMENT_BYTES}, {MAX_SEGMENT_BYTES}], got {self.segment_bytes}"
            )
        if self.segment_ms < 1:
            raise ValueError(f"segment.ms must be at least 1, got {self.segment_ms}")
        if self.retention_ms < -1:
            raise ValueError(f"retention.ms must be -1 or more, got {self.retention_ms}")
        if self.index_interval_bytes < 0:
            raise ValueError(f"index.interval.bytes must not be negative, got {self.index_interval_bytes}")
        if self.flush_policy not in FLUSH_POLICIES:
            raise ValueError(f"flush policy must be one of {', '.join(FLUSH_POLICIES)}, got {self.flush_policy!r}")
        if self.flush_interval_ms < 0:
            raise ValueError(f"flush interval must not be negative, got {self.flush_interval_ms}")
        if self.max_message_bytes < 0:
            raise ValueError(f"max message bytes must not be negative, got {self.max_message_bytes}")
        for name in ("retention_check_interval_ms", "checkpoint_interval_ms", "high_watermark_checkpoint_interval_ms"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> "LogConfig":
        """From broker keys (strings are parsed, typed values taken as they are).

        Raises ConfigError (a ValueError) for an unknown key or a bad value.
        """
        resolved = resolve(BROKER_LOG_KEYS, values)
        fields = {_BROKER_FIELDS[name]: value for name, value in resolved.items()}
        try:
            return cls(**fields)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None

    def with_topic_overrides(self, configs: Mapping[str, str]) -> "LogConfig":
        """This config with a topic's overrides applied; unknown keys or bad values -> ValueError."""
        changes: dict[str, Any] = {}
        for name, raw in configs.items():
            if name in IGNORED_TOPIC_KEYS:
                continue
            field_name = TOPIC_FIELDS.get(name)
            if field_name is None:
                raise ValueError(f"unknown topic config {name!r}")
            text = str(raw).strip()
            if field_name == "flush_policy":
                value: Any = text
            else:
                try:
                    value = int(text)
                except ValueError:
                    raise ValueError(f"{name}: not an integer: {raw!r}") from None
            if field_name == "segment_bytes":
                # Positions are 32-bit; Kafka's segment.bytes is an int, so cap rather than fail.
                value = min(value, MAX_SEGMENT_BYTES)
            changes[field_name] = value
        if not changes:
            return self
        try:
            return dataclasses.replace(self, **changes)
        except ValueError as exc:
            raise ValueError(f"invalid topic config: {exc}") from None


_DEFAULTS = LogConfig()

# Broker-level keys -> LogConfig fields.
BROKER_LOG_KEYS = [
    int_key("log.segment.bytes", _DEFAULTS.segment_bytes, "roll a segment at this size"),
    int_key("log.roll.ms", _DEFAULTS.segment_ms, "roll a segment this long after its first append"),
    int_key("log.retention.ms", _DEFAULTS.retention_ms, "delete segments older than this (-1 = never)"),
    int_key("log.retention.bytes", _DEFAULTS.retention_bytes, "delete old segments beyond this size (-1 = never)"),
    int_key("log.index.interval.bytes", _DEFAULTS.index_interval_bytes, "bytes between offset index entries"),
    choice_key("log.flush.policy", _DEFAULTS.flush_policy, FLUSH_POLICIES,
               "none: never fsync on append (durability from replication); batch: fsync every append; "
               "interval: fsync every log.flush.interval.ms"),
    int_key("log.flush.interval.ms", _DEFAULTS.flush_interval_ms, "fsync period for log.flush.policy=interval"),
    int_key("message.max.bytes", _DEFAULTS.max_message_bytes, "largest batch a producer may send"),
    int_key("log.retention.check.interval.ms", _DEFAULTS.retention_check_interval_ms, "how often retention runs"),
    int_key("log.flush.offset.checkpoint.interval.ms", _DEFAULTS.checkpoint_interval_ms,
            "how often recovery points and log start offsets are checkpointed"),
    int_key("replica.high.watermark.checkpoint.interval.ms", _DEFAULTS.high_watermark_checkpoint_interval_ms,
            "how often high watermarks are checkpointed"),
]
_BROKER_FIELDS = {
    "log.segment.bytes": "segment_bytes",
    "log.roll.ms": "segment_ms",
    "log.retention.ms": "retention_ms",
    "log.retention.bytes": "retention_bytes",
    "log.index.interval.bytes": "index_interval_bytes",
    "log.flush.policy": "flush_policy",
    "log.flush.interval.ms": "flush_interval_ms",
    "message.max.bytes": "max_message_bytes",
    "log.retention.check.interval.ms": "retention_check_interval_ms",
    "log.flush.offset.checkpoint.interval.ms": "checkpoint_interval_ms",
    "replica.high.watermark.checkpoint.interval.ms": "high_watermark_checkpoint_interval_ms",
}

# Topic-level keys -> LogConfig fields (flush.policy is brokerlab's; Kafka has flush.messages).
TOPIC_FIELDS = {
    "segment.bytes": "segment_bytes",
    "segment.ms": "segment_ms",
    "retention.ms": "retention_ms",
    "retention.bytes": "retention_bytes",
    "index.interval.bytes": "index_interval_bytes",
    "max.message.bytes": "max_message_bytes",
    "flush.policy": "flush_policy",
    "flush.ms": "flush_interval_ms",
}
# Topic keys that are real but not the log's business (the broker's replication reads them).
IGNORED_TOPIC_KEYS = frozenset({"min.insync.replicas", "unclean.leader.election.enable"})
