"""Run folders and seed swarms for ``brokerlab sim``: the engine behind cli/sim.py.

``run_one`` runs a catalog scenario (``lab.sim.scenarios``) or one of the lab's TOML experiments
(``lab.sim.experiments``) in-process and returns what the CLI prints, with the virtual time it
simulated and the wall time that took (the run and its judgement; not the folder); ``write_folder``
writes the run folder the real experiments write, for both kinds: ``history.jsonl``
(byte-identical for a seed), ``results.json``, ``summary.txt``, the plots and ``report.html`` of
``lab.experiment.report``. A catalog scenario's history gets the meta an experiment's has
(``lab.sim.catalog_meta``), and its report's "expected" section is the catalog's own judgement.
``swarm`` runs many seeds, one after the other or in worker processes, and yields each seed's
outcome as it is known.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from lab.experiment import plots, report
from lab.history import History
from lab.sim.catalog_meta import catalog_meta
from lab.sim.scenarios import FAILOVER_SCENARIOS, SCENARIOS, run_scenario

SIM_EXPERIMENT_TARGET = "sim"


@dataclass
class SimRun:
    """One seeded run, as the CLI shows it; ``history`` / ``experiment`` are dropped in swarms."""

    kind: str  # "scenario" | "experiment"
    name: str
    seed: int
    faults: bool
    as_expected: bool
    verdict: str
    problem: str | None
    virtual_ms: int
    wall_s: float
    results: dict[str, Any] = field(default_factory=dict)
    history: Any = None
    duration_s: float | None = None
    events: int = 0  # scheduler events run

    @property
    def speed(self) -> float:
        """Simulated seconds per wall second (the "x real time" of the run)."""
        return self.virtual_ms / 1000 / self.wall_s if self.wall_s > 0 else 0.0

    def speed_line(self) -> str:
        return (f"{self.virtual_ms / 1000:.1f} s simulated in {self.wall_s:.2f} s wall, {self.speed:.0f}x real time "
                f"({self.events} events)")

    def sim_facts(self) -> dict[str, Any]:
        return {"virtual_ms": self.virtual_ms, "wall_s": self.wall_s, "speed_x": round(self.speed, 1),
                "events": self.events, "problem": self.problem}

    def replay_command(self) -> str:
        if self.kind == "experiment":
            command = f"brokerlab sim run --experiment {self.name} --seed {self.seed}"
            return command + (f" --duration {self.duration_s:g}" if self.duration_s is not None else "")
        return f"brokerlab sim run --scenario {self.name} --seed {self.seed}" + (" --faults" if self.faults else "")

    def folder_name(self) -> str:
        return _folder_name(self.kind, self.name, self.seed, self.faults)


def scenario_names() -> list[str]:
    return sorted(SCENARIOS)


def experiment_names() -> list[tuple[str, str | None]]:
    """The lab's TOML experiments with, for each, why the simulator cannot run it (None: it can)."""
    from lab.experiment.scenario import builtins
    from lab.sim.experiments import ExperimentUnsupported, check_supported

    out = []
    for scenario in builtins():
        try:
            check_supported(scenario)
            out.append((scenario.name, None))
        except ExperimentUnsupported as exc:
            out.append((scenario.name, exc.message))
    return out


def run_one(name: str, seed: int, *, experiment: bool = False, faults: bool = False,
            duration_s: float | None = None, details: bool = True) -> SimRun:
    """Run a catalog scenario (or, with ``experiment``, a TOML experiment: name or path).
    Unknown names raise KeyError / ScenarioError; everything else ends up in the result.
    Without ``details`` (swarms) a scenario's history meta and results are left out."""
    started = time.perf_counter()
    if experiment:
        return _run_experiment(name, seed, duration_s, started)
    if name not in SCENARIOS:
        raise KeyError(name)
    run = run_scenario(name, seed, faults=faults)
    wall_s = time.perf_counter() - started
    meta = catalog_meta(run, _folder_name("scenario", name, seed, faults)) if details else None
    if meta is not None:  # before as_dict: the history's digest covers the history as written
        run.report.failover.history.meta.update(meta)
    failover = run.report.failover
    ok = run.ok
    problem = None if ok else f"{type(run.error).__name__}: {run.error}"
    verdict = "AS EXPECTED" if ok else f"NOT AS EXPECTED: {problem.splitlines()[0] if problem else ''}"
    if failover is not None and failover.verdict is not None:
        checked = failover.verdict
        verdict += f" (checker: {checked.result.summary().split(' (')[0]}"
        verdict += f"; {checked.promise.lines()[0]})" if checked.promise is not None else ")"
    scheduler = run.cluster.scheduler if run.cluster is not None else None
    result = SimRun("scenario", name, seed, faults, ok, verdict, problem, scheduler.elapsed_ms() if scheduler else 0,
                    round(wall_s, 3), history=failover.history if failover else None,
                    events=scheduler.events_run if scheduler else 0)
    if not details:
        return result
    facts = run.report.as_dict()
    result.results = {"scenario": name, "target": SIM_EXPERIMENT_TARGET, "seed": seed, "message_faults": faults,
                      "doc": SCENARIOS[name].doc, "expected": {"as_expected": ok, "problem": problem},
                      "verdict": verdict, "replay": result.replay_command(), **facts}
    return result


