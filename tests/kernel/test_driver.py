"""CoreDriver: replies resolve callers, sends round-trip through the transport, timers fire."""

from __future__ import annotations

import asyncio

from brokerlab.driver import CoreDriver
from brokerlab.sansio import Effects, Envelope


class EchoCore:
    """Replies to "Echo" at once, asks a peer on "Ask", and counts ticks at a deadline."""

    def __init__(self) -> None:
        self.deadline_ms: int | None = 0
        self.ticks = 0
        self.waiting: dict[int, Envelope] = {}

    def step(self, envelope: Envelope, now_ms: int) -> Effects:
        effects = Effects()
        if envelope.is_response:
            request = self.waiting.pop(envelope.request_id)
            answer = envelope.message if envelope.transport_error is None else f"failed: {envelope.transport_error}"
            effects.reply(request.reply(answer))
        elif envelope.rpc == "Echo":
            effects.reply(envelope.reply(envelope.message))
        elif envelope.rpc == "Ask":
            self.waiting[envelope.request_id] = envelope
            effects.send(Envelope("core", "peer", "Ask", envelope.message, envelope.request_id))
        return effects

    def tick(self, now_ms: int) -> Effects:
        self.ticks += 1
        self.deadline_ms = None
        effects = Effects()
        effects.event("Ticked", at=now_ms)
        return effects

    def next_deadline_ms(self) -> int | None:
        return self.deadline_ms


def test_driver_round_trips():
    async def scenario():
        events = []

        async def transport(envelope: Envelope) -> Envelope:
            if envelope.message == "boom":
                raise ConnectionError("peer down")
            return envelope.reply(envelope.message.upper())

        core = EchoCore()
        driver = CoreDriver(core, "core", transport, clock_ms=lambda: 1000, on_event=events.append)
        driver.start()
        assert await driver.request("Echo", "hi") == "hi"
        assert await driver.request("Ask", "hello") == "HELLO"
        assert await driver.request("Ask", "boom") == "failed: ConnectionError: peer down"
        assert core.ticks == 1 and events[0].name == "Ticked"
        await driver.close()

    asyncio.run(asyncio.wait_for(scenario(), 5))
