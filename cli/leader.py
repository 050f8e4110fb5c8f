"""``brokerlab leader elect``: preferred or unclean leader election on demand (kafka-leader-election).

    brokerlab leader elect                                   # preferred, every partition
    brokerlab leader elect --topic orders                    # preferred, every partition of orders
    brokerlab leader elect --topic orders --partition 2 --type unclean

Exit 0 when every named partition got its leader or needed nothing (ELECTION_NOT_NEEDED); 1 when
any could not be elected (the first such error is printed as the error line).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any, Callable

from brokerlab.errors import ErrorCode, error_name
from cli.common import EXIT_FAILED, EXIT_OK, add_bootstrap_argument, bootstrap_of, print_error, usage_error
from cli.output import print_json, table


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("leader", help="leader elections (preferred or unclean)")
    sub = parser.add_subparsers(dest="leader_command", metavar="{elect}", required=True)
    elect = sub.add_parser(
        "elect",
        help="elect leaders: the preferred replica (default) or, for a leaderless partition, any live replica",
        description="Ask the controller for a preferred or unclean leader election. Without --topic: every "
        "partition of every topic (those that need nothing are left out of the answer).",
    )
    elect.add_argument("--topic", help="only this topic (default: all topics)")
    elect.add_argument("--partition", type=int, help="only this partition of --topic (default: all of them)")
    elect.add_argument("--type", choices=("preferred", "unclean"), default="preferred",
                       help="preferred: move leadership back to the first replica if it is in the ISR; "
                            "unclean: give a leaderless partition a live replica, even out of the ISR "
                            "(may lose acknowledged records)")
    elect.add_argument("--json", action="store_true", help="print JSON (shape in README)")
    add_bootstrap_argument(elect)
    elect.set_defaults(func=cmd_elect)


def partitions_of(args: argparse.Namespace) -> list | None:
    if args.partition is not None and args.topic is None:
        raise usage_error("--partition needs --topic")
    if args.partition is not None and args.partition < 0:
        raise usage_error("--partition must not be negative")
    if args.topic is None:
        return None
    return [args.topic] if args.partition is None else [(args.topic, args.partition)]


async def elect(bootstrap: list[str], election_type: str, partitions: list | None,
                admin_factory: Callable[[list[str]], Any] | None = None) -> list:
    if admin_factory is None:
        from client import Admin as admin_factory
    admin = admin_factory(bootstrap)
    try:
        return await admin.elect_leaders(election_type, partitions)
    finally:
        await admin.close()


def outcome(result) -> str:
    if result.error is None:
        return "elected"
    if result.error.code == ErrorCode.ELECTION_NOT_NEEDED:
        return "not needed"
    return error_name(result.error.code)


def results_json(election_type: str, results: list) -> dict:
    return {
        "election_type": election_type,
        "results": [
            {
                "topic": r.topic,
                "partition": r.partition,
                "outcome": outcome(r),
                "error": None if r.error is None else error_name(r.error.code),
                "leader": r.leader,
                "leader_epoch": r.leader_epoch,
            }
            for r in results
        ],
    }


def failures(results: list) -> list:
    return [r for r in results if r.error is not None and r.error.code != ErrorCode.ELECTION_NOT_NEEDED]


def cmd_elect(args: argparse.Namespace) -> int:
    partitions = partitions_of(args)
    results = asyncio.run(elect(bootstrap_of(args), args.type, partitions))
    if args.json:
        print_json(results_json(args.type, results))
    elif not results:
        print(f"no {args.type} election needed: every partition already has the leader it should")
    else:
        rows = [[r.topic, r.partition, outcome(r), r.leader, r.leader_epoch] for r in results]
        print(table(["TOPIC", "PARTITION", "RESULT", "LEADER", "LEADER_EPOCH"], rows))
    failed = failures(results)
    if failed:
        first = failed[0]
        message = f"{len(failed)} of {len(results)} partitions got no {args.type} leader; first: {first.error.message}"
        print_error(error_name(first.error.code), message, sys.stderr)
        return EXIT_FAILED
    return EXIT_OK
