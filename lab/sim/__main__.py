"""``python -m lab.sim --scenario NAME --seed N``: run one seeded scenario on the real cores, deterministically.

Prints a JSON report (with the trace's sha256, and for failover scenarios the history's, both
identical for identical seeds); ``--trace FILE`` writes the whole trace as JSON lines and
``--history FILE`` the failover history (lab.history's format), also when the run failed;
``--list`` names the scenarios. Exits 1, printing the error and the replay command, when the
scenario, an invariant or a core fails.

``--experiment NAME|PATH --seed N [--duration S]`` runs one of the lab's experiment scenarios
(lab/scenarios/*.toml) on the simulator instead and prints the experiments' summary;
``--report DIR`` also writes the experiments' report folder (history.jsonl, results.json,
summary, plots, report.html) for it.
"""

from __future__ import annotations

import argparse
import json
import sys

from .scenarios import SCENARIOS, run_scenario


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.sim", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int)
    parser.add_argument("--scenario", default="produce-and-check", choices=sorted(SCENARIOS))
    parser.add_argument("--brokers", type=int, default=None, help="broker count (default: the scenario's)")
    parser.add_argument("--faults", action="store_true", help="also draw message loss and duplication from the seed")
    parser.add_argument("--trace", metavar="FILE", help="write the trace as JSON lines")
    parser.add_argument("--history", metavar="FILE", help="write a failover scenario's history as JSON lines")
    parser.add_argument("--skip-check", action="append", default=[], metavar="NAME",
                        help="leave out one invariant check (e.g. to look past a known bug)")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    parser.add_argument("--experiment", metavar="NAME|PATH", help="run a lab experiment scenario (TOML) instead")
    parser.add_argument("--duration", type=float, help="the experiment's duration in seconds (default: its own)")
    parser.add_argument("--report", metavar="DIR", help="write the experiment's report folder")
    args = parser.parse_args(argv)
    if args.list:
        for name, scenario in sorted(SCENARIOS.items()):
            print(f"{name}: {scenario.doc}")
        return 0
    if args.seed is None:
        parser.error("--seed is required")
    if args.experiment:
        return run_experiment_cli(args)
    run = run_scenario(args.scenario, args.seed, brokers=args.brokers, faults=args.faults,
                       skip_checks=frozenset(args.skip_check))
    if args.trace and run.cluster is not None:
        with open(args.trace, "wb") as handle:
            handle.write(run.cluster.trace.serialize())
    if args.history and run.report.failover is not None:
        run.report.failover.history.save(args.history)
    print(json.dumps(run.report.as_dict(), indent=2, sort_keys=True))
    if not run.ok:
        print(f"FAILED {run.describe_failure()}", file=sys.stderr)
        return 1
    return 0


def run_experiment_cli(args: argparse.Namespace) -> int:
    from pathlib import Path

    from lab.experiment import report
    from lab.experiment.scenario import load

    from .experiments import run_experiment

    scenario = load(args.experiment)
    if args.duration:
        scenario = scenario.with_duration(args.duration)
    run = run_experiment(scenario, args.seed, skip_checks=frozenset(args.skip_check))
    if args.trace and run.cluster is not None:
        Path(args.trace).write_bytes(run.cluster.trace.serialize())
    if run.history is not None and (args.history or args.report):
        if args.report:
            folder = Path(args.report)
            folder.mkdir(parents=True, exist_ok=True)
            run.history.save(folder / report.HISTORY)
            report.render(folder)
        if args.history:
            run.history.save(args.history)
    if run.analysis is not None:
        print(report.summary_text(run.analysis))
    if run.error is not None or not run.as_expected:
        problem = run.error if run.error is not None else run.analysis["expected"]["differences"]
        print(f"FAILED seed {args.seed}: {problem}\n  replay: {run.replay_command()}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
