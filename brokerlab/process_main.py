"""What ``python -m node`` and ``python -m controller`` share around their ``serve`` coroutine:
argument errors in one line, the configuration flags, binding the listener, stopping on
SIGTERM/SIGINT, logfmt logging, and the exit codes.

Exit codes: 2 for bad flags or configuration (one line on stderr, nothing started); 1 for any
other start-up or run failure (a ``<Node>Failed`` logfmt event, then one line on stderr, no
traceback: the cluster runner shows the log tail); otherwise what ``serve`` returns (0 after
SIGTERM/SIGINT, or KeyboardInterrupt).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path
from typing import Awaitable, Callable, NoReturn, Protocol, TypeVar

from brokerlab.config import ConfigError, parse_pairs, read_properties
from brokerlab.logfmt import EventLog, LogfmtHandler

Config = TypeVar("Config")


class StartupError(Exception):
    """A problem with the listener or the data directory: one line, exit 1."""


class OneLineArgumentParser(argparse.ArgumentParser):
    """``python -m <process>``'s flags; a bad one is one line on stderr and exit 2 (argparse
    would print the usage too)."""

    def __init__(self, process: str, description: str) -> None:
        super().__init__(prog=f"python -m {process}", description=description)
        self.process = process

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.process}: error: {message}\n")
        sys.exit(2)


class Server(Protocol):
    def add_insecure_port(self, address: str) -> int: ...


def read_config_flags(config_file: str | None, pairs: list[str]) -> dict[str, str]:
    """``--config-file F`` (Kafka-style properties), then each ``--config key=value`` over it."""
    raw: dict[str, str] = {}
    if config_file:
        try:
            raw.update(read_properties(Path(config_file).read_text()))
        except OSError as exc:
            raise ConfigError(f"cannot read --config-file: {exc.strerror}: {config_file}") from None
    raw.update(parse_pairs(pairs))
    return raw


def bind_listener(server: Server, listen: str) -> int:
    """The port ``server`` bound for ``--listen HOST:PORT`` (port 0: any free one); StartupError
    if it cannot bind."""
    try:
        port = server.add_insecure_port(listen)
    except RuntimeError as exc:
        raise StartupError(f"cannot listen on {listen}: {exc}") from None
    if port == 0:
        raise StartupError(f"cannot listen on {listen}")
    return port


def stop_on_signals() -> tuple[asyncio.Event, list[str]]:
    """An event that each SIGTERM or SIGINT sets (on the running loop), and the names of the
    signals received so far, oldest first."""
    stop = asyncio.Event()
    received: list[str] = []

    def on_signal(signum: signal.Signals) -> None:
        received.append(signum.name)
        stop.set()

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    return stop, received


def run_process(
    process: str,
    events: EventLog,
    failed_event: str,
    read_config: Callable[[], Config],
    serve: Callable[[Config], Awaitable[int]],
) -> int:
    """``read_config()`` (a ConfigError: exit 2), route ``logging`` into ``events``, then run
    ``serve(config)`` on a new event loop and turn its failures into ``failed_event`` + exit 1."""
    try:
        config = read_config()
    except ConfigError as exc:
        sys.stderr.write(f"{process}: error: {exc}\n")
        return 2
    logging.basicConfig(level=logging.INFO, handlers=[LogfmtHandler(events)], force=True)
    try:
        return asyncio.run(serve(config))
    except KeyboardInterrupt:
        return 0
    except StartupError as exc:
        error = str(exc)
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
    events.emit(failed_event, "error", error=error)
    sys.stderr.write(f"{process}: error: {error}\n")
    return 1
