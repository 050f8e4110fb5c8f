"""The simulator's clock and event loop: one thread, a heap, a virtual clock that jumps.

Every event is ``(due_ms, seq, timer)`` on one heap; ``seq`` breaks ties in scheduling order, so
two runs that schedule the same things in the same order run them in the same order. Nothing
here reads the wall clock: the clock jumps straight to the next event, which is why a simulated
minute costs milliseconds.

Randomness is owned by the simulation as well. ``child_random(*names)`` hands each consumer
(a node incarnation, the network, a workload) its own ``random.Random`` whose seed is derived
from the root seed and the consumer's name, so adding a node or a draw in one place never
shifts the numbers another place sees.
"""

from __future__ import annotations

import hashlib
import random
from heapq import heappop, heappush
from typing import Any, Callable


class SimulationError(RuntimeError):
    """The simulation itself cannot go on (a livelock, a core that raised, a broken invariant)."""


class Livelock(SimulationError):
    """Too many events at one virtual instant: something reschedules itself without time passing."""


def derive_seed(seed: int, *names: object) -> int:
    """A stable 64-bit child seed (sha256, so independent of PYTHONHASHSEED and Python version)."""
    text = "/".join([str(seed), *(str(name) for name in names)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


class Timer:
    """A scheduled callback; ``cancel()`` leaves it on the heap but makes it a no-op."""

    __slots__ = ("due_ms", "seq", "callback", "args", "label", "cancelled")

    def __init__(self, due_ms: int, seq: int, callback: Callable[..., Any], args: tuple, label: str) -> None:
        self.due_ms = due_ms
        self.seq = seq
        self.callback = callback
        self.args = args
        self.label = label
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True

    def __lt__(self, other: "Timer") -> bool:  # heap order: time, then scheduling order
        return (self.due_ms, self.seq) < (other.due_ms, other.seq)

    def __repr__(self) -> str:
        state = " cancelled" if self.cancelled else ""
        return f"<Timer {self.label or self.callback!r} at {self.due_ms}{state}>"


class Scheduler:
    """A discrete-event loop over a virtual clock in integer milliseconds."""

    def __init__(self, seed: int, start_ms: int = 0, max_events_per_instant: int = 200_000) -> None:
        self.seed = seed
        self.start_ms = start_ms
        self.now_ms = start_ms
        self.random = self.child_random("scheduler")
        # Callables run after every event (the invariant checks); they see the state the event left.
        self.after_event: list[Callable[[], None]] = []
        self.events_run = 0
        # (due_ms, seq, timer): tuples compare in C, and never reach the timer (seq is unique).
        self._heap: list[tuple[int, int, Timer]] = []
        self._seq = 0
        self._max_per_instant = max_events_per_instant
        self._instant_ms = start_ms
        self._instant_events = 0

    def child_random(self, *names: object) -> random.Random:
        """A Random for one consumer, seeded from the root seed and ``names``."""
        return random.Random(derive_seed(self.seed, *names))

    # -- scheduling -------------------------------------------------------------------------
    def at(self, due_ms: int, callback: Callable[..., Any], *args: Any, label: str = "") -> Timer:
        """Run ``callback(*args)`` at ``due_ms`` (never in the past: clamped to now)."""
        self._seq = seq = self._seq + 1
        if type(due_ms) is not int:
            due_ms = int(due_ms)
        if due_ms < self.now_ms:
            due_ms = self.now_ms
        timer = Timer(due_ms, seq, callback, args, label)
        heappush(self._heap, (due_ms, seq, timer))
        return timer

    def after(self, delay_ms: int, callback: Callable[..., Any], *args: Any, label: str = "") -> Timer:
        if type(delay_ms) is not int:
            delay_ms = int(delay_ms)
        return self.at(self.now_ms + (delay_ms if delay_ms > 0 else 0), callback, *args, label=label)

    def next_due_ms(self) -> int | None:
        """When the next live event is due, or None when nothing is scheduled."""
        heap = self._heap
        while heap and heap[0][2].cancelled:
            heappop(heap)
        return heap[0][0] if heap else None

    # -- running ----------------------------------------------------------------------------
    def step(self) -> bool:
        """Run the next live event (advancing the clock to it); False when the heap is empty."""
        return self._run(None, None)

    def run_until(self, predicate: Callable[[], bool], deadline_ms: int) -> bool:
        """Run events until ``predicate()`` holds (checked before each event) or ``deadline_ms``.

        Returns whether the predicate held. On timeout the clock stands at ``deadline_ms``.
        """
        if self._run(predicate, deadline_ms):
            return True
        self.now_ms = max(self.now_ms, deadline_ms)
        return predicate()

    def run_for(self, duration_ms: int) -> None:
        """Run every event due in the next ``duration_ms``; the clock ends exactly there."""
        deadline_ms = self.now_ms + duration_ms
        self._run(None, deadline_ms)
        self.now_ms = max(self.now_ms, deadline_ms)

    def _run(self, predicate: Callable[[], bool] | None, deadline_ms: int | None) -> bool:
        """The event loop, in one frame (it runs millions of times per sweep).

        Without ``deadline_ms``: one live event, True if there was one. Else every live event due
        by ``deadline_ms``, until ``predicate()`` (checked before each) holds: True then, False
        once nothing more is due.
        """
        heap, hooks = self._heap, self.after_event
        while True:
            if predicate is not None and predicate():
                return True
            while heap and heap[0][2].cancelled:
                heappop(heap)
            if not heap:
                return False
            due_ms = heap[0][0]
            if deadline_ms is not None and due_ms > deadline_ms:
                return False
            timer = heappop(heap)[2]
            if due_ms != self._instant_ms:
                self._instant_ms = due_ms
                self._instant_events = 0
            self._instant_events += 1
            if self._instant_events > self._max_per_instant:
                raise Livelock(f"more than {self._max_per_instant} events at t={due_ms} ms; last: {timer!r}")
            self.now_ms = due_ms
            timer.callback(*timer.args)
            self.events_run += 1
            for hook in hooks:
                hook()
            if deadline_ms is None:
                return True

    def elapsed_ms(self) -> int:
        return self.now_ms - self.start_ms

    def pending(self) -> int:
        return sum(1 for _, _, timer in self._heap if not timer.cancelled)