def _run_experiment(name: str, seed: int, duration_s: float | None, started: float) -> SimRun:
    from lab.experiment.scenario import load
    from lab.sim.experiments import run_experiment

    scenario = load(name)
    if duration_s is not None:
        scenario = scenario.with_duration(duration_s)
    run = run_experiment(scenario, seed)
    wall_s = time.perf_counter() - started
    analysis = run.analysis or {}
    ok = run.as_expected
    if run.error is not None:
        problem: str | None = f"{type(run.error).__name__}: {run.error}"
    else:
        differences = analysis.get("expected", {}).get("differences", [])
        problem = "; ".join(differences) or None
    verdict = (analysis.get("verdict_lines") or ["no verdict (the run failed)"])[0]
    cluster = run.cluster
    virtual_ms = cluster.scheduler.elapsed_ms() if cluster is not None else 0
    result = SimRun("experiment", name, seed, False, ok, verdict, problem, virtual_ms, round(wall_s, 3),
                    dict(analysis), run.history, duration_s=duration_s,
                    events=cluster.scheduler.events_run if cluster is not None else 0)
    result.results.setdefault("seed", seed)
    result.results["replay"] = result.replay_command()
    return result


def _folder_name(kind: str, name: str, seed: int, faults: bool) -> str:
    if kind == "experiment":
        return f"sim-experiment-{Path(name).stem}-{seed}"
    return f"sim-{name}-{seed}" + ("-faults" if faults else "")


def write_folder(run: SimRun, out: Path) -> Path:
    """The run folder under ``out`` (named by scenario and seed; rewritten by a replay)."""
    folder = Path(out) / run.folder_name()
    folder.mkdir(parents=True, exist_ok=True)
    if run.history is None or not run.history.meta.get("topic"):  # nothing to report on (produce-and-check)
        (folder / "results.json").write_text(json.dumps({**run.results, "sim": run.sim_facts()}, indent=2,
                                                        sort_keys=True, default=str) + "\n")
        (folder / "summary.txt").write_text(summary_text(run) + "\n")
        return folder
    run.history.save(folder / report.HISTORY)
    # As ``brokerlab experiment report`` re-renders it: from the file alone.
    results, history, checked, timeline = report.analyze(History.load(folder / report.HISTORY))
    if run.kind == "scenario":
        # The catalog judges with its own checks (lab.sim.verdict) on top of the promise.
        results["expected"] = {**results["expected"], "as_expected": run.as_expected,
                               "differences": [run.problem] if run.problem else []}
        results["catalog"] = run.results
    meta = history.meta
    pngs = plots.render_all(history, timeline, checked, meta["topic"]["name"], int(meta["topic"]["partitions"]),
                            folder)
    results["plots"] = [png.name for png in pngs]
    results["replay"] = run.replay_command()
    results["sim"] = run.sim_facts()
    text = report.summary_text(results)
    if run.kind == "scenario":
        text += "\n\n" + summary_text(run)
    (folder / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    (folder / "summary.txt").write_text(text + "\n")
    (folder / "report.html").write_text(report.html_report(results, pngs))
    run.results = results
    return folder


def summary_text(run: SimRun) -> str:
    """The catalog's own account of a scenario run (steps, verdict, digest, replay)."""
    r = run.results.get("catalog", run.results)
    lines = [f"sim {run.kind} {run.name} (seed {run.seed}{', --faults' if run.faults else ''}): {run.speed_line()}"]
    if r.get("doc"):
        lines.append(f"  {r['doc']}")
    lines += ["", f"sends {r.get('produced', '-')}: acknowledged {r.get('acked', '-')}, failed {r.get('failed', '-')}; "
              f"read back {r.get('read', '-')}", f"verdict: {run.verdict}"]
    for problem in r.get("problems", [])[:10]:
        lines.append(f"  problem: {problem}")
    steps = r.get("failover", {}).get("steps", [])
    if steps:
        lines += ["", "steps:", *(f"  {step}" for step in steps)]
    lines += ["", f"history sha256 {r.get('history_sha256', '-')}", f"replay: {run.replay_command()}"]
    return "\n".join(lines)


# -- swarm ------------------------------------------------------------------------------------
def swarm_names(scenario: str) -> list[str]:
    """``all``: every catalog scenario (produce-and-check too); otherwise the one named."""
    if scenario == "all":
        return ["produce-and-check", *FAILOVER_SCENARIOS]
    if scenario not in SCENARIOS:
        raise KeyError(scenario)
    return [scenario]


def _one(job: tuple[str, int, bool]) -> SimRun:
    name, seed, faults = job
    try:
        run = run_one(name, seed, faults=faults, details=False)
    except Exception as exc:  # noqa: BLE001 - a harness crash is a failing seed too, with its replay
        run = SimRun("scenario", name, seed, faults, False, "crashed", f"{type(exc).__name__}: {exc}", 0, 0.0)
    run.history, run.results = None, {}
    return run


def swarm(names: list[str], seeds: range, faults: bool = False, jobs: int = 1) -> Iterator[SimRun]:
    """Every (seed, scenario) pair, seed-major; results come back in that order."""
    work = [(name, seed, faults) for seed in seeds for name in names]
    if jobs <= 1:
        yield from map(_one, work)
        return
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        yield from pool.map(_one, work, chunksize=4)
