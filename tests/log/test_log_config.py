import pytest

from brokerlab.config import ConfigError
from node.log import LogConfig


def test_defaults_follow_the_reference():
    config = LogConfig()
    assert config.segment_bytes == 64 * 1024 * 1024
    assert config.retention_ms == 7 * 24 * 3600 * 1000
    assert config.retention_bytes == -1
    assert config.index_interval_bytes == 4096
    assert config.flush_policy == "none"
    assert config.max_message_bytes == 1024 * 1024 + 12


def test_from_values_parses_broker_keys_as_strings_or_typed_values():
    config = LogConfig.from_values({
        "log.segment.bytes": "1048576",
        "log.roll.ms": 60_000,
        "log.retention.ms": "-1",
        "log.retention.bytes": "5000000",
        "log.index.interval.bytes": "1024",
        "log.flush.policy": "interval",
        "log.flush.interval.ms": "250",
        "message.max.bytes": "2000000",
    })
    assert config == LogConfig(
        segment_bytes=1048576, segment_ms=60_000, retention_ms=-1, retention_bytes=5_000_000,
        index_interval_bytes=1024, flush_policy="interval", flush_interval_ms=250,
        max_message_bytes=2_000_000,
    )


@pytest.mark.parametrize("raw", [
    {"log.segment.byte": "1"},  # a typo
    {"log.flush.policy": "sometimes"},
    {"log.segment.bytes": "lots"},
    {"log.segment.bytes": "10"},  # below Kafka's floor of 14
    {"log.retention.ms": "-2"},
])
def test_from_values_rejects_unknown_keys_and_bad_values(raw):
    with pytest.raises(ConfigError):
        LogConfig.from_values(raw)


def test_topic_overrides_apply_topic_keys():
    base = LogConfig()
    config = base.with_topic_overrides({
        "segment.bytes": "2048", "segment.ms": "100", "retention.ms": "5000", "retention.bytes": "-1",
        "max.message.bytes": "4096", "flush.policy": "batch", "flush.ms": "10", "index.interval.bytes": "0",
        # Topic keys that belong to replication, not to the log, are accepted and ignored.
        "min.insync.replicas": "2", "unclean.leader.election.enable": "false",
    })
    assert (config.segment_bytes, config.segment_ms, config.retention_ms, config.max_message_bytes) == (2048, 100, 5000, 4096)
    assert (config.flush_policy, config.flush_interval_ms, config.index_interval_bytes) == ("batch", 10, 0)
    assert base.with_topic_overrides({}) is base


@pytest.mark.parametrize("configs", [
    {"cleanup.policy": "compact"},
    {"segment.bytes": "abc"},
    {"flush.policy": "always"},
    {"segment.bytes": "1"},
])
def test_topic_overrides_reject_unknown_keys_and_bad_values(configs):
    with pytest.raises(ValueError):
        LogConfig().with_topic_overrides(configs)


def test_huge_segment_bytes_override_is_capped_to_32_bit_positions():
    assert LogConfig().with_topic_overrides({"segment.bytes": str(1 << 40)}).segment_bytes == (1 << 31) - 1
