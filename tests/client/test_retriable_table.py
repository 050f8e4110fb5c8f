"""The client's retriable/fatal split against the table in shared/REFERENCE.md (Kafka's classes)."""

from __future__ import annotations

from brokerlab.errors import REFRESH_METADATA, ErrorCode, is_retriable

# REFERENCE.md "Error codes": retriable.
REFERENCE_RETRIABLE = [2, 3, 5, 6, 7, 13, 14, 15, 16, 19, 20, 41, 56, 74, 75, 89]
# REFERENCE.md "Error codes": not retriable.
REFERENCE_FATAL = [-1, 1, 10, 17, 18, 21, 22, 25, 27, 26, 36, 37, 38, 39, 42, 45, 46, 59, 90]
# Kafka's InvalidMetadataException family (plus a lost connection): refresh metadata first.
LEADER_MOVED = [ErrorCode.NOT_LEADER_OR_FOLLOWER, ErrorCode.FENCED_LEADER_EPOCH, ErrorCode.UNKNOWN_LEADER_EPOCH,
                ErrorCode.LEADER_NOT_AVAILABLE, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, ErrorCode.NETWORK_EXCEPTION,
                ErrorCode.KAFKA_STORAGE_ERROR]


def test_every_retriable_code_of_the_reference_is_retriable() -> None:
    assert [code for code in REFERENCE_RETRIABLE if not is_retriable(code)] == []


def test_every_fatal_code_of_the_reference_is_not_retriable() -> None:
    assert [code for code in REFERENCE_FATAL if is_retriable(code)] == []


def test_leader_errors_ask_for_a_metadata_refresh_and_replica_shortage_does_not() -> None:
    assert set(LEADER_MOVED) <= REFRESH_METADATA
    assert ErrorCode.NOT_ENOUGH_REPLICAS not in REFRESH_METADATA
    assert ErrorCode.NOT_ENOUGH_REPLICAS_AFTER_APPEND not in REFRESH_METADATA
