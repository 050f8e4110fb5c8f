"""``brokerlab sim list|run|swarm``: parsing and printing around lab/sim (the deterministic simulator)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from cli.common import EXIT_FAILED, EXIT_OK, usage_error
from cli.output import print_json


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("sim", help="the deterministic simulator: the real cores in-process on a seeded "
                                 "network, disk and clock; same seed, same history")
    sub = parser.add_subparsers(dest="sim_command", metavar="{list,run,swarm,bench}", required=True)

    listing = sub.add_parser("list", help="the catalog scenarios and the lab experiments the simulator runs")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=cmd_list)

    run = sub.add_parser("run", help="run one scenario (or lab experiment) for one seed and write its run folder")
    what = run.add_mutually_exclusive_group(required=True)
    what.add_argument("--scenario", metavar="NAME", help="a catalog scenario (see: brokerlab sim list)")
    what.add_argument("--experiment", metavar="NAME|FILE", help="a lab experiment (lab/scenarios/*.toml or a path)")
    run.add_argument("--seed", type=int, required=True, help="the seed every choice of the run is drawn from")
    run.add_argument("--faults", action="store_true", help="also draw message loss from the seed (scenarios)")
    run.add_argument("--duration", type=float, metavar="S", help="an experiment's load in seconds (default: its own)")
    run.add_argument("--out", type=Path, default=Path("runs"), help="where run folders go (default runs/)")
    run.add_argument("--json", action="store_true", help="print results.json instead of the summary")
    run.set_defaults(func=cmd_run)

    swarm = sub.add_parser("swarm", help="many seeds, each with its own fault schedule and network knobs; "
                           "prints every failing seed's replay command")
    swarm.add_argument("--seeds", type=int, required=True, metavar="N", help="how many seeds")
    swarm.add_argument("--first-seed", type=int, default=0, metavar="S", help="the first seed (default 0)")
    swarm.add_argument("--scenario", default="all", metavar="NAME|all", help="one catalog scenario or all (default)")
    swarm.add_argument("--faults", action="store_true", help="also draw message loss from each seed")
    swarm.add_argument("--jobs", type=int, default=1, metavar="J", help="worker processes (default 1)")
    swarm.add_argument("--no-progress", action="store_true", help="no progress line on stderr")
    swarm.set_defaults(func=cmd_swarm)

    bench = sub.add_parser("bench", help="how fast the simulator runs a loaded 3-broker cluster "
                           "(steady state, simulated seconds per CPU second)")
    bench.add_argument("--rates", default="1,50,300", metavar="R,R,...",
                       help="loads in records/s, keyed, acks=all (default 1,50,300)")
    bench.add_argument("--seconds", type=float, default=30.0, metavar="S",
                       help="simulated seconds of steady load measured per rate and seed (default 30)")
    bench.add_argument("--seeds", type=int, default=1, metavar="N", help="seeds per rate (default 1)")
    bench.add_argument("--partitions", type=int, default=3, metavar="P", help="topic partitions (default 3)")
    bench.add_argument("--json", action="store_true", help="print one JSON object per measurement")
    bench.set_defaults(func=cmd_bench)


def cmd_list(args: argparse.Namespace) -> int:
    from lab.sim.scenarios import SCENARIOS
    from lab.sim_runs import experiment_names

    experiments = experiment_names()
    if args.json:
        print_json({"scenarios": [{"name": n, "doc": s.doc} for n, s in sorted(SCENARIOS.items())],
                    "experiments": [{"name": n, "runs_in_sim": why is None, "why_not": why} for n, why in experiments]})
        return EXIT_OK
    width = max(len(n) for n in [*SCENARIOS, *(n for n, _ in experiments)])
    print("SCENARIOS (brokerlab sim run --scenario NAME --seed N)")
    for name, scenario in sorted(SCENARIOS.items()):
        print(f"  {name:{width}}  {scenario.doc.split(': ')[0]}")
    print("\nEXPERIMENTS (brokerlab sim run --experiment NAME --seed N)")
    for name, why in experiments:
        print(f"  {name:{width}}  {'yes' if why is None else 'not in the simulator: ' + why}")
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    from lab.experiment.scenario import ScenarioError
    from lab.sim_runs import run_one, scenario_names, write_folder

    if args.scenario is not None and args.scenario not in scenario_names():
        raise usage_error(f"unknown scenario {args.scenario!r} (known: {', '.join(scenario_names())})")
    if args.duration is not None and (args.scenario is not None or args.duration <= 0):
        raise usage_error("--duration is for --experiment and must be positive")
    try:
        run = run_one(args.experiment or args.scenario, args.seed, experiment=args.experiment is not None,
                      faults=args.faults, duration_s=args.duration)
    except ScenarioError as exc:  # unknown experiment, bad TOML, or something the simulator does not model
        raise usage_error(exc.message) from None
    written = time.perf_counter()
    folder = write_folder(run, args.out)
    written_s = time.perf_counter() - written
    if args.json:
        print_json(run.results)
    else:
        summary = (folder / "summary.txt").read_text() if (folder / "summary.txt").is_file() else ""
        print("\n".join(line for line in summary.rstrip().splitlines() if not line.startswith("replay:")).rstrip())
        print(f"\n{'AS EXPECTED' if run.as_expected else 'NOT AS EXPECTED'}: {run.kind} {run.name} seed {run.seed}"
              f" ({run.speed_line()})")
        if run.problem:
            print(f"problem: {run.problem.splitlines()[0]}")
        files = sorted(p.name for p in folder.iterdir())
        print(f"run folder: {folder} ({', '.join(files)}; written in {written_s:.2f} s)")
        print(f"replay: {run.replay_command()}")
    return EXIT_OK if run.as_expected else EXIT_FAILED


def cmd_swarm(args: argparse.Namespace) -> int:
    from lab.sim_runs import swarm, swarm_names

    if args.seeds <= 0 or args.jobs <= 0:
        raise usage_error("--seeds and --jobs must be positive")
    try:
        names = swarm_names(args.scenario)
    except KeyError:
        raise usage_error(f"unknown scenario {args.scenario!r} (a catalog name or all; see: brokerlab sim list)") from None
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    total = len(seeds) * len(names)
    progress = not args.no_progress and sys.stderr.isatty()
    failures = []
    virtual_ms = 0
    started = time.perf_counter()
    for done, run in enumerate(swarm(names, seeds, faults=args.faults, jobs=args.jobs), 1):
        virtual_ms += run.virtual_ms
        if not run.as_expected:
            failures.append(run)
            if progress:
                sys.stderr.write("\r\033[K")
            print(f"FAIL {run.name} seed {run.seed}: {(run.problem or run.verdict).splitlines()[0][:200]}\n"
                  f"  replay: {run.replay_command()}", flush=True)
        if progress:
            sys.stderr.write(f"\r[{done}/{total}] seed {run.seed} {run.name:<22} failures {len(failures)}"
                             f"  {time.perf_counter() - started:6.1f} s")
            sys.stderr.flush()
    if progress:
        sys.stderr.write("\r\033[K")
    wall = time.perf_counter() - started
    ratio = virtual_ms / 1000 / wall if wall > 0 else 0.0
    print(f"swarm: {len(seeds)} seeds x {len(names)} scenario(s) = {total} runs"
          f"{' with --faults' if args.faults else ''}, {len(failures)} failed; wall time {wall:.1f} s, "
          f"{virtual_ms / 1000:.0f} s simulated ({ratio:.0f} simulated s per wall s)")
    if failures:
        print(f"failing seeds: {', '.join(f'{r.name}/{r.seed}' for r in failures[:50])}"
              + (" ..." if len(failures) > 50 else ""))
    return EXIT_FAILED if failures else EXIT_OK


def cmd_bench(args: argparse.Namespace) -> int:
    from lab.sim_bench import measure, timings
    from lab.sim.scheduler import SimulationError

    try:
        rates = [float(r) for r in args.rates.split(",")]
    except ValueError:
        raise usage_error(f"--rates takes numbers separated by commas, not {args.rates!r}") from None
    if any(r <= 0 for r in rates) or args.seconds <= 0 or args.seeds <= 0 or args.partitions <= 0:
        raise usage_error("--rates, --seconds, --seeds and --partitions must be positive")
    if not args.json:
        settings = ", ".join(f"{k}={v}" for k, v in timings().items())
        print(f"steady load on 3 brokers, RF 3, min ISR 2, acks=all idempotent, {args.partitions} partitions, "
              f"1 consumer; {settings}; invariants after every event")
        print(f"{'records/s':>9} {'seed':>4} {'events/s':>8} {'us/event':>8} {'x real (cpu)':>12} {'x real (wall)':>13}")
    for rate in rates:
        for seed in range(1, args.seeds + 1):
            try:
                speed = measure(rate, args.seconds, seed=seed, partitions=args.partitions)
            except SimulationError as exc:
                print(f"FAILED: {exc}".splitlines()[0], file=sys.stderr)
                return EXIT_FAILED
            if args.json:
                print(json.dumps(speed.as_dict(), sort_keys=True), flush=True)
            else:
                print(f"{rate:>9g} {seed:>4} {speed.events_per_s:>8.0f} {speed.cpu_us_per_event:>8.1f} "
                      f"{speed.times_real_time_cpu:>11.0f}x {speed.times_real_time_wall:>12.0f}x", flush=True)
    return EXIT_OK
