"""``brokerlab experiment list|run|report``: parsing and printing around lab/experiment."""

from __future__ import annotations

import argparse
from pathlib import Path

from cli.common import EXIT_FAILED, EXIT_OK, usage_error
from cli.output import print_json


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("experiment", help="failover experiments: a cluster of its own, a load, faults, "
                                 "a checked history and a report")
    sub = parser.add_subparsers(dest="experiment_command", metavar="{list,run,report}", required=True)

    listing = sub.add_parser("list", help="the built-in scenarios with their expected verdicts")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=cmd_list)

    run = sub.add_parser("run", help="run a scenario (a built-in name or the path of a .toml file)")
    run.add_argument("scenario", metavar="NAME|FILE")
    run.add_argument("--target", choices=("local", "compose"), default="local",
                     help="local processes (default) or the docker-compose cluster of deploy/")
    run.add_argument("--duration", help="length of the load, e.g. 30s (default: the scenario's)")
    run.add_argument("--seed", type=int, help="seed of every choice the run makes (default: random, printed)")
    run.add_argument("--acks", choices=("0", "1", "all", "-1"), help="override the scenario's acks")
    run.add_argument("--idempotence", action=argparse.BooleanOptionalAction, default=None,
                     help="override the scenario's enable.idempotence (default on; in effect with acks=all)")
    run.add_argument("--out", type=Path, default=Path("runs"), help="where run folders go (default runs/)")
    run.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    run.add_argument("--json", action="store_true", help="print results.json instead of the summary")
    run.set_defaults(func=cmd_run)

    rerender = sub.add_parser("report", help="re-render a finished run folder (results, summary, plots, HTML)")
    rerender.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    rerender.add_argument("--json", action="store_true")
    rerender.set_defaults(func=cmd_report)


def cmd_list(args: argparse.Namespace) -> int:
    from lab.experiment.scenario import builtins

    scenarios = builtins()
    if args.json:
        print_json([{"name": s.name, "duration_s": s.duration_s, "expect": vars(s.expect), "description": s.description,
                     "faults": s.raw_faults, "acks": s.workload.acks} for s in scenarios])
        return EXIT_OK
    width = max(len(s.name) for s in scenarios)
    print(f"{'SCENARIO':{width}}  EXPECTED                      DESCRIPTION")
    for s in scenarios:
        expect = s.expect.verdict + (" " + ",".join(f"{k}{v if v[0] in '<>=' else '=' + v}"
                                                     for k, v in s.expect.anomalies.items()) if s.expect.anomalies else "")
        first = s.description.split(". ")[0].rstrip(".")
        print(f"{s.name:{width}}  {expect:28}  {first}")
    print("\nrun one: brokerlab experiment run NAME [--duration 30s] [--seed N] [--acks 1]; "
          "copy lab/scenarios/NAME.toml to edit your own")
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    from lab.experiment.report import summary_text
    from lab.experiment.runner import RunOptions, run_experiment
    from lab.experiment.scenario import ScenarioError, load, parse_seconds

    try:
        scenario = load(args.scenario)
        duration = parse_seconds(args.duration, "--duration") if args.duration else None
    except ScenarioError as exc:
        raise usage_error(exc.message) from None
    if duration is not None and duration <= 0:
        raise usage_error("--duration must be positive")
    options = RunOptions(target=args.target, duration_s=duration, seed=args.seed, acks=args.acks,
                         idempotence=args.idempotence, out=args.out, progress=not args.no_progress)
    run_dir, results = run_experiment(scenario, options)
    if args.json:
        print_json(results)
    else:
        print(summary_text(results))
        print(f"\nrun folder: {run_dir} (report.html, summary.txt, results.json, history.jsonl, *.png); "
              f"wall time {results['wall_time_s']} s")
    return EXIT_OK if results["expected"]["as_expected"] else EXIT_FAILED


def cmd_report(args: argparse.Namespace) -> int:
    from lab.experiment.report import HISTORY, render, summary_text

    if not (args.run_dir / HISTORY).is_file():
        raise usage_error(f"{args.run_dir} is not a run folder (no {HISTORY})")
    results = render(args.run_dir)
    if args.json:
        print_json(results)
    else:
        print(summary_text(results))
        print(f"\nre-rendered {args.run_dir}/report.html")
    return EXIT_OK if results["expected"]["as_expected"] else EXIT_FAILED
