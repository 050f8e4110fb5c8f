"""Serializers and deserializers for record keys and values.

A serializer is any callable ``obj -> bytes | None``; a deserializer any callable
``bytes | None -> obj``. ``None`` passes through both ways (a null key, or a tombstone value),
as in Kafka's serializers. The producer imports the serializers, the consumer the
deserializers; the CLI picks them by name with :func:`serializer` / :func:`deserializer`.

Formats: raw bytes, UTF-8 strings, JSON, Avro (schemaless binary through fastavro, the schema
known to both sides) and protobuf messages.
"""

from __future__ import annotations

import importlib
import io
import json
from typing import Any, Callable

import fastavro

Serializer = Callable[[Any], "bytes | None"]
Deserializer = Callable[["bytes | None"], Any]

NAMES = ("bytes", "str", "json", "avro", "protobuf")


class SerializationError(ValueError):
    """A value that cannot be (de)serialized with the chosen format."""


# ---- bytes ----------------------------------------------------------------------------------


def serialize_bytes(value: Any) -> bytes | None:
    if value is None or type(value) is bytes:
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    raise SerializationError(f"the bytes serializer takes bytes, not {type(value).__name__}")


def deserialize_bytes(data: bytes | None) -> bytes | None:
    return data if data is None or type(data) is bytes else bytes(data)


# ---- str ------------------------------------------------------------------------------------


def serialize_str(value: Any) -> bytes | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise SerializationError(f"the str serializer takes str, not {type(value).__name__}")
    return value.encode("utf-8")


def deserialize_str(data: bytes | None) -> str | None:
    if data is None:
        return None
    try:
        return str(data, "utf-8")
    except UnicodeDecodeError as exc:
        raise SerializationError(f"not UTF-8: {exc}") from None


# ---- JSON -----------------------------------------------------------------------------------


def serialize_json(value: Any) -> bytes | None:
    if value is None:
        return None
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise SerializationError(f"not JSON serializable: {exc}") from None


def deserialize_json(data: bytes | None) -> Any:
    if data is None:
        return None
    try:
        return json.loads(data)
    except ValueError as exc:
        raise SerializationError(f"not JSON: {exc}") from None


# ---- Avro -----------------------------------------------------------------------------------


def _parse_avro_schema(schema: dict | str | list) -> Any:
    if isinstance(schema, str):
        schema = json.loads(schema)
    return fastavro.parse_schema(schema)


class AvroSerializer:
    """Avro binary without a container header (fastavro's schemaless writer).

    ``schema`` is a dict (or its JSON text); values are what fastavro accepts for it (dicts for
    records).
    """

    def __init__(self, schema: dict | str | list) -> None:
        self.schema = _parse_avro_schema(schema)

    def __call__(self, value: Any) -> bytes | None:
        if value is None:
            return None
        out = io.BytesIO()
        try:
            fastavro.schemaless_writer(out, self.schema, value)
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            raise SerializationError(f"value does not match the Avro schema: {exc}") from None
        return out.getvalue()


class AvroDeserializer:
    """Reads what :class:`AvroSerializer` wrote; ``reader_schema`` resolves schema evolution."""

    def __init__(self, schema: dict | str | list, reader_schema: dict | str | list | None = None) -> None:
        self.schema = _parse_avro_schema(schema)
        self.reader_schema = None if reader_schema is None else _parse_avro_schema(reader_schema)

    def __call__(self, data: bytes | None) -> Any:
        if data is None:
            return None
        try:
            return fastavro.schemaless_reader(io.BytesIO(data), self.schema, self.reader_schema)
        except (EOFError, ValueError, TypeError, IndexError, KeyError) as exc:
            raise SerializationError(f"not Avro for this schema: {exc!r}") from None


# ---- protobuf -------------------------------------------------------------------------------


def resolve_message_class(name: str) -> type:
    """``"brokerlab.v1.broker_pb2:ProduceRequest"`` (or ``module.Class``) -> the message class."""
    module_name, sep, attr = name.partition(":")
    if not sep:
        module_name, _, attr = name.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise SerializationError(f"no protobuf message class {name!r}: {exc}") from None


class ProtobufSerializer:
    """Serializes protobuf message instances; with ``message_class`` it also checks their type."""

    def __init__(self, message_class: type | str | None = None) -> None:
        if isinstance(message_class, str):
            message_class = resolve_message_class(message_class)
        self.message_class = message_class

    def __call__(self, value: Any) -> bytes | None:
        if value is None:
            return None
        if self.message_class is not None and not isinstance(value, self.message_class):
            raise SerializationError(
                f"expected a {self.message_class.__name__} message, not {type(value).__name__}"
            )
        try:
            return value.SerializeToString()
        except AttributeError:
            raise SerializationError(f"not a protobuf message: {type(value).__name__}") from None


class ProtobufDeserializer:
    """Parses bytes into ``message_class`` (a generated class, or its importable name)."""

    def __init__(self, message_class: type | str) -> None:
        if isinstance(message_class, str):
            message_class = resolve_message_class(message_class)
        self.message_class = message_class

    def __call__(self, data: bytes | None) -> Any:
        if data is None:
            return None
        try:
            return self.message_class.FromString(data)
        except Exception as exc:  # protobuf's DecodeError lives in an internal module
            raise SerializationError(
                f"not a {self.message_class.__name__} message: {exc}"
            ) from None


# ---- lookup by name (CLI) -------------------------------------------------------------------


def serializer(name: str, *, schema: dict | str | None = None, message_class: type | str | None = None) -> Serializer:
    """The serializer called ``name``; Avro needs ``schema``."""
    if name == "bytes":
        return serialize_bytes
    if name == "str":
        return serialize_str
    if name == "json":
        return serialize_json
    if name == "avro":
        if schema is None:
            raise SerializationError("the avro serializer needs a schema")
        return AvroSerializer(schema)
    if name == "protobuf":
        return ProtobufSerializer(message_class)
    raise SerializationError(f"unknown serializer {name!r}; choose one of {', '.join(NAMES)}")


def deserializer(
    name: str,
    *,
    schema: dict | str | None = None,
    reader_schema: dict | str | None = None,
    message_class: type | str | None = None,
) -> Deserializer:
    """The deserializer called ``name``; Avro needs ``schema``, protobuf ``message_class``."""
    if name == "bytes":
        return deserialize_bytes
    if name == "str":
        return deserialize_str
    if name == "json":
        return deserialize_json
    if name == "avro":
        if schema is None:
            raise SerializationError("the avro deserializer needs a schema")
        return AvroDeserializer(schema, reader_schema)
    if name == "protobuf":
        if message_class is None:
            raise SerializationError("the protobuf deserializer needs a message class")
        return ProtobufDeserializer(message_class)
    raise SerializationError(f"unknown deserializer {name!r}; choose one of {', '.join(NAMES)}")
