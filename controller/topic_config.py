"""The topic-level configuration keys a topic may override, checked the way Kafka checks them.

Unknown keys and bad values are INVALID_CONFIG. Values are normalised (``"TRUE"`` -> ``"true"``,
``" 100"`` -> ``"100"``) before they go into the TopicRecord, so brokers parse one spelling.
"""

from __future__ import annotations

from typing import Callable, Iterable

from brokerlab.errors import ErrorCode, KafkaError

INT_MAX = (1 << 31) - 1
LONG_MAX = (1 << 63) - 1


def _integer(minimum: int | None, maximum: int = LONG_MAX) -> Callable[[str], str]:
    """Kafka's INT (maximum INT_MAX) or LONG config type with an optional lower bound."""

    def parse(text: str) -> str:
        try:
            value = int(text.strip())
        except ValueError:
            raise ValueError("Value must be an integer") from None
        if minimum is not None and value < minimum:
            raise ValueError(f"Value must be at least {minimum}")
        if value > maximum or value < -maximum - 1:
            raise ValueError(f"Value must be at most {maximum}")
        return str(value)

    return parse


def _boolean(text: str) -> str:
    lowered = text.strip().lower()
    if lowered not in ("true", "false"):
        raise ValueError("Expected value to be either true or false")
    return lowered


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        value = text.strip()
        if value not in choices:
            raise ValueError(f"String must be one of: {', '.join(choices)}")
        return value

    return parse


# Kafka's topic keys and minimums (segment.bytes >= 14 is Kafka's record-overhead floor), plus
# brokerlab's flush.policy (none|batch|interval), which Kafka spells with flush.messages/flush.ms.
TOPIC_CONFIG_KEYS: dict[str, Callable[[str], str]] = {
    "segment.bytes": _integer(14, INT_MAX),
    "segment.ms": _integer(1),
    "retention.ms": _integer(-1),
    "retention.bytes": _integer(None),
    "max.message.bytes": _integer(0, INT_MAX),
    "index.interval.bytes": _integer(0, INT_MAX),
    "flush.policy": _choice("none", "batch", "interval"),
    "flush.ms": _integer(0),
    "min.insync.replicas": _integer(1, INT_MAX),
    "unclean.leader.election.enable": _boolean,
}


def validate_topic_configs(configs: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Normalised ``{name: value}``; raises KafkaError(INVALID_CONFIG) on the first problem."""
    out: dict[str, str] = {}
    for name, value in configs:
        parse = TOPIC_CONFIG_KEYS.get(name)
        if parse is None:
            raise KafkaError(ErrorCode.INVALID_CONFIG, f"Unknown topic config name: {name}")
        if name in out:
            raise KafkaError(ErrorCode.INVALID_CONFIG, f"Duplicate topic config name: {name}")
        try:
            out[name] = parse(value)
        except ValueError as exc:
            raise KafkaError(ErrorCode.INVALID_CONFIG, f"Invalid value {value} for configuration {name}: {exc}") from None
    return out
