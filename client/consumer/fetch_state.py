"""The consumer's per-partition fetch state (sans-IO): settings, states and their transitions.

Kafka's ``SubscriptionState`` for manually assigned partitions. Used by ``fetcher.FetchCore``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Callable

from brokerlab.errors import KafkaError
from brokerlab.ids import TopicPartition
from brokerlab.sansio import Random

AUTO_OFFSET_RESET_CHOICES = ("earliest", "latest", "none")


@dataclass(frozen=True)
class FetchConfig:
    """Kafka's consumer fetch settings (same names and defaults)."""

    auto_offset_reset: str = "latest"
    fetch_min_bytes: int = 1
    fetch_max_wait_ms: int = 500
    fetch_max_bytes: int = 50 * 1024 * 1024
    max_partition_fetch_bytes: int = 1024 * 1024
    retry_backoff_ms: int = 100
    retry_backoff_max_ms: int = 1000
    check_crcs: bool = True
    key_deserializer: Callable[[Any], Any] | None = None
    value_deserializer: Callable[[Any], Any] | None = None

    def __post_init__(self) -> None:
        if self.auto_offset_reset not in AUTO_OFFSET_RESET_CHOICES:
            raise ValueError(
                f"auto.offset.reset must be one of {', '.join(AUTO_OFFSET_RESET_CHOICES)}, "
                f"not {self.auto_offset_reset!r}"
            )
        for name in ("fetch_max_bytes", "max_partition_fetch_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.fetch_min_bytes < 0 or self.fetch_max_wait_ms < 0 or self.retry_backoff_ms < 0:
            raise ValueError("fetch_min_bytes, fetch_max_wait_ms and retry_backoff_ms must not be negative")

    def backoff_ms(self, failures: int, random: Random | None) -> int:
        """Kafka's exponential backoff (KIP-580): base * 2^(failures-1), capped, +-20 % jitter."""
        backoff = self.retry_backoff_ms * (1 << min(max(failures - 1, 0), 30))
        backoff = min(backoff, max(self.retry_backoff_max_ms, self.retry_backoff_ms))
        if random is not None and backoff > 0:
            backoff = int(backoff * (0.8 + 0.4 * random.random()))
        return backoff


class FetchState(enum.Enum):
    """Where a partition stands.

    - AWAITING_RESET: no usable position; a ListOffsets (earliest or latest) will set one.
    - FETCHING: has a position; fetched from its leader whenever buffer room allows.
    - AWAITING_VALIDATION: the leader epoch changed since the position was fetched; an
      OffsetForLeaderEpoch to the new leader checks that the log still holds the position, and
      moves it back to where the logs diverge if not (Kafka's KIP-320). Nothing is fetched.
    - FAILED: OFFSET_OUT_OF_RANGE (or no position, or a detected truncation) with
      auto.offset.reset=none; poll raises until the application seeks.
    """

    AWAITING_RESET = "awaiting_reset"
    FETCHING = "fetching"
    AWAITING_VALIDATION = "awaiting_validation"
    FAILED = "failed"


# (from, to) pairs that may happen; anything else is a bug.
TRANSITIONS = {
    (FetchState.AWAITING_RESET, FetchState.FETCHING),  # ListOffsets answered, or seek
    (FetchState.AWAITING_RESET, FetchState.AWAITING_RESET),  # seek_to_* again
    (FetchState.FETCHING, FetchState.FETCHING),  # seek
    (FetchState.FETCHING, FetchState.AWAITING_RESET),  # out of range with a reset policy, seek_to_*
    (FetchState.FETCHING, FetchState.FAILED),  # out of range with auto.offset.reset=none
    (FetchState.FETCHING, FetchState.AWAITING_VALIDATION),  # the leader epoch moved on
    (FetchState.AWAITING_VALIDATION, FetchState.FETCHING),  # position checked (or moved back), or seek
    (FetchState.AWAITING_VALIDATION, FetchState.AWAITING_VALIDATION),  # another leader change
    (FetchState.AWAITING_VALIDATION, FetchState.AWAITING_RESET),  # seek_to_*, or no epoch to compare
    (FetchState.AWAITING_VALIDATION, FetchState.FAILED),  # truncation with auto.offset.reset=none
    (FetchState.FAILED, FetchState.FETCHING),  # seek
    (FetchState.FAILED, FetchState.AWAITING_RESET),  # seek_to_*
}


class PartitionState:
    """One assigned partition: its position, what is buffered or in flight, and its backoff."""

    __slots__ = (
        "tp", "state", "position", "fetch_offset", "reset_strategy", "generation", "error",
        "buffered_bytes", "backoff_until_ms", "metadata_needed", "in_flight",
        "high_watermark", "log_start_offset", "failures", "awaiting_leader_change",
        "failed_leader_epoch", "position_epoch", "leader_epoch", "request_epoch",
    )  # fmt: skip

    def __init__(self, tp: TopicPartition) -> None:
        self.tp = tp
        self.state = FetchState.AWAITING_RESET
        self.position: int | None = None
        self.fetch_offset: int | None = None
        self.reset_strategy: str | None = None
        self.generation = 0
        self.error: KafkaError | None = None
        self.buffered_bytes = 0
        self.backoff_until_ms = 0
        self.metadata_needed = 0  # fetch again only once metadata.update_count reaches this
        self.in_flight = False  # part of an outstanding Fetch, ListOffsets or OffsetForLeaderEpoch
        self.high_watermark = -1
        self.log_start_offset = -1
        self.failures = 0  # consecutive failed requests: the exponent of the backoff
        # Backing off after a leader error: a newer leader epoch in metadata ends the backoff.
        self.awaiting_leader_change = False
        self.failed_leader_epoch = -1
        # The leader epoch of the record before `position` (-1 unknown: nothing to validate).
        self.position_epoch = -1
        # The leader epoch (from metadata) the position was last fetched or validated under.
        self.leader_epoch = -1
        # The current_leader_epoch of the last request sent for this partition.
        self.request_epoch = -1

    def move_to(self, state: FetchState, generation: int) -> None:
        if (self.state, state) not in TRANSITIONS:
            raise AssertionError(f"{self.tp}: no transition {self.state.name} -> {state.name}")
        self.state = state
        self.generation = generation  # whatever is buffered or in flight belongs to the old one
        self.buffered_bytes = 0
        self.error = None
        self.backoff_until_ms = 0
        self.failures = 0
        self.awaiting_leader_change = False
