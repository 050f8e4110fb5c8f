"""How fast the simulator runs a loaded cluster: simulated seconds per second of CPU, in steady state.

The load is one steady, fault-free failover scenario: 3 brokers, a topic of ``partitions``
partitions (RF 3, min ISR 2), one idempotent acks=all writer paced at ``rate_per_s`` keyed
records (at 1 record/s the cluster is nearly idle, and still heartbeats, long-polls and checks
its ISRs) and one live consumer, with the lab's failover timings (heartbeat 100 ms, session 1 s, follower
long-poll 200 ms, consumer long-poll 100 ms) and every invariant checked after every event.

Each seed runs that scenario twice, with a short and a long steady phase. The difference cancels
what every run pays once (boot, topic creation, waiting for full ISRs, settling, reading
everything back, the verdict), leaving the price of ``seconds`` simulated seconds under load.
Event counts are deterministic (a property of the seed, not of the machine), so ``events_per_s``
is also what the tests pin; the times are this machine's.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from lab.sim.failover import FAILOVER_BROKER_CONFIG
from lab.sim.scenarios import Run, failover_scenario, run_scenario
from lab.sim.scheduler import SimulationError

SHORT_PHASE_MS = 2_000


@dataclass(frozen=True)
class SteadySpeed:
    """The cost of ``simulated_s`` of steady load (long run minus short run, one seed)."""

    rate_per_s: float
    partitions: int
    seed: int
    simulated_s: float
    events: int
    cpu_s: float
    wall_s: float

    @property
    def events_per_s(self) -> float:
        return self.events / self.simulated_s

    @property
    def times_real_time_cpu(self) -> float:
        return self.simulated_s / self.cpu_s if self.cpu_s > 0 else float("inf")

    @property
    def times_real_time_wall(self) -> float:
        return self.simulated_s / self.wall_s if self.wall_s > 0 else float("inf")

    @property
    def cpu_us_per_event(self) -> float:
        return self.cpu_s * 1e6 / self.events if self.events else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "rate_per_s": self.rate_per_s, "partitions": self.partitions, "seed": self.seed,
            "simulated_s": self.simulated_s, "events": self.events, "events_per_s": round(self.events_per_s, 1),
            "cpu_s": round(self.cpu_s, 4), "wall_s": round(self.wall_s, 4),
            "times_real_time_cpu": round(self.times_real_time_cpu, 1),
            "times_real_time_wall": round(self.times_real_time_wall, 1),
            "cpu_us_per_event": round(self.cpu_us_per_event, 1),
        }


def steady_scenario(rate_per_s: float, partitions: int, phase_ms: int) -> Any:
    """The steady scenario as a registry entry (not in the catalog: it has no fault)."""
    if rate_per_s <= 0:
        raise ValueError("the load must be positive (1 record/s is a nearly idle cluster)")
    writer = {"name": "writer", "acks": "all", "rate_per_s": rate_per_s, "keys": 100}
    return failover_scenario({
        "name": f"steady-{rate_per_s:g}-per-s",
        "doc": f"steady load, no fault: {rate_per_s:g} records/s over {partitions} partitions",
        "topic": {"partitions": str(partitions)},
        "producers": [writer],
        "steps": ["await isr-full", f"wait {phase_ms}"],
        "expect": {"checks": ["no-silent-loss"]},
    })


def measure(rate_per_s: float, seconds: float, seed: int = 1, partitions: int = 3) -> SteadySpeed:
    """Steady-state speed at one load for one seed (raises SimulationError if a run fails)."""
    long_ms = SHORT_PHASE_MS + int(seconds * 1000)
    short = _timed(steady_scenario(rate_per_s, partitions, SHORT_PHASE_MS), seed)
    long = _timed(steady_scenario(rate_per_s, partitions, long_ms), seed)
    (short_run, short_cpu, short_wall), (long_run, long_cpu, long_wall) = short, long
    short_scheduler, long_scheduler = short_run.cluster.scheduler, long_run.cluster.scheduler
    return SteadySpeed(
        rate_per_s=rate_per_s, partitions=partitions, seed=seed,
        simulated_s=(long_scheduler.elapsed_ms() - short_scheduler.elapsed_ms()) / 1000,
        events=long_scheduler.events_run - short_scheduler.events_run,
        cpu_s=max(long_cpu - short_cpu, 0.0), wall_s=max(long_wall - short_wall, 0.0),
    )


def _timed(scenario: Any, seed: int) -> tuple[Run, float, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    run = run_scenario(scenario, seed)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    if run.error is not None:
        raise SimulationError(f"{scenario.name} seed {seed} failed: {run.error}")
    return run, cpu, wall


def timings() -> dict[str, str]:
    """The failover timings the load runs with, for the report beside the figures."""
    return {key: FAILOVER_BROKER_CONFIG[key] for key in
            ("broker.heartbeat.interval.ms", "broker.session.timeout.ms", "replica.fetch.wait.max.ms")}
