"""``brokerlab produce TOPIC``: one record per stdin line; exit 0 only if every record was acknowledged.

Like kafka-console-producer: ``--key-separator SEP`` splits each line at the first SEP into key
and value (a line without SEP is a failed record, reported, never sent keyless); empty lines are
skipped. Reading runs in a thread so the producer's linger timer keeps firing while an
interactive user types.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import threading
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable, Iterable

from brokerlab.errors import ErrorCode, KafkaError
from cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    add_bootstrap_argument,
    bootstrap_of,
    check_topic,
    describe_error,
    parse_acks,
    parse_key_values,
    print_error,
)
from cli.output import plural
from cli.serde_args import add_serializer_arguments, serializer_of


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("produce", help="send stdin lines as records (exit 1 unless all are acknowledged)")
    parser.add_argument("topic")
    parser.add_argument("--key-separator", metavar="SEP", help="split each line into KEY SEP VALUE")
    parser.add_argument("--acks", default="all", help="0, 1 or all (default all)")
    parser.add_argument("--partition", type=int, help="send every record to this partition")
    parser.add_argument("--header", action="append", metavar="KEY=VALUE", help="a header on every record (repeatable)")
    parser.add_argument("--batch-size", type=int, default=16384, metavar="BYTES", help="batch.size (default 16384)")
    parser.add_argument("--linger-ms", type=int, default=5, help="linger.ms (default 5)")
    parser.add_argument("--delivery-timeout-ms", type=int, default=120_000, help="delivery.timeout.ms (default 120000)")
    parser.add_argument("--idempotence", action=argparse.BooleanOptionalAction, default=None,
                        help="enable.idempotence: no duplicates on retry (default: on with --acks all, as in "
                             "Kafka 3.0+); --no-idempotence shows the duplicates retries can write")
    parser.add_argument("--quiet", action="store_true", help="print nothing on success")
    add_serializer_arguments(parser, "serializer")
    add_bootstrap_argument(parser)
    parser.set_defaults(func=cmd_produce)


@dataclass
class ProduceResult:
    sent: int = 0
    acknowledged: int = 0
    failed: int = 0
    first_error: tuple[str, str] | None = None  # (code name, message)
    partitions: dict[int, int] = field(default_factory=dict)  # partition -> records acknowledged

    def fail(self, code_name: str, message: str) -> None:
        self.failed += 1
        if self.first_error is None:
            self.first_error = (code_name, message)


@dataclass(frozen=True)
class LineParser:
    """Turns one input line into (key object, value object) for the serializers."""

    key_separator: str | None
    key_of: Callable[[str], Any]
    value_of: Callable[[str], Any]

    def parse(self, line: str, line_number: int) -> tuple[Any, Any]:
        if self.key_separator is None:
            return None, self.value_of(line)
        key, sep, value = line.partition(self.key_separator)
        if not sep:
            raise KafkaError(ErrorCode.INVALID_REQUEST,
                             f"line {line_number}: no key separator {self.key_separator!r} found")
        return self.key_of(key), self.value_of(value)


def cmd_produce(args: argparse.Namespace) -> int:
    acks = parse_acks(args.acks)
    headers = [(k, v.encode()) for k, v in parse_key_values(args.header, "--header").items()]
    key_serializer, key_of = serializer_of(args, "key")
    value_serializer, value_of = serializer_of(args, "value")
    if args.key_separator == "":
        raise CliError(ErrorCode.INVALID_REQUEST, "--key-separator must not be empty", EXIT_USAGE)
    parser = LineParser(args.key_separator, key_of, value_of)
    bootstrap = bootstrap_of(args)
    settings = dict(acks=acks, batch_size=args.batch_size, linger_ms=args.linger_ms,
                    delivery_timeout_ms=args.delivery_timeout_ms, key_serializer=key_serializer,
                    value_serializer=value_serializer, client_id="brokerlab-produce")
    if args.idempotence is not None:
        settings["enable_idempotence"] = args.idempotence
    result = asyncio.run(produce_lines(bootstrap, args.topic, stdin_lines(), parser, settings,
                                       partition=args.partition, headers=headers or None))
    return summarize(result, args.topic, acks, args.quiet)


def summarize(result: ProduceResult, topic: str, acks: str, quiet: bool = False) -> int:
    if result.failed:
        code_name, message = result.first_error or ("UNKNOWN_SERVER_ERROR", "")
        total = result.failed + result.acknowledged
        print_error(code_name, f"{result.failed} of {total} records failed ({result.acknowledged} acknowledged); "
                    f"first failure: {message}")
        return EXIT_FAILED
    if not quiet:
        spread = ", ".join(f"p{p}: {n}" for p, n in sorted(result.partitions.items()))
        note = "sent without waiting (acks=0)" if acks == "0" else f"acknowledged (acks={acks})"
        print(f"{plural(result.acknowledged, 'record')} {note} to {topic}" + (f" [{spread}]" if spread and acks != "0" else ""))
    return EXIT_OK


async def produce_lines(
    bootstrap: list[str],
    topic: str,
    lines: AsyncIterator[list[str]] | Iterable[str],
    parser: LineParser,
    settings: dict,
    partition: int | None = None,
    headers: list[tuple[str, bytes]] | None = None,
    producer_factory: Callable[..., Any] | None = None,
    admin_factory: Callable[..., Any] | None = None,
) -> ProduceResult:
    """Send every line; count what was acknowledged and what failed (never raises for a record)."""
    if producer_factory is None or admin_factory is None:
        from client import Admin, Producer

        producer_factory, admin_factory = producer_factory or Producer, admin_factory or Admin
    await check_topic(admin_factory(bootstrap), topic, partition)
    result = ProduceResult()
    pending: set[Any] = set()

    def on_done(handle: Any) -> None:
        # ``handle`` is the client's RecordHandle (or an asyncio.Future in tests): same methods.
        pending.discard(handle)
        exc = handle.exception()
        if exc is not None:
            code_name, message, _ = describe_error(exc)
            result.fail(code_name, message)
        else:
            result.acknowledged += 1
            part = handle.result().partition
            result.partitions[part] = result.partitions.get(part, 0) + 1

    try:
        producer = producer_factory(bootstrap, **settings)
    except ValueError as exc:  # settings the producer refuses (e.g. delivery timeout too short)
        raise CliError(ErrorCode.INVALID_CONFIG, str(exc), EXIT_USAGE) from None
    try:
        line_number = 0
        async for chunk in _chunks(lines):
            for line in chunk:
                line_number += 1
                if not line:
                    continue
                try:
                    key, value = parser.parse(line, line_number)
                    handle = await producer.send(topic, value, key=key, partition=partition, headers=headers)
                except Exception as exc:  # a bad line or a refused record: count it, keep going
                    code_name, message, _ = describe_error(exc)
                    result.fail(code_name, message)
                    continue
                result.sent += 1
                pending.add(handle)
                handle.add_done_callback(on_done)
        await producer.flush()
        for handle in list(pending):  # flush settles everything; this only waits out stragglers
            try:
                await handle
            except Exception:  # counted by on_done
                pass
    finally:
        await producer.close()
    return result


async def _chunks(lines: AsyncIterator[list[str]] | Iterable[str]) -> AsyncIterator[list[str]]:
    if hasattr(lines, "__aiter__"):
        async for chunk in lines:  # type: ignore[union-attr]
            yield chunk
    else:
        yield list(lines)  # type: ignore[arg-type]


async def stdin_lines(chunk_bytes: int = 1 << 16) -> AsyncIterator[list[str]]:
    """Lines of stdin, in chunks as they arrive, read by a thread (works for ttys, pipes, files)."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue(maxsize=64)
    fd = sys.stdin.fileno()

    def reader() -> None:
        try:
            while True:
                data = os.read(fd, chunk_bytes)
                asyncio.run_coroutine_threadsafe(queue.put(data), loop).result()
                if not data:
                    return
        except Exception:  # the loop closed under us (Ctrl-C): nothing left to do
            return

    threading.Thread(target=reader, name="stdin-reader", daemon=True).start()
    rest = b""
    while True:
        data = await queue.get()
        if not data:
            if rest:
                yield [_decode(rest)]
            return
        *complete, rest = (rest + data).split(b"\n")
        if complete:
            yield [_decode(line) for line in complete]


def _decode(line: bytes) -> str:
    return line.removesuffix(b"\r").decode("utf-8", errors="replace")
