"""What every command shares: finding the cluster, turning any failure into one error line.

Exit codes (scripts rely on them): 0 success; 1 the operation failed (a Kafka error, records
not acknowledged, an unhealthy cluster); 2 bad usage or no cluster to talk to; 130 Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, Awaitable, Callable, Mapping, TextIO, TypeVar

from brokerlab.config import ConfigError
from brokerlab.errors import ErrorCode, KafkaError, error_name

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
BOOTSTRAP_ENV = "BROKERLAB_BOOTSTRAP"
T = TypeVar("T")


class CliError(Exception):
    """A failure found by the CLI itself, printed as ``error: <CODE>: message``."""

    def __init__(self, code: int, message: str, exit_code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.exit_code = exit_code


def usage_error(message: str) -> CliError:
    return CliError(ErrorCode.INVALID_REQUEST, message, EXIT_USAGE)


# ---- cluster discovery -------------------------------------------------------------------------


def add_bootstrap_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--bootstrap", action="append", metavar="HOST:PORT", default=None,
        help=f"a broker to start from (repeatable); default: ${BOOTSTRAP_ENV}, then the local cluster",
    )


def split_addresses(values: list[str] | str) -> list[str]:
    """``["a:1,b:2", "c:3"]`` -> ``["a:1", "b:2", "c:3"]``, each checked to be host:port."""
    if isinstance(values, str):
        values = [values]
    addresses = [part.strip() for value in values for part in value.split(",") if part.strip()]
    for address in addresses:
        host, sep, port = address.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise usage_error(f"bad bootstrap address {address!r}: expected host:port")
    return addresses


def resolve_bootstrap(
    flag: list[str] | None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> tuple[list[str], str]:
    """The bootstrap addresses and where they came from: flag > environment > local cluster."""
    env = os.environ if env is None else env
    if flag:
        return split_addresses(flag), "--bootstrap"
    if env.get(BOOTSTRAP_ENV, "").strip():
        return split_addresses(env[BOOTSTRAP_ENV]), BOOTSTRAP_ENV
    from lab.local_cluster import LocalCluster

    cluster = LocalCluster.current(cwd)
    if cluster is not None:
        if not cluster.any_running():
            raise CliError(ErrorCode.BROKER_NOT_AVAILABLE,
                           f"the local cluster in {cluster.data_dir} is not running "
                           "(start one with: brokerlab cluster up)", EXIT_USAGE)
        return cluster.bootstrap_servers(), str(cluster.data_dir)
    raise CliError(ErrorCode.BROKER_NOT_AVAILABLE,
                   f"no cluster found: pass --bootstrap HOST:PORT, set {BOOTSTRAP_ENV}, "
                   "or start one with: brokerlab cluster up", EXIT_USAGE)


def bootstrap_of(args: argparse.Namespace) -> list[str]:
    return resolve_bootstrap(getattr(args, "bootstrap", None))[0]


# ---- errors --------------------------------------------------------------------------------------

# gRPC status names -> the Kafka code we report (the client normally converts; this is a backstop).
_GRPC_STATUS_CODES = {
    "UNAVAILABLE": ErrorCode.NETWORK_EXCEPTION,
    "DEADLINE_EXCEEDED": ErrorCode.REQUEST_TIMED_OUT,
    "RESOURCE_EXHAUSTED": ErrorCode.MESSAGE_TOO_LARGE,
    "INVALID_ARGUMENT": ErrorCode.INVALID_REQUEST,
    "CANCELLED": ErrorCode.NETWORK_EXCEPTION,
}


def describe_error(exc: BaseException) -> tuple[str, str, int]:
    """(Kafka code name, one-line message, exit code) for any exception."""
    if isinstance(exc, CliError):
        return error_name(int(exc.code)), exc.message, exc.exit_code
    if isinstance(exc, KafkaError):
        return error_name(int(exc.code)), exc.message or error_name(int(exc.code)), EXIT_FAILED
    if isinstance(exc, ConfigError):
        return "INVALID_CONFIG", str(exc), EXIT_USAGE
    if _is_serde_error(exc):
        return "INVALID_REQUEST", str(exc), EXIT_FAILED
    if _is_grpc_error(exc):
        status = exc.code().name  # type: ignore[attr-defined]
        code = _GRPC_STATUS_CODES.get(status, ErrorCode.UNKNOWN_SERVER_ERROR)
        return error_name(int(code)), f"{status}: {exc.details()}", EXIT_FAILED  # type: ignore[attr-defined]
    if isinstance(exc, TimeoutError):
        return "REQUEST_TIMED_OUT", str(exc) or "timed out", EXIT_FAILED
    if isinstance(exc, ConnectionError):
        return "NETWORK_EXCEPTION", str(exc), EXIT_FAILED
    if isinstance(exc, OSError):
        return "KAFKA_STORAGE_ERROR", str(exc), EXIT_FAILED
    return "UNKNOWN_SERVER_ERROR", f"{type(exc).__name__}: {exc}", EXIT_FAILED


def _is_serde_error(exc: BaseException) -> bool:
    """A key/value the chosen (de)serializer rejected (Kafka reports these without a code)."""
    from client.consumer.records import RecordDeserializationError
    from client.serde import SerializationError

    return isinstance(exc, (SerializationError, RecordDeserializationError))


def _is_grpc_error(exc: BaseException) -> bool:
    # Duck-typed: only rpc/ modules may import grpc.
    return callable(getattr(exc, "code", None)) and callable(getattr(exc, "details", None))


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def print_error(code_name: str, message: str, stream: TextIO | None = None) -> None:
    stream = stream or sys.stderr
    print(f"error: {code_name}: {one_line(message)}", file=stream, flush=True)


def report(exc: BaseException, stream: TextIO | None = None) -> int:
    """Print ``exc`` as one error line and return the exit code."""
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    code_name, message, exit_code = describe_error(exc)
    print_error(code_name, message, stream)
    return exit_code


# ---- admin calls ---------------------------------------------------------------------------------


async def with_admin(bootstrap: list[str], action: Callable[[Any], Awaitable[T]]) -> T:
    """``await action(admin)`` with a ``client.Admin`` that is closed afterwards."""
    from client import Admin

    admin = Admin(bootstrap)
    try:
        return await action(admin)
    finally:
        await admin.close()


# ---- topics -------------------------------------------------------------------------------------


async def check_topic(admin: Any, topic: str, partition: int | None = None) -> int:
    """The topic's partition count; fails fast on a missing topic or partition (never waits).

    Closes ``admin`` (an ``client.Admin``).
    """
    try:
        descriptions = await admin.describe_topics([topic])
    finally:
        await admin.close()
    if not descriptions:
        raise KafkaError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"topic {topic!r} does not exist")
    description = descriptions[0]
    error_code = int(getattr(description, "error_code", 0) or 0)
    if error_code:
        message = getattr(description, "error_message", "") or f"topic {topic!r}: {error_name(error_code)}"
        raise KafkaError(error_code, message)
    count = len(description.partitions)
    if partition is not None and not 0 <= partition < count:
        raise KafkaError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
                         f"topic {topic!r} has partitions 0..{count - 1}, not {partition}")
    return count


# ---- small parsing helpers ------------------------------------------------------------------------


def parse_key_values(pairs: list[str] | None, what: str = "--config") -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise usage_error(f"{what} expects key=value, got {pair!r}")
        out[key.strip()] = value
    return out


def parse_acks(text: str) -> str:
    """``0``, ``1``, ``all`` or ``-1`` (= all); anything else is INVALID_REQUIRED_ACKS."""
    if text in ("0", "1", "all"):
        return text
    if text == "-1":
        return "all"
    raise CliError(ErrorCode.INVALID_REQUIRED_ACKS, f"--acks must be 0, 1 or all, got {text!r}", EXIT_USAGE)
