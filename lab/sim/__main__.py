"""``python -m lab.sim --seed N``: run one seeded scenario on the real cores, deterministically.

Prints a JSON report (with the trace's sha256, identical for identical seeds); ``--trace FILE``
writes the whole trace as JSON lines, also when the run failed. Exits 1, printing the error and
the replay command, when the scenario, an invariant or a core fails.
"""

from __future__ import annotations

import argparse
import json
import sys

from .scenarios import SCENARIOS, run_scenario


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.sim", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--scenario", default="produce-and-check", choices=sorted(SCENARIOS))
    parser.add_argument("--brokers", type=int, default=3)
    parser.add_argument("--faults", action="store_true", help="also draw message loss and duplication from the seed")
    parser.add_argument("--trace", metavar="FILE", help="write the trace as JSON lines")
    args = parser.parse_args(argv)
    run = run_scenario(args.scenario, args.seed, brokers=args.brokers, faults=args.faults)
    if args.trace and run.cluster is not None:
        with open(args.trace, "wb") as handle:
            handle.write(run.cluster.trace.serialize())
    print(json.dumps(run.report.as_dict(), indent=2, sort_keys=True))
    if not run.ok:
        print(f"FAILED {run.describe_failure()}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
