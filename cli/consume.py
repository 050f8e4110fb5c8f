"""``brokerlab consume TOPIC``: print records (partitions assigned directly, or ``--group G`` to join
a consumer group, which assigns them, resumes from its committed offsets and commits as it goes).

Starts at the end of each partition (Kafka's ``auto.offset.reset=latest``), at the beginning
with ``--from-beginning``, or at ``--offset`` of one ``--partition``. Exits after
``--max-messages`` records; with ``--timeout-ms`` also after that long without a record
(exit 1 if ``--max-messages`` was not reached by then).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import string
import sys
import time
from typing import Any, Callable

from brokerlab.errors import ErrorCode, KafkaError
from brokerlab.ids import TopicPartition
from cli.common import (
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    add_bootstrap_argument,
    bootstrap_of,
    check_topic,
    usage_error,
)
from cli.output import jsonable, render
from cli.serde_args import add_serializer_arguments, deserializer_of

DEFAULT_FORMAT = "{value}"
FIELDS = ("topic", "partition", "offset", "timestamp_ms", "key", "value", "headers")


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("consume", help="print records of a topic")
    parser.add_argument("topic")
    parser.add_argument("--from-beginning", action="store_true", help="start at the earliest offset")
    parser.add_argument("--partition", type=int, help="only this partition")
    parser.add_argument("--offset", help="start offset in --partition: a number, earliest or latest")
    parser.add_argument("--group", metavar="GROUP",
                        help="join this consumer group (its committed offsets; auto-commit; leaves on exit)")
    parser.add_argument("--max-messages", type=int, metavar="N", help="exit after N records")
    parser.add_argument("--timeout-ms", type=int, metavar="T", help="exit after T ms without a record")
    parser.add_argument("--format", default=DEFAULT_FORMAT,
                        help="'json' or a template over {topic} {partition} {offset} {timestamp_ms} {key} {value} "
                        "{headers} (default '{value}')")
    add_serializer_arguments(parser, "deserializer")
    add_bootstrap_argument(parser)
    parser.set_defaults(func=cmd_consume)


def record_fields(record: Any) -> dict:
    headers = {k: render(v) for k, v in (record.headers or [])}
    return {"topic": record.topic, "partition": record.partition, "offset": record.offset,
            "timestamp_ms": record.timestamp_ms, "key": record.key, "value": record.value, "headers": headers}


def formatter(template: str) -> Callable[[Any], str]:
    """A function record -> output line; checks the template's field names up front."""
    if template == "json":
        def as_json(record: Any) -> str:
            fields = record_fields(record)
            fields["key"], fields["value"] = jsonable(fields["key"]), jsonable(fields["value"])
            return json.dumps(fields, separators=(",", ":"), ensure_ascii=False)
        return as_json
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as exc:
        raise usage_error(f"bad --format {template!r}: {exc}") from None
    unknown = [name for name in names if name.split(".")[0].split("[")[0] not in FIELDS]
    if unknown or any(name == "" for name in names):
        raise usage_error(f"bad --format {template!r}: use named fields from {', '.join(FIELDS)}")

    def as_text(record: Any) -> str:
        fields = record_fields(record)
        fields["key"], fields["value"] = render(fields["key"]), render(fields["value"])
        fields["headers"] = ",".join(f"{k}={v}" for k, v in fields["headers"].items())
        return template.format(**fields)
    return as_text


def start_offset(text: str | None) -> int | str | None:
    if text is None:
        return None
    if text in ("earliest", "latest"):
        return text
    if text.isdigit():
        return int(text)
    raise usage_error(f"--offset must be a number, earliest or latest, not {text!r}")


def cmd_consume(args: argparse.Namespace) -> int:
    offset = start_offset(args.offset)
    if offset is not None and args.partition is None:
        raise usage_error("--offset needs --partition")
    if args.max_messages is not None and args.max_messages < 1:
        raise usage_error("--max-messages must be at least 1")
    line_of = formatter(args.format)
    settings = dict(key_deserializer=deserializer_of(args, "key"), value_deserializer=deserializer_of(args, "value"),
                    auto_offset_reset="earliest" if args.from_beginning else "latest", client_id="brokerlab-consume")
    if args.from_beginning and offset is None:
        offset = "earliest"
    if args.group:
        if args.partition is not None or args.offset is not None:
            raise usage_error("--group assigns partitions and starts at committed offsets: drop --partition/--offset")
        settings["group_id"] = args.group
    bootstrap = bootstrap_of(args)
    count = asyncio.run(consume(bootstrap, args.topic, settings, lambda r: print(line_of(r)),
                                partition=args.partition, offset="latest" if offset is None else offset,
                                max_messages=args.max_messages, timeout_ms=args.timeout_ms))
    if args.max_messages is not None and count < args.max_messages:
        raise CliError(ErrorCode.REQUEST_TIMED_OUT,
                       f"consumed {count} of {args.max_messages} records before --timeout-ms {args.timeout_ms}")
    return EXIT_OK


async def consume(
    bootstrap: list[str],
    topic: str,
    settings: dict,
    emit: Callable[[Any], None],
    partition: int | None = None,
    offset: int | str = "latest",
    max_messages: int | None = None,
    timeout_ms: int | None = None,
    consumer_factory: Callable[..., Any] | None = None,
    admin_factory: Callable[..., Any] | None = None,
) -> int:
    """Emit records until ``max_messages`` or ``timeout_ms`` of silence; returns how many."""
    if consumer_factory is None or admin_factory is None:
        from client import Admin, Consumer

        consumer_factory, admin_factory = consumer_factory or Consumer, admin_factory or Admin
    count = await check_topic(admin_factory(bootstrap), topic, partition)
    partitions = [partition] if partition is not None else list(range(count))
    tps = [TopicPartition(topic, p) for p in partitions]
    consumer = consumer_factory(bootstrap, **settings)
    emitted = 0
    group = settings.get("group_id")
    try:
        if group:
            consumer.subscribe([topic])  # the group assigns; positions come from its commits
        else:
            consumer.assign(tps)
        if group:
            pass  # nothing to seek
        elif offset == "earliest":
            await consumer.seek_to_beginning(*tps)
        elif offset == "latest":
            await consumer.seek_to_end(*tps)
        else:
            consumer.seek(tps[0], offset)
        last_record = time.monotonic()
        while max_messages is None or emitted < max_messages:
            wait_ms = 500
            if timeout_ms is not None:
                left_ms = timeout_ms - (time.monotonic() - last_record) * 1000
                if left_ms <= 0:
                    break
                wait_ms = max(1, min(wait_ms, int(left_ms)))
            if group and max_messages is not None:
                # Never take more than we will print: the group commits what was polled.
                records = await consumer.poll(timeout_ms=wait_ms, max_records=max_messages - emitted)
            else:
                records = await consumer.poll(timeout_ms=wait_ms)
            if records:
                last_record = time.monotonic()
            for record in records:
                emit(record)
                emitted += 1
                if max_messages is not None and emitted >= max_messages:
                    break
            sys.stdout.flush()
    except KafkaError as exc:
        if exc.code == ErrorCode.OFFSET_OUT_OF_RANGE and isinstance(offset, int):
            raise CliError(exc.code, f"offset {offset} is outside partition {partition}'s log ({exc.message})",
                           EXIT_USAGE) from None
        raise
    finally:
        await consumer.close()
    return emitted
