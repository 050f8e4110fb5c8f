"""Simulated clients that run alongside the cluster: producers and consumers, recorded in a history.

The script-style ``SimClient`` waits for each answer, so only one thing happens at a time. A
failover scenario needs load *while* faults happen: these clients never wait, each a network
endpoint like a client process, so any number of them keep sending while a scenario script
kills, pauses and cuts nodes around them.

What they do goes into a ``SimHistory``: ``lab.history.History`` (the same recorder and format
the real-process tests use, judged by the same ``lab.checker``) on the virtual clock, so the
history of a seed is byte-identical run after run.

The producers are the real client: ``lab.sim.producer_actor.SimProducer`` runs
client/producer's accumulator, sender and idempotence cores as the asyncio facade does, with the
real metadata cache (its module docstring says what each send's outcome means). The consumers
are the real client too: ``lab.sim.consumer_core.SimConsumer`` runs client/consumer's
``FetchCore`` with every partition assigned from the beginning, on a node of its own, with the
poll loop of the experiments' ``ConsumerLoad`` (group members: ``lab.sim.group_consumer``).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from lab.history import FAIL, INFO, OK, History

from .consumer_core import ConsumerSpec, SimConsumer  # noqa: F401 (ConsumerSpec: re-exported)
from .producer_actor import ProducerSpec, SimProducer  # noqa: F401 (ProducerSpec: re-exported)


class SimHistory(History):
    """``lab.history.History`` on the simulator's virtual clock: times are virtual ms since it
    started, and its wall-clock anchor (``started_epoch_ms``) is the virtual time it started at
    (virtual time starts at a realistic epoch), so nothing in it depends on the real clock."""

    def __init__(self, clock: Callable[[], int]) -> None:
        super().__init__()
        self._clock = clock
        self._origin = clock()
        self.started_epoch_ms = float(self._origin)

    def now_ms(self) -> float:
        return float(self._clock() - self._origin)

    def at(self, virtual_ms: int) -> float:
        """A virtual time as this history's timestamps show it."""
        return float(virtual_ms - self._origin)


def history_bytes(history: History) -> bytes:
    """The history as ``History.save`` writes it (JSON lines), as bytes: what "the same seed
    gives the same history" compares."""
    with tempfile.TemporaryDirectory(prefix="sim-history-") as folder:
        path = Path(folder) / "history.jsonl"
        history.save(path)
        return path.read_bytes()


@dataclass
class Workload:
    """The producers and consumers of one scenario run, over one history."""

    history: SimHistory
    producers: dict[str, SimProducer] = field(default_factory=dict)
    consumers: list[SimConsumer] = field(default_factory=list)

    def start(self) -> None:
        for producer in self.producers.values():
            if producer.spec.start:
                producer.start()
        for consumer in self.consumers:
            consumer.start()

    def stop(self) -> None:
        for producer in self.producers.values():
            producer.stop()
        for consumer in self.consumers:
            consumer.stop()

    def settled(self) -> bool:
        return all(producer.idle for producer in self.producers.values())

    def maybe_duplicated(self) -> set[bytes]:
        return set().union(*(p.maybe_duplicated for p in self.producers.values()))

    def acknowledged_by(self) -> dict[bytes, str]:
        out: dict[bytes, str] = {}
        for producer in self.producers.values():
            out.update(producer.acknowledged_by)
        return out

    def outcomes(self) -> dict[str, int]:
        counts = {OK: 0, FAIL: 0, INFO: 0}
        for send in self.history.sends:
            counts[send.outcome] = counts.get(send.outcome, 0) + 1
        return counts
