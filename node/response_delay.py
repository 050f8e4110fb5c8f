"""A TEST-ONLY fault knob: a broker that acknowledges slowly.

``test.produce.response.delay.ms`` (0, off, by default) holds back every
``test.produce.response.delay.every``-th answer to a client's Produce for that long, *after*
the append: the records are in the log, but a producer whose ``request.timeout.ms`` is shorter
gives up on the call and retries. Without idempotence the retry writes the records again; with
it the broker recognises the retry (the issue 7 tests and the lab use it to show the
difference). Internal writes (group commits) and replication are never delayed. Sans-IO: the
held answers are released by ``tick``.
"""

from __future__ import annotations

import heapq

from brokerlab.sansio import Effects, Envelope


class DelayedProduceAnswers:
    def __init__(self, delay_ms: int, every: int = 1) -> None:
        self.delay_ms = delay_ms
        self.every = max(every, 1)
        self._count = 0
        self._held: list[tuple[int, int, Envelope]] = []  # (due_ms, seq, answer)
        self.delayed = 0

    def hold(self, fx: Effects, now_ms: int) -> None:
        """Take the Produce answers to clients that are due for a delay out of ``fx``."""
        kept = []
        for reply in fx.replies:
            if reply.rpc == "Produce" and reply.dst.startswith("client"):
                self._count += 1
                if self._count % self.every == 0:
                    self.delayed += 1
                    heapq.heappush(self._held, (now_ms + self.delay_ms, self._count, reply))
                    continue
            kept.append(reply)
        fx.replies[:] = kept

    def release(self, now_ms: int, fx: Effects) -> None:
        while self._held and self._held[0][0] <= now_ms:
            fx.reply(heapq.heappop(self._held)[2])

    def next_deadline_ms(self) -> int | None:
        return self._held[0][0] if self._held else None
