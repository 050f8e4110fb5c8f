"""A simulated node: one sans-IO core over its MemoryDisk, driven by the scheduler.

The node is the simulator's ``CoreDriver``: it steps the core with each envelope the network
delivers, ticks it at ``next_deadline_ms()``, hands sends and replies to the network and copies
trace events into the simulation trace. It holds no protocol logic.

Crash and restart model processes: ``crash()`` drops the core object (every in-memory structure
is gone) and, with ``lose_unflushed``, calls ``MemoryDisk.crash()`` (power loss: only fsynced
bytes stay); ``restart()`` builds a new core over the same disk through the node's factory,
exactly as a real process starting on the same data directory would.

A clean stop (SIGTERM) with a ``GracefulStop`` takes virtual time, as the real process's does:
``begin`` (e.g. the broker's controlled shutdown) runs, the core keeps stepping and ticking
until ``may_stop`` says it is done or ``timeout_ms`` passes, then ``finish`` (close the logs)
and the process is gone. ``stop()`` only starts it; ``SimCluster.stop`` waits for the end.

Blocking jobs (``Effects.blocking``: a rolled segment's fsync, a periodic checkpoint) run
``BLOCKING_JOB_MS`` later as an event of their own, as the real driver's thread would:
``job.run()`` then the core's ``on_blocking_done``. A crash first drops them (the fsync never
happened: a power loss then loses those bytes); a paused process runs them when it resumes.
"""

from __future__ import annotations

import inspect
import random
from dataclasses import dataclass, field
from typing import Any, Callable

from brokerlab.disk import MemoryDisk
from brokerlab.sansio import BlockingJob, Core, Effects, Envelope, TraceEvent

from .network import SimNetwork
from .scheduler import Scheduler, SimulationError, Timer
from .trace import Trace


@dataclass
class BootContext:
    """What a factory gets to build one incarnation of a core."""

    name: str
    disk: MemoryDisk
    random: random.Random  # this incarnation's own Random, derived from the seed
    config: Any
    now_ms: int
    incarnation: int
    # Start-up events a factory wants in the trace (e.g. LogManager.recovery_events).
    events: list[TraceEvent] = field(default_factory=list)


# Virtual time a blocking job (an fsync off the event loop) takes before its completion.
BLOCKING_JOB_MS = 5

CoreFactory = Callable[[BootContext], Core]
# The gRPC deadline (ms) the node's real adapter would put on one of its calls.
CallTimeout = Callable[[Envelope], int]
# Clean shutdown of a core in one go (e.g. close its logs and write the clean-shutdown marker);
# may return Effects.
Shutdown = Callable[[Core, int], Any]


@dataclass(frozen=True)
class GracefulStop:
    """A clean stop that takes time: what the process's ``__main__`` does between SIGTERM and exit.

    ``begin(core, now_ms)`` starts it (may return Effects); after every step and tick the node
    asks ``may_stop(core)``; once true, or ``timeout_ms`` after the start, ``finish(core,
    now_ms)`` runs (may return Effects) and the process exits. A timeout is recorded as
    ``abandoned_event`` (the name the real process logs).
    """

    begin: Callable[[Any, int], Any]
    may_stop: Callable[[Any], bool]
    finish: Callable[[Any, int], Any]
    timeout_ms: int
    abandoned_event: str = "StopAbandoned"


@dataclass
class _Stopping:
    started_ms: int
    deadline: Timer | None = None
    overdue: bool = False  # the deadline passed while the process was paused


class CoreFailed(SimulationError):
    """A core raised while stepping or ticking; the message names node, time and input."""


