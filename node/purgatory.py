"""Requests waiting for a condition or their deadline (Kafka's DelayedOperationPurgatory).

A parked operation watches some partitions; whoever changes a partition (an append, a
leadership change) asks for the operations watching it and tries to complete them. ``tick``
collects the ones whose deadline passed. Fetch long-polls live here now; issue 3 parks
``acks=all`` produces here too, keyed the same way.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Generic, Hashable, Iterable, TypeVar

from brokerlab.ids import TopicPartition

T = TypeVar("T")


@dataclass(slots=True)
class Parked(Generic[T]):
    key: Hashable
    operation: T
    deadline_ms: int
    watched: frozenset[TopicPartition]


class Purgatory(Generic[T]):
    def __init__(self) -> None:
        self._parked: dict[Hashable, Parked[T]] = {}
        self._watchers: dict[TopicPartition, set[Hashable]] = {}
        # (deadline_ms, seq, key); entries of completed operations are dropped lazily.
        self._deadlines: list[tuple[int, int, Hashable]] = []
        self._seq = 0

    def __len__(self) -> int:
        return len(self._parked)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._parked

    def park(self, key: Hashable, operation: T, deadline_ms: int, watched: Iterable[TopicPartition]) -> None:
        if key in self._parked:
            self.remove(key)
        parked = Parked(key, operation, deadline_ms, frozenset(watched))
        self._parked[key] = parked
        for tp in parked.watched:
            self._watchers.setdefault(tp, set()).add(key)
        self._seq += 1
        heapq.heappush(self._deadlines, (deadline_ms, self._seq, key))

    def remove(self, key: Hashable) -> Parked[T] | None:
        parked = self._parked.pop(key, None)
        if parked is None:
            return None
        for tp in parked.watched:
            keys = self._watchers.get(tp)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._watchers[tp]
        return parked

    def watching(self, tps: Iterable[TopicPartition]) -> list[Parked[T]]:
        """Operations watching any of ``tps``, oldest first (they are not removed)."""
        keys: set[Hashable] = set()
        for tp in tps:
            keys.update(self._watchers.get(tp, ()))
        if len(keys) <= 1:  # the common case: nothing to order (and str(key) is not cheap)
            return [self._parked[k] for k in keys]
        return sorted((self._parked[k] for k in keys), key=lambda p: (p.deadline_ms, str(p.key)))

    def all(self) -> list[Parked[T]]:
        return list(self._parked.values())

    def pop_expired(self, now_ms: int) -> list[Parked[T]]:
        """Remove and return every operation whose deadline is at or before ``now_ms``."""
        out = []
        while self._deadlines and self._deadlines[0][0] <= now_ms:
            deadline_ms, _, key = heapq.heappop(self._deadlines)
            parked = self._parked.get(key)
            if parked is not None and parked.deadline_ms == deadline_ms:
                self.remove(key)
                out.append(parked)
        return out

    def next_deadline_ms(self) -> int | None:
        while self._deadlines:
            deadline_ms, _, key = self._deadlines[0]
            parked = self._parked.get(key)
            if parked is not None and parked.deadline_ms == deadline_ms:
                return deadline_ms
            heapq.heappop(self._deadlines)
        return None
