"""A simulated cluster: nodes, clients, network, scheduler, trace and invariants under one seed.

``SimCluster`` is generic over cores: ``add_node(name, factory, config)`` puts any sans-IO core
on the simulated network. ``lab.sim.cores.build_cluster`` builds the real thing (a controller
and N brokers from the real cores). Invariants are callables ``(cluster) -> None`` that raise
``InvariantViolation``; they run after every scheduler event and after every fault the test
injects, so a broken invariant is caught at the first event that breaks it.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

from .client import SimClient
from .network import NetworkConfig, SimNetwork
from .node import CallTimeout, CoreFactory, GracefulStop, Shutdown, SimNode
from .scheduler import Scheduler, SimulationError
from .trace import Trace

# Virtual time starts at a realistic epoch so record timestamps look like wall-clock ones.
DEFAULT_START_MS = 1_700_000_000_000

Invariant = Callable[["SimCluster"], None]


class InvariantViolation(SimulationError):
    """An invariant does not hold; raised by an invariant, re-raised with seed and time."""


class SimCluster:
    def __init__(
        self,
        seed: int,
        network: NetworkConfig | None = None,
        *,
        start_ms: int = DEFAULT_START_MS,
        invariants: Iterable[Invariant] = (),
    ) -> None:
        self.seed = seed
        self.scheduler = Scheduler(seed, start_ms)
        self.trace = Trace()
        self.network = SimNetwork(
            self.scheduler, network or NetworkConfig(), self.scheduler.child_random("network"), self._record,
            self.trace.record_sorted,
        )
        self.nodes: dict[str, SimNode] = {}
        self.clients: dict[str, SimClient] = {}
        self.invariants: list[Invariant] = list(invariants)
        # Records clients saw acknowledged with acks=all, in the order the acks arrived:
        # (TopicPartition, offset, value, sent_ms of the attempt that was acknowledged).
        # Invariants hold the cluster to them.
        self.acknowledged: list[tuple[Any, int, bytes, int]] = []
        self.scheduler.after_event.append(self.check_invariants)

    # -- building ---------------------------------------------------------------------------
    def add_node(
        self,
        name: str,
        factory: CoreFactory,
        config: Any = None,
        *,
        start: bool = True,
        shutdown: Shutdown | GracefulStop | None = None,
        call_timeout: CallTimeout | None = None,
    ) -> SimNode:
        if name in self.nodes or name in self.clients:
            raise ValueError(f"duplicate node name {name!r}")
        node = SimNode(name, factory, config, self.scheduler, self.network, self.trace,
                       shutdown=shutdown, call_timeout=call_timeout)
        self.nodes[name] = node
        if start:
            node.start()
            self.check_invariants()
        return node

    def client(self, name: str = "client-1") -> SimClient:
        if name not in self.clients:
            self.clients[name] = SimClient(name, self.scheduler, self.network, self.trace,
                                           on_acknowledged=self.acknowledge)
        return self.clients[name]

    def acknowledge(self, tp: Any, offset: int, value: bytes, sent_ms: int) -> None:
        """A client got an acks=all acknowledgement for ``value`` at ``offset`` of ``tp``, for a
        request it sent at ``sent_ms`` (the leader acknowledged it at some time in between)."""
        self.acknowledged.append((tp, offset, value, sent_ms))

    def node(self, name: str) -> SimNode:
        return self.nodes[name]

    def core(self, name: str) -> Any:
        """The running core of ``name`` (None while it is down): what invariants inspect."""
        return self.nodes[name].core

    @property
    def now_ms(self) -> int:
        return self.scheduler.now_ms

    # -- faults -----------------------------------------------------------------------------
    def crash(self, name: str, lose_unflushed: bool = False) -> None:
        self.nodes[name].crash(lose_unflushed)
        self.check_invariants()

    def stop(self, name: str, wait: bool = True) -> None:
        """SIGTERM. A graceful stop takes virtual time: with ``wait`` the simulation runs until
        the process has exited (its own deadline bounds that), else it exits later on its own."""
        node = self.nodes[name]
        node.stop()
        self.check_invariants()
        if not wait or not node.alive:
            return
        if node.paused:
            raise SimulationError(f"{name} is paused: a SIGTERM waits for SIGCONT")
        graceful = node.shutdown
        limit = graceful.timeout_ms + 1 if isinstance(graceful, GracefulStop) else 0
        if not self.scheduler.run_until(lambda: not node.alive, self.scheduler.now_ms + limit):
            raise SimulationError(f"{name} did not exit within its stop deadline ({limit} ms)")

    def start(self, name: str) -> None:
        self.nodes[name].start()
        self.check_invariants()

    def restart(self, name: str, lose_unflushed: bool = False) -> None:
        """Crash (if running) and start again over the same disk."""
        if self.nodes[name].alive:
            self.crash(name, lose_unflushed)
        self.start(name)

    def pause(self, name: str) -> None:
        self.nodes[name].pause()

    def resume(self, name: str) -> None:
        self.nodes[name].resume()
        self.check_invariants()

    def skew_clock(self, name: str, offset_ms: int) -> None:
        """From now on ``name``'s core reads the virtual time plus ``offset_ms``."""
        node = self.nodes[name]
        node.clock_offset_ms = offset_ms
        self.trace.record(self.now_ms, name, "ClockSkewed", {"offset_ms": offset_ms})
        node._rearm()

    # -- running ----------------------------------------------------------------------------
    def run_for(self, duration_ms: int) -> None:
        self.scheduler.run_for(duration_ms)

    def run_until(self, predicate: Callable[[], bool], timeout_ms: int) -> bool:
        return self.scheduler.run_until(predicate, self.scheduler.now_ms + timeout_ms)

    def check_invariants(self) -> None:
        for invariant in self.invariants:
            try:
                invariant(self)
            except InvariantViolation as exc:
                # A suite of checks names the one that failed on the exception.
                name = getattr(exc, "invariant", None) or getattr(invariant, "__name__", type(invariant).__name__)
                raise InvariantViolation(
                    f"invariant {name} broken at t={self.scheduler.now_ms} "
                    f"(+{self.scheduler.elapsed_ms()} ms, event #{self.scheduler.events_run}, seed {self.seed}): {exc}"
                ) from exc

    def _record(self, node: str, name: str, fields: dict[str, Any]) -> None:
        self.trace.record(self.scheduler.now_ms, node, name, fields)

    def summary(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "virtual_ms": self.scheduler.elapsed_ms(),
            "events": self.scheduler.events_run,
            "trace_entries": len(self.trace),
            "network": dict(self.network.stats),
            "trace_sha256": self.trace.digest(),
        }
