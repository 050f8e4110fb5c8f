"""``--key-serializer``/``--value-serializer`` (and deserializer) flags: text <-> client/serde.py.

On the command line records are text: a line read by ``produce`` becomes the object the chosen
serializer takes (``str``: the line; ``bytes``: its UTF-8 bytes; ``json``/``avro``: the line
parsed as JSON; ``protobuf``: the line parsed as the message's JSON form), and ``consume`` turns
what the deserializer returns back into text or JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Callable

from brokerlab.errors import ErrorCode
from cli.common import EXIT_USAGE, CliError
from client import serde

FORMATS = serde.NAMES


def add_serializer_arguments(parser: argparse.ArgumentParser, direction: str) -> None:
    """``direction`` is "serializer" (produce) or "deserializer" (consume)."""
    default = "str" if direction == "serializer" else "bytes"
    for part in ("key", "value"):
        parser.add_argument(f"--{part}-{direction}", choices=FORMATS, default=default,
                            help=f"how {part}s are encoded (default {default})")
        parser.add_argument(f"--{part}-schema", metavar="FILE|JSON", help=f"Avro schema of {part}s")
        parser.add_argument(f"--{part}-message-class", metavar="MODULE:CLASS",
                            help=f"protobuf message class of {part}s, e.g. brokerlab.v1.common_pb2:Endpoint")


def load_schema(text: str | None) -> Any:
    if text is None:
        return None
    path = Path(text)
    try:
        return json.loads(path.read_text() if path.is_file() else text)
    except ValueError as exc:
        raise CliError(ErrorCode.INVALID_CONFIG, f"bad Avro schema {text!r}: {exc}", EXIT_USAGE) from None


def _options(args: argparse.Namespace, part: str) -> dict:
    return {"schema": load_schema(getattr(args, f"{part}_schema")),
            "message_class": getattr(args, f"{part}_message_class")}


def serializer_of(args: argparse.Namespace, part: str) -> tuple[Callable, Callable[[str], Any]]:
    """(serializer, text -> the object it takes) for ``part`` "key" or "value"."""
    name = getattr(args, f"{part}_serializer")
    options = _options(args, part)
    try:
        return serde.serializer(name, **options), text_to_object(name, options["message_class"])
    except serde.SerializationError as exc:
        raise CliError(ErrorCode.INVALID_CONFIG, f"--{part}-serializer {name}: {exc}", EXIT_USAGE) from None


def deserializer_of(args: argparse.Namespace, part: str) -> Callable:
    name = getattr(args, f"{part}_deserializer")
    try:
        return serde.deserializer(name, **_options(args, part))
    except serde.SerializationError as exc:
        raise CliError(ErrorCode.INVALID_CONFIG, f"--{part}-deserializer {name}: {exc}", EXIT_USAGE) from None


def text_to_object(name: str, message_class: str | None) -> Callable[[str], Any]:
    if name == "str":
        return lambda text: text
    if name == "bytes":
        return lambda text: text.encode("utf-8")
    if name in ("json", "avro"):
        return _parse_json
    if name == "protobuf":
        if message_class is None:
            raise serde.SerializationError("the protobuf serializer needs --*-message-class")
        cls = serde.resolve_message_class(message_class)
        return lambda text: _parse_protobuf_json(text, cls)
    raise serde.SerializationError(f"unknown format {name!r}")


def _parse_json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise serde.SerializationError(f"not JSON: {exc}") from None


def _parse_protobuf_json(text: str, cls: type) -> Any:
    from google.protobuf import json_format

    try:
        return json_format.Parse(text, cls())
    except json_format.ParseError as exc:
        raise serde.SerializationError(f"not a {cls.__name__} in JSON form: {exc}") from None