class SimNode:
    def __init__(
        self,
        name: str,
        factory: CoreFactory,
        config: Any,
        scheduler: Scheduler,
        network: SimNetwork,
        trace: Trace,
        disk: MemoryDisk | None = None,
        shutdown: Shutdown | GracefulStop | None = None,
        call_timeout: CallTimeout | None = None,
    ) -> None:
        self.name = name
        self.shutdown = shutdown
        self.call_timeout = call_timeout
        self.factory = factory
        self.config = config
        self.scheduler = scheduler
        self.network = network
        self.trace = trace
        self.disk = disk if disk is not None else MemoryDisk()
        self.core: Core | None = None
        self.incarnation = 0
        # Steps + ticks run so far: lets invariants skip nodes that did nothing since their last look.
        self.runs = 0
        # Clock skew: the core sees the virtual time plus this offset (trace times stay virtual).
        self.clock_offset_ms = 0
        # A paused process (SIGSTOP) runs nothing: deliveries wait in the backlog, timers wait.
        self.paused = False
        # Set between a graceful stop's begin and the process's exit.
        self.stopping: _Stopping | None = None
        self._backlog: list[Envelope] = []
        self._held_jobs: list[BlockingJob] = []  # came due while paused
        self._timer: Timer | None = None
        self._timer_due_ms: int | None = None
        network.register(self)

    @property
    def alive(self) -> bool:
        return self.core is not None

    def local_now_ms(self) -> int:
        """The time as this node's clock reads it."""
        return self.scheduler.now_ms + self.clock_offset_ms

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        """Boot a new incarnation over the current disk and run its first tick."""
        if self.core is not None:
            raise SimulationError(f"{self.name} is already running")
        self.incarnation += 1
        self.paused = False
        self._backlog.clear()
        now = self.local_now_ms()
        context = BootContext(
            name=self.name,
            disk=self.disk,
            random=self.scheduler.child_random("node", self.name, self.incarnation),
            config=self.config,
            now_ms=now,
            incarnation=self.incarnation,
        )
        core = self._guard("boot", None, lambda: self.factory(context))
        self.trace.record(self.scheduler.now_ms, self.name, "NodeStarted", {"incarnation": self.incarnation})
        self.trace.record_events(self.scheduler.now_ms, self.name, context.events)
        self.core = core
        self._run(lambda: core.tick(now), "tick", None)

    def crash(self, lose_unflushed: bool = False) -> None:
        """Kill the process: the core object is dropped; with ``lose_unflushed``, power loss too."""
        if self.core is None:
            raise SimulationError(f"{self.name} is not running")
        self._halt()
        if lose_unflushed:
            self.disk.crash()
        self.trace.record(self.scheduler.now_ms, self.name, "NodeCrashed", {
            "incarnation": self.incarnation, "lose_unflushed": lose_unflushed,
        })

    def stop(self) -> None:
        """Clean shutdown (SIGTERM): the node's ``shutdown`` hook, else the core's ``close``, then exit.

        With a ``GracefulStop`` this only begins the stop: the process exits later, in virtual
        time (``SimCluster.stop`` runs the simulation until it has).
        """
        if self.core is None:
            raise SimulationError(f"{self.name} is not running")
        if isinstance(self.shutdown, GracefulStop):
            self._begin_graceful_stop(self.shutdown)
            return
        core, now = self.core, self.local_now_ms()
        close = getattr(core, "close", None)
        if self.shutdown is not None:
            effects = self._guard("shutdown", None, lambda: self.shutdown(core, now))
            if isinstance(effects, Effects):
                self._execute(effects)
        elif close is not None:
            effects = self._guard("close", None, lambda: _call_close(close, now))
            if isinstance(effects, Effects):
                self._execute(effects)
        self._halt()
        self.trace.record(self.scheduler.now_ms, self.name, "NodeStopped", {"incarnation": self.incarnation})

    def _begin_graceful_stop(self, graceful: GracefulStop) -> None:
        if self.stopping is not None:
            return  # a second SIGTERM while stopping changes nothing here
        core, now = self.core, self.local_now_ms()
        self.stopping = _Stopping(self.scheduler.now_ms)
        self.trace.record(self.scheduler.now_ms, self.name, "NodeStopping", {"incarnation": self.incarnation})
        self.stopping.deadline = self.scheduler.after(
            graceful.timeout_ms, self._on_stop_deadline, label=f"stop deadline {self.name}")
        effects = self._guard("shutdown", None, lambda: graceful.begin(core, now))
        self._execute(effects if isinstance(effects, Effects) else Effects())

    def _maybe_finish_stop(self) -> None:
        """After every run of the core while stopping: exit once the core says it may."""
        graceful, stopping, core = self.shutdown, self.stopping, self.core
        if stopping is None or core is None or self.paused or not isinstance(graceful, GracefulStop):
            return
        if stopping.overdue:
            self._finish_stop(graceful, abandoned=True)
        elif self._guard("shutdown", None, lambda: graceful.may_stop(core)):
            self._finish_stop(graceful, abandoned=False)

    def _on_stop_deadline(self) -> None:
        stopping, graceful = self.stopping, self.shutdown
        if stopping is None or self.core is None or not isinstance(graceful, GracefulStop):
            return
        stopping.deadline = None
        stopping.overdue = True  # a paused process's timer fires once it runs again
        if not self.paused:
            self._finish_stop(graceful, abandoned=True)

    def _finish_stop(self, graceful: GracefulStop, abandoned: bool) -> None:
        core, now, stopping = self.core, self.local_now_ms(), self.stopping
        waited_ms = self.scheduler.now_ms - stopping.started_ms
        if abandoned:
            self.trace.record(self.scheduler.now_ms, self.name, graceful.abandoned_event, {
                "waited_ms": waited_ms, "reason": "timeout", "timeout_ms": graceful.timeout_ms,
            })
        if stopping.deadline is not None:
            stopping.deadline.cancel()
        self.stopping = None  # finish's own effects must not ask again
        effects = self._guard("shutdown", None, lambda: graceful.finish(core, now))
        if isinstance(effects, Effects):
            self.trace.record_events(self.scheduler.now_ms, self.name, effects.events)
        self._halt()
        self.trace.record(self.scheduler.now_ms, self.name, "NodeStopped", {
            "incarnation": self.incarnation, "waited_ms": waited_ms, "abandoned": abandoned,
        })

    def restart(self) -> None:
        if self.core is not None:
            self.crash()
        self.start()

    def pause(self) -> None:
        """SIGSTOP: the process keeps its connections but runs nothing until ``resume()``."""
        if self.core is None or self.paused:
            raise SimulationError(f"{self.name} is not running or already paused")
        self.paused = True
        self.trace.record(self.scheduler.now_ms, self.name, "NodePaused", {"incarnation": self.incarnation})

    def resume(self) -> None:
        """SIGCONT: handle what arrived meanwhile, in arrival order, then the overdue timers."""
        if not self.paused:
            raise SimulationError(f"{self.name} is not paused")
        self.paused = False
        self.trace.record(self.scheduler.now_ms, self.name, "NodeResumed", {
            "incarnation": self.incarnation, "backlog": len(self._backlog),
        })
        backlog, self._backlog = self._backlog, []
        for envelope in backlog:
            self.deliver(envelope)
        jobs, self._held_jobs = self._held_jobs, []
        for job in jobs:
            self._on_blocking(job, self.incarnation)
        self._timer_due_ms = None  # force a re-arm: a timer may have come due while paused
        self._rearm()
        self._maybe_finish_stop()

    def _halt(self) -> None:
        self.core = None
        self.paused = False
        if self.stopping is not None and self.stopping.deadline is not None:
            self.stopping.deadline.cancel()
        self.stopping = None
        self._backlog.clear()
        self._held_jobs.clear()
        self._cancel_timer()
        self.network.node_down(self.name)

    # -- driving the core -------------------------------------------------------------------
    # deliver and _on_timer run the core without _guard's closure: they are most of all events.
    def deliver(self, envelope: Envelope) -> None:
        core = self.core
        if core is None:
            return
        if self.paused:
            self._backlog.append(envelope)
            return
        try:
            effects = core.step(envelope, self.scheduler.now_ms + self.clock_offset_ms)
        except SimulationError:
            raise
        except Exception as exc:
            raise self._core_failed("step", envelope, exc) from exc
        self._execute(effects)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_due_ms = None
        core = self.core
        if core is not None and not self.paused:
            try:
                effects = core.tick(self.scheduler.now_ms + self.clock_offset_ms)
            except SimulationError:
                raise
            except Exception as exc:
                raise self._core_failed("tick", None, exc) from exc
            self._execute(effects)

    def _on_blocking(self, job: BlockingJob, incarnation: int) -> None:
        core = self.core
        if core is None or incarnation != self.incarnation:
            return  # the process died with its thread: the fsync never happened
        if self.paused:
            self._held_jobs.append(job)
            return
        self._guard("blocking job", None, job.run)
        self._run(lambda: core.on_blocking_done(job, self.local_now_ms()), "blocking job", None)

    def _run(self, action: Callable[[], Effects], what: str, envelope: Envelope | None) -> None:
        effects = self._guard(what, envelope, action)
        self._execute(effects)

    def _execute(self, effects: Effects) -> None:
        self.runs += 1
        if effects.events:
            self.trace.record_events(self.scheduler.now_ms, self.name, effects.events)
        if self.core is None:  # the core stopped itself while closing
            return
        if effects.replies or effects.sends:
            send = self.network.send
            for reply in effects.replies:
                send(reply)
            for envelope in effects.sends:
                send(envelope)
        for job in effects.blocking:
            self.scheduler.after(BLOCKING_JOB_MS, self._on_blocking, job, self.incarnation,
                                 label=f"blocking {self.name}")
        self._rearm()
        if self.stopping is not None:
            self._maybe_finish_stop()

    def _rearm(self) -> None:
        core = self.core
        if core is None or self.paused:
            return
        due = core.next_deadline_ms()
        if due is not None:  # the core's deadline is on its own (skewed) clock
            due = max(int(due) - self.clock_offset_ms, self.scheduler.now_ms)
        if due == self._timer_due_ms and self._timer is not None:
            return
        self._cancel_timer()
        if due is not None:
            self._timer_due_ms = due
            self._timer = self.scheduler.at(due, self._on_timer, label=f"tick {self.name}")

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = None
        self._timer_due_ms = None

    def _guard(self, what: str, envelope: Envelope | None, action: Callable[[], Any]) -> Any:
        try:
            return action()
        except SimulationError:
            raise
        except Exception as exc:
            raise self._core_failed(what, envelope, exc) from exc

    def _core_failed(self, what: str, envelope: Envelope | None, exc: Exception) -> CoreFailed:
        detail = f" handling {envelope.rpc} from {envelope.src}" if envelope is not None else ""
        return CoreFailed(
            f"{self.name} (incarnation {self.incarnation}) raised in {what}{detail} "
            f"at t={self.scheduler.now_ms}: {type(exc).__name__}: {exc}"
        )


def _call_close(close: Callable[..., Any], now_ms: int) -> Any:
    return close(now_ms) if inspect.signature(close).parameters else close()
