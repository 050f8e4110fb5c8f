"""Run one scenario on a target and leave one folder behind: ``runs/<id>/``.

    cluster up -> topic -> fully replicated -> load starts (history clock 0) -> faults strike and
    heal on their schedule -> at ``duration``: every fault healed, producers stop and settle ->
    cluster fully replicated again -> every partition read back -> cluster down -> node log events
    into the history -> history.jsonl, results.json, summary.txt, plots, report.html

The target is pluggable (lab.experiment.targets); the scenario is data (lab.experiment.scenario).
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

from lab.experiment import report
from lab.experiment.clusterview import ClusterView
from lab.experiment.logevents import add_cluster_events
from lab.experiment.nemesis import Nemesis
from lab.experiment.scenario import Scenario, effective_idempotence
from lab.experiment.targets import make_target
from lab.experiment.workload import Workload, read_back
from lab.history import FAIL, OK, History

# Fast failure detection on one machine (REFERENCE.md's brokerlab defaults); a scenario may override.
NODE_DEFAULTS = {
    "broker.heartbeat.interval.ms": "100",
    "broker.session.timeout.ms": "1000",
    "replica.fetch.wait.max.ms": "200",
    "replica.lag.time.max.ms": "3000",
}
SETTLE_TIMEOUT_S = 30.0


@dataclass
class RunOptions:
    target: str = "local"
    duration_s: float | None = None
    seed: int | None = None
    acks: str | None = None
    idempotence: bool | None = None
    out: Path = Path("runs")
    progress: bool = True
    stream: TextIO | None = None  # progress goes here (default stderr)


class Progress:
    """A plain stderr progress bar (a line every few seconds when stderr is not a terminal)."""

    def __init__(self, total_s: float, stream: TextIO | None, enabled: bool) -> None:
        self.total_s = total_s
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.note = ""
        self._last_line = 0.0

    def update(self, elapsed_s: float, history: History, phase: str = "load") -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not self.tty and now - self._last_line < 5 and elapsed_s < self.total_s:
            return
        self._last_line = now
        width = 30
        done = min(1.0, elapsed_s / self.total_s) if self.total_s else 1.0
        bar = "#" * int(width * done) + "." * (width - int(width * done))
        acked = sum(1 for s in history.sends if s.outcome == OK)
        failed = sum(1 for s in history.sends if s.outcome == FAIL)
        read = sum(len(p.records) for p in history.polls)
        line = (f"[{bar}] {elapsed_s:5.1f}/{self.total_s:.0f}s {phase}: sent {len(history.sends)} acked {acked} "
                f"failed {failed} read {read}" + (f" | {self.note}" if self.note else ""))
        self.stream.write(("\r" + line[:150].ljust(150)) if self.tty else line + "\n")
        self.stream.flush()

    def message(self, text: str) -> None:
        if self.enabled:
            self.stream.write(("\r" + " " * 150 + "\r" if self.tty else "") + text + "\n")
            self.stream.flush()


def prepare(scenario: Scenario, options: RunOptions) -> Scenario:
    if options.duration_s is not None:
        scenario = scenario.with_duration(options.duration_s)
    workload = scenario.workload
    if options.acks is not None:
        workload = replace(workload, acks=str(options.acks))
    if options.idempotence is not None:
        workload = replace(workload, idempotence=options.idempotence)
    return replace(scenario, workload=workload)


def run_experiment(scenario: Scenario, options: RunOptions) -> tuple[Path, dict[str, Any]]:
    scenario = prepare(scenario, options)
    seed = options.seed if options.seed is not None else random.randrange(1 << 31)
    now = datetime.now(timezone.utc)
    run_id = f"{now.strftime('%Y%m%dT%H%M%SZ')}-{scenario.name}"
    run_dir = Path(options.out) / run_id
    suffix = 1
    while run_dir.exists():
        run_dir = Path(options.out) / f"{run_id}-{suffix}"
        suffix += 1
    run_dir.mkdir(parents=True)
    config = {**NODE_DEFAULTS, **scenario.cluster.config}
    target = make_target(options.target, run_dir.resolve(), scenario.cluster.brokers, config, seed)
    progress = Progress(scenario.duration_s, options.stream, options.progress)
    wall_started = time.monotonic()
    notes: list[str] = []
    if options.idempotence and not effective_idempotence(scenario.workload):
        notes.append(f"--idempotence ignored: it needs acks=all and max_in_flight <= 5 "
                     f"(acks={scenario.workload.acks}, max_in_flight={scenario.workload.max_in_flight})")
    holder: dict[str, Any] = {}
    try:
        progress.message(f"experiment {scenario.name} on {target.name}: starting {scenario.cluster.brokers} brokers "
                         f"+ controller (seed {seed}) -> {run_dir}")
        target.start()
        asyncio.run(_run(scenario, target, seed, progress, notes, holder))
    finally:
        progress.message("stopping the cluster")
        try:
            target.stop()
        except Exception as exc:  # the results still get written
            notes.append(f"stopping the cluster failed: {exc}")
    history: History = holder["history"]
    logs = {name: target.log_text(name) for name in ["controller", *target.broker_names()]}
    # Node events from just before the load to the end of the read-back (not the cluster's own shutdown).
    add_cluster_events(history, logs, scenario.topic.name, since_epoch_ms=history.started_epoch_ms - 1000,
                       until_epoch_ms=history.started_epoch_ms + history.meta.get("end_ms", history.now_ms()))
    meta = history.meta
    workload = dict(vars(scenario.workload))
    workload["idempotence_effective"] = effective_idempotence(scenario.workload)
    meta.update(scenario=scenario.name, description=scenario.description, target=target.name, seed=seed,
                duration_s=scenario.duration_s, run_id=run_dir.name, started_at=now.strftime("%Y-%m-%dT%H:%M:%SZ"),
                cluster={"brokers": scenario.cluster.brokers, "config": config}, topic=vars(scenario.topic),
                workload=workload, faults=scenario.raw_faults, expect=vars(scenario.expect), notes=notes,
                wall_time_s=round(time.monotonic() - wall_started, 1))
    history.save(run_dir / report.HISTORY)
    results = report.render(run_dir)
    results["wall_time_s"] = round(time.monotonic() - wall_started, 1)
    return run_dir, results


async def _run(scenario: Scenario, target, seed: int, progress: Progress, notes: list[str],
               holder: dict[str, Any]) -> None:
    from client import Admin, NewTopic
    from client.rpc.cluster_link import ClusterLink
    from lab.rpc.faults import FaultClient

    topic = scenario.topic
    bootstrap = target.bootstrap_servers()
    async with Admin(bootstrap) as admin:
        await admin.create_topics([NewTopic(topic.name, topic.partitions, topic.replication_factor, topic.configs)])
        await admin.wait_for_topics([topic.name], timeout_ms=30_000)
    link = ClusterLink(bootstrap)
    faults = FaultClient()
    view = ClusterView(link, {name: target.address(name) for name in target.broker_names()}, topic.name)
    if not await view.wait_fully_replicated(SETTLE_TIMEOUT_S):
        notes.append("the topic was not fully replicated before the load started")
    states = await view.partitions() or {}
    history = History()  # time 0 = the load starts
    holder["history"] = history
    history.meta["initial_leaders"] = {p: (s.leader, s.leader_epoch) for p, s in states.items()}
    workload = Workload(history, bootstrap, scenario.workload, topic.name, topic.partitions)
    nemesis = Nemesis(target, view, faults, history, workload, topic.name, seed,
                      note=lambda text: setattr(progress, "note", text))
    started = time.monotonic()
    workload.start()
    schedule = [asyncio.ensure_future(_fault_task(nemesis, spec, started, notes)) for spec in scenario.faults]
    try:
        while (elapsed := time.monotonic() - started) < scenario.duration_s:
            progress.update(elapsed, history)
            await asyncio.sleep(0.2)
        progress.update(scenario.duration_s, history)
        progress.message("")
        for task in schedule:
            if not task.done():
                task.cancel()
        await asyncio.gather(*schedule, return_exceptions=True)
        progress.message("healing every fault, settling the producers")
        await nemesis.heal_all()
        await nemesis.ensure_all_up()
        history.meta["load_end_ms"] = history.now_ms()
        await workload.stop_producers(scenario.workload.delivery_timeout_ms)
        notes += [f"{p.name} stopped early: {p.error}" for p in workload.producers if p.error is not None]
        if not await view.wait_fully_replicated(SETTLE_TIMEOUT_S):
            notes.append(f"the cluster was not fully replicated {SETTLE_TIMEOUT_S:g} s after the heal")
        progress.message("reading every partition back")
        await read_back(history, bootstrap, topic.name, topic.partitions)
        history.meta["end_ms"] = history.now_ms()
    finally:
        await workload.stop_consumers()
        await faults.close()
        await link.close()


async def _fault_task(nemesis: Nemesis, spec, started: float, notes: list[str]) -> None:
    await asyncio.sleep(max(0.0, started + spec.at_s - time.monotonic()))
    try:
        fault = await nemesis.strike(spec)
        if spec.duration_s is not None and not fault.healed:
            await asyncio.sleep(max(0.0, started + spec.at_s + spec.duration_s - time.monotonic()))
            await nemesis.heal(fault)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        notes.append(f"fault {spec.describe()} at {spec.at_s:g}s failed: {exc}")
        nemesis.history.record_event("fault", "fault-failed", None, action=spec.action, error=str(exc))
