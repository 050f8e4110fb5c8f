"""``python -m lab.sim --seed N``: run one seeded scenario on the real cores, deterministically.

Prints a JSON report (with the trace's sha256, which is identical for identical seeds); with
``--trace FILE`` writes the whole trace as JSON lines. Exits 1, printing the replay command,
when the scenario or an invariant fails.
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback

from .scenarios import SCENARIOS, replay_command
from .scheduler import SimulationError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.sim", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--scenario", default="produce-and-check", choices=sorted(SCENARIOS))
    parser.add_argument("--brokers", type=int, default=3)
    parser.add_argument("--faults", action="store_true", help="also draw message loss and duplication from the seed")
    parser.add_argument("--trace", metavar="FILE", help="write the trace as JSON lines")
    args = parser.parse_args(argv)
    command = replay_command(args.scenario, args.seed)
    if args.brokers != 3:
        command += f" --brokers {args.brokers}"
    if args.faults:
        command += " --faults"
    try:
        cluster, report = SCENARIOS[args.scenario](args.seed, brokers=args.brokers, faults=args.faults)
    except SimulationError as exc:
        traceback.print_exc()
        print(f"FAILED seed {args.seed}: {exc}\nreplay: {command}", file=sys.stderr)
        return 1
    if args.trace:
        with open(args.trace, "wb") as handle:
            handle.write(cluster.trace.serialize())
    print(json.dumps(report.as_dict(), indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
