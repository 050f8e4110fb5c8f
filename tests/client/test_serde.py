"""Serializers and deserializers: round trips, None passthrough, clear errors, lookup by name."""

from __future__ import annotations

import pytest

from brokerlab.v1 import broker_pb2
from client.serde import (
    AvroDeserializer,
    AvroSerializer,
    ProtobufDeserializer,
    ProtobufSerializer,
    SerializationError,
    deserialize_bytes,
    deserialize_json,
    deserialize_str,
    deserializer,
    serialize_bytes,
    serialize_json,
    serialize_str,
    serializer,
)

ORDER_SCHEMA = {
    "type": "record",
    "name": "Order",
    "namespace": "brokerlab.test",
    "fields": [
        {"name": "id", "type": "long"},
        {"name": "customer", "type": "string"},
        {"name": "amount", "type": "double"},
        {"name": "note", "type": ["null", "string"], "default": None},
    ],
}


def test_bytes_round_trip_and_none() -> None:
    assert deserialize_bytes(serialize_bytes(b"\x00\xffabc")) == b"\x00\xffabc"
    assert serialize_bytes(bytearray(b"ab")) == b"ab"
    assert serialize_bytes(memoryview(b"cd")) == b"cd"
    assert serialize_bytes(None) is None and deserialize_bytes(None) is None
    with pytest.raises(SerializationError, match="takes bytes"):
        serialize_bytes("text")


def test_str_round_trip_utf8() -> None:
    text = "héllo wörld ✓"
    assert serialize_str(text) == text.encode("utf-8")
    assert deserialize_str(serialize_str(text)) == text
    assert serialize_str(None) is None and deserialize_str(None) is None
    with pytest.raises(SerializationError):
        serialize_str(b"bytes")
    with pytest.raises(SerializationError, match="UTF-8"):
        deserialize_str(b"\xff\xfe")


def test_json_round_trip() -> None:
    value = {"id": 7, "items": [1, 2.5, None, True], "name": "ünï"}
    data = serialize_json(value)
    assert data == b'{"id":7,"items":[1,2.5,null,true],"name":"\xc3\xbcn\xc3\xaf"}'
    assert deserialize_json(data) == value
    assert serialize_json(None) is None and deserialize_json(None) is None
    with pytest.raises(SerializationError):
        serialize_json({"bad": object()})
    with pytest.raises(SerializationError):
        deserialize_json(b"{nope")


def test_avro_round_trip_with_schema() -> None:
    order = {"id": 42, "customer": "ada", "amount": 9.5, "note": None}
    data = AvroSerializer(ORDER_SCHEMA)(order)
    assert isinstance(data, bytes) and not data.startswith(b"Obj")  # schemaless, no container header
    assert AvroDeserializer(ORDER_SCHEMA)(data) == order
    # The schema may come as JSON text too (what the CLI reads from a file).
    import json

    assert AvroDeserializer(json.dumps(ORDER_SCHEMA))(data) == order


def test_avro_reader_schema_resolves_evolution() -> None:
    data = AvroSerializer(ORDER_SCHEMA)({"id": 1, "customer": "bo", "amount": 1.0, "note": "x"})
    newer = dict(ORDER_SCHEMA, fields=ORDER_SCHEMA["fields"] + [{"name": "currency", "type": "string", "default": "EUR"}])
    assert AvroDeserializer(ORDER_SCHEMA, reader_schema=newer)(data)["currency"] == "EUR"


def test_avro_errors_are_clear() -> None:
    with pytest.raises(SerializationError, match="Avro schema"):
        AvroSerializer(ORDER_SCHEMA)({"id": "not a long", "customer": "x", "amount": 1.0})
    with pytest.raises(SerializationError):
        AvroDeserializer(ORDER_SCHEMA)(b"\x02")


def test_protobuf_round_trip_with_a_brokerlab_message() -> None:
    message = broker_pb2.PartitionProduceData(topic="orders", partition=3, records=b"\x01\x02")
    data = ProtobufSerializer()(message)
    assert ProtobufDeserializer(broker_pb2.PartitionProduceData)(data) == message
    # The message class may be named, as the CLI does.
    by_name = ProtobufDeserializer("brokerlab.v1.broker_pb2:PartitionProduceData")
    assert by_name(data) == message
    assert ProtobufDeserializer("brokerlab.v1.broker_pb2.PartitionProduceData")(data) == message
    assert ProtobufSerializer()(None) is None and by_name(None) is None


def test_protobuf_errors_are_clear() -> None:
    typed = ProtobufSerializer(broker_pb2.ProduceRequest)
    with pytest.raises(SerializationError, match="expected a ProduceRequest"):
        typed(broker_pb2.FetchRequest())
    with pytest.raises(SerializationError, match="not a protobuf message"):
        ProtobufSerializer()("text")
    with pytest.raises(SerializationError, match="not a ProduceRequest"):
        ProtobufDeserializer(broker_pb2.ProduceRequest)(b"\xff\xff\xff")
    with pytest.raises(SerializationError, match="no protobuf message class"):
        ProtobufDeserializer("brokerlab.v1.broker_pb2:NoSuchMessage")


def test_lookup_by_name() -> None:
    for name, value in [("bytes", b"ab"), ("str", "ab"), ("json", {"a": [1]})]:
        assert deserializer(name)(serializer(name)(value)) == value
    order = {"id": 1, "customer": "c", "amount": 0.5, "note": None}
    assert deserializer("avro", schema=ORDER_SCHEMA)(serializer("avro", schema=ORDER_SCHEMA)(order)) == order
    msg = broker_pb2.MetadataRequest(topics=["a", "b"])
    proto = deserializer("protobuf", message_class=broker_pb2.MetadataRequest)
    assert proto(serializer("protobuf")(msg)) == msg
    with pytest.raises(SerializationError, match="unknown serializer"):
        serializer("xml")
    with pytest.raises(SerializationError, match="unknown deserializer"):
        deserializer("xml")
    with pytest.raises(SerializationError, match="schema"):
        serializer("avro")
    with pytest.raises(SerializationError, match="message class"):
        deserializer("protobuf")
