"""The leader epoch cache: which leader epoch started at which offset (Kafka's
LeaderEpochFileCache, KIP-101).

A follower asks the leader for the end offset of its latest epoch and truncates to it, instead of
blindly truncating to the high watermark. Entries are ``(epoch, start_offset)``, both strictly
increasing. Every change is handed to ``on_change`` (the partition log writes
``leader-epoch-checkpoint`` with it), so the file never lags what the log relies on.
"""

from __future__ import annotations

import bisect
from typing import Callable, Iterable, NamedTuple

UNDEFINED_EPOCH = -1
UNDEFINED_EPOCH_OFFSET = -1


class EpochEntry(NamedTuple):
    epoch: int
    start_offset: int


class LeaderEpochCache:
    def __init__(
        self,
        entries: Iterable[tuple[int, int]] = (),
        log_end_offset: Callable[[], int] = lambda: 0,
        on_change: Callable[[list[EpochEntry]], None] | None = None,
    ) -> None:
        self._entries = [EpochEntry(epoch, start) for epoch, start in entries]
        self._log_end_offset = log_end_offset
        self.on_change = on_change

    @property
    def entries(self) -> list[EpochEntry]:
        return list(self._entries)

    @property
    def latest_epoch(self) -> int:
        """The newest epoch, or -1 (UNDEFINED_EPOCH) when the cache is empty."""
        return self._entries[-1].epoch if self._entries else UNDEFINED_EPOCH

    @property
    def latest_entry(self) -> EpochEntry | None:
        return self._entries[-1] if self._entries else None

    @property
    def earliest_entry(self) -> EpochEntry | None:
        return self._entries[0] if self._entries else None

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change(self.entries)

    def assign(self, epoch: int, start_offset: int) -> bool:
        """Record that ``epoch`` starts at ``start_offset``; True if the cache changed.

        As Kafka: a no-op when ``epoch`` is already the latest one starting at or before
        ``start_offset``; otherwise entries that would break monotonicity (epoch >= ``epoch``
        or start offset >= ``start_offset``) are dropped first.
        """
        if epoch < 0 or start_offset < 0:
            raise ValueError(f"epoch {epoch} and start offset {start_offset} must not be negative")
        latest = self.latest_entry
        if latest is not None and latest.epoch == epoch and start_offset >= latest.start_offset:
            return False
        while self._entries and (
            self._entries[-1].epoch >= epoch or self._entries[-1].start_offset >= start_offset
        ):
            self._entries.pop()
        self._entries.append(EpochEntry(epoch, start_offset))
        self._changed()
        return True

    def end_offset_for(self, epoch: int) -> tuple[int, int]:
        """``(epoch, end_offset)`` for a follower's OffsetForLeaderEpoch question (Kafka's rules).

        The latest epoch ends at the log end offset; an older one ends where the next higher
        epoch starts, answered with the largest known epoch <= the one asked; an epoch below every
        known one gets ``(epoch, first start offset)``; an unknown newer epoch gets (-1, -1).
        """
        if epoch == UNDEFINED_EPOCH or not self._entries:
            return UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET
        if epoch == self._entries[-1].epoch:
            return epoch, self._log_end_offset()
        epochs = [entry.epoch for entry in self._entries]
        higher = bisect.bisect_right(epochs, epoch)
        if higher == len(epochs):
            return UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET
        if higher == 0:
            return epoch, self._entries[0].start_offset
        return self._entries[higher - 1].epoch, self._entries[higher].start_offset

    def epoch_for_offset(self, offset: int) -> int:
        """The epoch of the leader that wrote ``offset`` (-1 if before every entry)."""
        starts = [entry.start_offset for entry in self._entries]
        index = bisect.bisect_right(starts, offset) - 1
        return self._entries[index].epoch if index >= 0 else UNDEFINED_EPOCH

    def truncate_from_end(self, end_offset: int) -> bool:
        """Drop epochs starting at or after ``end_offset`` (the log was truncated there)."""
        before = len(self._entries)
        while self._entries and self._entries[-1].start_offset >= end_offset:
            self._entries.pop()
        if len(self._entries) != before:
            self._changed()
            return True
        return False

    def truncate_from_start(self, start_offset: int) -> bool:
        """The log now starts at ``start_offset``: drop older epochs, keeping the one that
        covers ``start_offset`` with its start moved up to it."""
        starts = [entry.start_offset for entry in self._entries]
        covering = bisect.bisect_right(starts, start_offset) - 1
        if covering < 0 or (covering == 0 and starts[0] == start_offset):
            return False
        entry = self._entries[covering]
        self._entries[: covering + 1] = [EpochEntry(entry.epoch, start_offset)]
        self._changed()
        return True

    def clear(self) -> None:
        if self._entries:
            self._entries.clear()
            self._changed()
