"""The ``brokerlab`` command: builds the parser from one module per command group and turns
every failure into one ``error: <KAFKA_CODE_NAME>: message`` line and an exit code."""

from __future__ import annotations

import argparse
import os
import sys

from cli import bench, cluster, consume, demo, experiment, leader, produce, sim, topic
from cli import group as consumer_groups
from cli.common import EXIT_INTERRUPTED, report, usage_error

GROUPS = (cluster, topic, leader, produce, consume, consumer_groups, bench, experiment, sim, demo)


class Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one error line (exit 2), like every other error."""

    def error(self, message: str):  # type: ignore[override]
        raise usage_error(f"{message} (see: {self.prog} --help)")


def build_parser() -> Parser:
    parser = Parser(
        prog="brokerlab",
        description="brokerlab: a Kafka-style replicated log cluster to learn from and experiment on.",
        epilog="Exit codes: 0 ok, 1 failed, 2 bad usage or no cluster found, 130 interrupted.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for group in GROUPS:
        group.register(commands)
    return parser


def run(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return args.func(args)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except SystemExit as exc:  # --help / --version
        return exc.code if isinstance(exc.code, int) else 0
    except BrokenPipeError:
        # `brokerlab consume ... | head`: the reader left; not an error of ours.
        _silence_stdout()
        return 0
    except BaseException as exc:  # noqa: BLE001 - the one place that turns anything into one line
        if os.environ.get("BROKERLAB_DEBUG"):
            import traceback

            traceback.print_exc()
        return report(exc)


def _silence_stdout() -> None:
    # Python flushes stdout at exit; a closed pipe would then print a traceback.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except OSError:
        pass


def main(argv: list[str] | None = None) -> None:
    sys.exit(run(argv))


if __name__ == "__main__":
    main()
