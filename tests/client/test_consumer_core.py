"""FetchCore (sans-IO): positions, fetch requests per leader, prefetch, resets, errors.

Envelopes in, envelopes out; time is a number; no sockets, no sleeps.
"""

from __future__ import annotations

import pytest

from brokerlab import record_batch as rb
from brokerlab.errors import ErrorCode, KafkaError
from brokerlab.ids import TopicPartition
from brokerlab.v1 import broker_pb2, common_pb2
from client.consumer.fetcher import TRANSITIONS, FetchConfig, FetchCore, FetchState
from client.consumer.records import ConsumerRecord, RecordDeserializationError
from client.metadata import MetadataCache

TP0 = TopicPartition("orders", 0)
TP1 = TopicPartition("orders", 1)


def metadata_response(leaders=(1, 2), epochs=(0, 0)):
    msg = broker_pb2.MetadataResponse(cluster_id="c", controller_id=0)
    for broker_id in (1, 2, 3):
        msg.brokers.add(broker_id=broker_id, endpoint=common_pb2.Endpoint(host="127.0.0.1", port=9100 + broker_id))
    topic = msg.topics.add(name="orders", topic_id="id-orders")
    for partition, (leader, epoch) in enumerate(zip(leaders, epochs)):
        topic.partitions.add(partition=partition, leader_id=leader, leader_epoch=epoch, replicas=[1, 2], isr=[1, 2])
    return msg


def make_core(now_ms=0, **config):
    cache = MetadataCache()
    cache.update(metadata_response(), now_ms)
    return FetchCore(FetchConfig(**config), cache), cache


def batch(base_offset, count, value_size=10, timestamp=1_000, key=None):
    return rb.encode_batch(
        [(timestamp + i, key, bytes([65 + (base_offset + i) % 26]) * value_size, ()) for i in range(count)],
        base_offset=base_offset,
    )


def sends(effects, rpc=None):
    return [e for e in effects.sends if rpc is None or e.rpc == rpc]


def events(effects, name):
    return [e.fields for e in effects.events if e.name == name]


def fetch_reply(envelope, parts):
    """parts: {tp: (error_code, records_bytes)}"""
    response = broker_pb2.FetchResponse()
    for tp, (code, records) in parts.items():
        response.partitions.add(
            topic=tp.topic, partition=tp.partition, error_code=code, records=records, high_watermark=100,
            log_start_offset=0, log_end_offset=100,
        )
    return envelope.reply(response)


def list_offsets_reply(envelope, offsets, code=0):
    response = broker_pb2.ListOffsetsResponse()
    for p in envelope.message.partitions:
        response.partitions.add(
            topic=p.topic, partition=p.partition, error_code=code, offset=offsets.get((p.topic, p.partition), -1)
        )
    return envelope.reply(response)


def seeked_core(offsets=None, **config):
    """A core with both partitions assigned and positioned (no ListOffsets round)."""
    core, cache = make_core(**config)
    offsets = offsets or {TP0: 0, TP1: 0}
    core.assign(list(offsets))
    for tp, offset in offsets.items():
        core.seek(tp, offset)
    return core, cache


# ---- resets and fetch requests ----------------------------------------------------------------


def test_assign_with_latest_asks_each_leader_for_the_end_then_fetches_from_it():
    core, _ = make_core(auto_offset_reset="latest")
    core.assign([TP0, TP1])
    assert core.position(TP0) is None
    effects = core.tick(0)
    listing = sends(effects, "ListOffsets")
    assert sorted(e.dst for e in listing) == ["broker-1", "broker-2"]
    assert all(p.timestamp_ms == -1 for e in listing for p in e.message.partitions)
    assert sends(effects, "Fetch") == []
    assert sends(core.tick(1)) == []  # one ListOffsets in flight per broker
    to_broker_1 = next(e for e in listing if e.dst == "broker-1")
    effects = core.step(list_offsets_reply(to_broker_1, {("orders", 0): 42}), 2)
    assert events(effects, "OffsetReset") == [{"topic": "orders", "partition": 0, "offset": 42, "strategy": "latest"}]
    assert core.position(TP0) == 42
    (fetch,) = sends(effects, "Fetch")
    assert fetch.dst == "broker-1"
    (part,) = fetch.message.partitions
    assert (part.topic, part.partition, part.fetch_offset, part.current_leader_epoch) == ("orders", 0, 42, 0)
    assert fetch.message.replica_id == -1
    assert fetch.message.max_wait_ms == 500 and fetch.message.min_bytes == 1


def test_earliest_policy_and_seek_to_beginning_use_timestamp_minus_two():
    core, _ = make_core(auto_offset_reset="earliest")
    core.assign([TP0])
    (listing,) = sends(core.tick(0), "ListOffsets")
    assert listing.message.partitions[0].timestamp_ms == -2
    core.step(list_offsets_reply(listing, {("orders", 0): 3}), 1)
    core.request_offset_reset(TP0, "latest")
    assert core.position(TP0) is None


def test_one_fetch_per_leader_broker_carrying_all_its_partitions():
    cache = MetadataCache()
    cache.update(metadata_response(leaders=(1, 1)), 0)
    core = FetchCore(FetchConfig(max_partition_fetch_bytes=4096), cache)
    core.assign([TP0, TP1])
    core.seek(TP0, 5)
    core.seek(TP1, 7)
    (fetch,) = sends(core.tick(0), "Fetch")
    assert fetch.dst == "broker-1"
    assert [(p.partition, p.fetch_offset, p.partition_max_bytes) for p in fetch.message.partitions] == [
        (0, 5, 4096), (1, 7, 4096),
    ]
    assert sends(core.tick(1), "Fetch") == []  # still in flight


# ---- records and positions -----------------------------------------------------------------


def test_records_are_polled_in_order_and_positions_advance():
    core, _ = seeked_core()
    fetches = {e.dst: e for e in sends(core.tick(0), "Fetch")}
    core.step(fetch_reply(fetches["broker-1"], {TP0: (0, batch(0, 3) + batch(3, 2))}), 1)
    core.step(fetch_reply(fetches["broker-2"], {TP1: (0, batch(0, 2))}), 2)
    records = core.drain(4)
    assert [(r.partition, r.offset) for r in records] == [(0, 0), (0, 1), (0, 2), (0, 3)]
    assert records[0] == ConsumerRecord("orders", 0, 0, 1_000, None, b"A" * 10, ())
    assert core.position(TP0) == 4
    assert [(r.partition, r.offset) for r in core.drain(10)] == [(0, 4), (1, 0), (1, 1)]
    assert core.position(TP0) == 5 and core.position(TP1) == 2
    assert core.drain(10) == []


def test_records_below_the_position_in_the_first_batch_are_skipped():
    core, _ = seeked_core({TP0: 7})
    (fetch,) = sends(core.tick(0), "Fetch")
    assert fetch.message.partitions[0].fetch_offset == 7
    # The leader returns whole batches: the one holding offset 7 starts at 5.
    core.step(fetch_reply(fetch, {TP0: (0, batch(5, 5) + batch(10, 2))}), 1)
    assert [r.offset for r in core.drain(100)] == [7, 8, 9, 10, 11]
    assert core.position(TP0) == 12


def test_next_fetch_goes_out_while_records_wait_and_stops_when_the_buffer_is_full():
    one_batch = batch(0, 50, value_size=100)
    core, _ = seeked_core({TP0: 0}, max_partition_fetch_bytes=2 * len(one_batch))
    (fetch,) = sends(core.tick(0), "Fetch")
    effects = core.step(fetch_reply(fetch, {TP0: (0, one_batch)}), 1)
    (prefetch,) = sends(effects, "Fetch")  # sent at once: the app has not polled yet
    assert prefetch.message.partitions[0].fetch_offset == 50
    assert core.position(TP0) == 0
    effects = core.step(fetch_reply(prefetch, {TP0: (0, batch(50, 50, value_size=100))}), 2)
    assert sends(effects, "Fetch") == []  # two batches buffered = max_partition_fetch_bytes
    assert len(core.drain(60)) == 60
    (after_poll,) = sends(core.tick(3), "Fetch")  # the first batch is consumed: room again
    assert after_poll.message.partitions[0].fetch_offset == 100
    assert core.buffered_record_count() == 40


def test_seek_during_a_fetch_drops_its_answer_and_buffered_records():
    core, _ = seeked_core({TP0: 0})
    (fetch,) = sends(core.tick(0), "Fetch")
    core.seek(TP0, 500)
    effects = core.step(fetch_reply(fetch, {TP0: (0, batch(0, 5))}), 1)
    assert core.drain(10) == []
    (again,) = sends(effects, "Fetch")
    assert again.message.partitions[0].fetch_offset == 500
    core.step(fetch_reply(again, {TP0: (0, batch(500, 2))}), 2)
    core.seek(TP0, 501)  # buffered 500..501 is dropped, 501 is fetched again
    assert core.buffered_record_count() == 0
    assert core.drain(10) == []


def test_unassigned_partitions_stop_and_their_records_are_dropped():
    core, _ = seeked_core({TP0: 0})
    fetches = {e.dst: e for e in sends(core.tick(0), "Fetch")}
    core.step(fetch_reply(fetches["broker-1"], {TP0: (0, batch(0, 3))}), 1)
    core.assign([TP1])
    assert core.drain(10) == []
    assert core.assignment() == [TP1]
    with pytest.raises(ValueError):
        core.position(TP0)


def test_a_reassigned_partition_ignores_a_fetch_sent_before_it_was_unassigned():
    core, _ = seeked_core({TP0: 0})
    fetches = {e.dst: e for e in sends(core.tick(0), "Fetch")}
    core.assign([TP1])
    core.assign([TP0, TP1])
    core.seek(TP0, 10)
    core.step(fetch_reply(fetches["broker-1"], {TP0: (0, batch(0, 3))}), 1)
    assert core.drain(10) == []
    assert core.position(TP0) == 10


# ---- errors -------------------------------------------------------------------------------


@pytest.mark.parametrize("policy, timestamp", [("earliest", -2), ("latest", -1)])
def test_offset_out_of_range_applies_the_reset_policy(policy, timestamp):
    core, _ = seeked_core({TP0: 999}, auto_offset_reset=policy)
    (fetch,) = sends(core.tick(0), "Fetch")
    effects = core.step(fetch_reply(fetch, {TP0: (ErrorCode.OFFSET_OUT_OF_RANGE, b"")}), 1)
    assert events(effects, "FetchPartitionFailed")[0]["error"] == "OFFSET_OUT_OF_RANGE"
    assert core.position(TP0) is None
    (listing,) = sends(effects, "ListOffsets")
    assert listing.message.partitions[0].timestamp_ms == timestamp
    effects = core.step(list_offsets_reply(listing, {("orders", 0): 17}), 2)
    assert core.position(TP0) == 17
    assert sends(effects, "Fetch")[0].message.partitions[0].fetch_offset == 17
    assert core.take_error() is None


def test_offset_out_of_range_with_none_fails_until_the_app_seeks():
    core, _ = seeked_core({TP0: 999}, auto_offset_reset="none")
    (fetch,) = sends(core.tick(0), "Fetch")
    core.step(fetch_reply(fetch, {TP0: (ErrorCode.OFFSET_OUT_OF_RANGE, b"")}), 1)
    for _ in range(2):  # raised by every poll, not just once
        error = core.take_error()
        assert isinstance(error, KafkaError) and error.code == ErrorCode.OFFSET_OUT_OF_RANGE
        assert "999" in error.message
    assert sends(core.tick(2), "Fetch") == []
    core.seek(TP0, 0)
    assert core.take_error() is None
    assert sends(core.tick(3), "Fetch")[0].message.partitions[0].fetch_offset == 0


def test_no_position_with_none_policy_is_an_error_until_seek():
    core, _ = make_core(auto_offset_reset="none")
    core.assign([TP0])
    assert sends(core.tick(0)) == []
    assert core.take_error().code == ErrorCode.OFFSET_OUT_OF_RANGE
    core.seek(TP0, 4)
    assert core.position(TP0) == 4


@pytest.mark.parametrize("code", [ErrorCode.NOT_LEADER_OR_FOLLOWER, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION])
def test_leader_errors_refresh_metadata_then_fetch_from_the_new_leader(code):
    core, cache = seeked_core({TP0: 5}, retry_backoff_ms=100)
    fetches = {e.dst: e for e in sends(core.tick(0), "Fetch")}
    assert not cache.needs_update(1)
    effects = core.step(fetch_reply(fetches["broker-1"], {TP0: (code, b"")}), 1)
    assert cache.needs_update(1)
    assert sends(effects, "Fetch") == []
    assert core.next_deadline_ms() == 101
    assert sends(core.tick(200), "Fetch") == []  # backoff over, but the metadata is not fresh yet
    cache.update(metadata_response(leaders=(3, 2), epochs=(1, 0)), 201)
    (retry,) = sends(core.tick(201), "Fetch")
    assert retry.dst == "broker-3"
    assert (retry.message.partitions[0].fetch_offset, retry.message.partitions[0].current_leader_epoch) == (5, 1)
    assert core.take_error() is None


def test_retriable_errors_back_off_without_a_refresh():
    core, cache = seeked_core({TP0: 0}, retry_backoff_ms=50)
    fetches = {e.dst: e for e in sends(core.tick(0), "Fetch")}
    core.step(fetch_reply(fetches["broker-1"], {TP0: (ErrorCode.NOT_ENOUGH_REPLICAS, b"")}), 10)
    assert not cache.update_requested
    assert core.next_deadline_ms() == 60
    assert sends(core.tick(59), "Fetch") == []
    assert sends(core.tick(60), "Fetch")[0].dst == "broker-1"


def test_non_retriable_partition_errors_surface_with_their_code():
    core, _ = seeked_core({TP0: 0})
    fetches = {e.dst: e for e in sends(core.tick(0), "Fetch")}
    reply = fetch_reply(fetches["broker-1"], {TP0: (ErrorCode.UNKNOWN_SERVER_ERROR, b"")})
    reply.message.partitions[0].error_message = "disk on fire"
    core.step(reply, 1)
    error = core.take_error()
    assert error.code == ErrorCode.UNKNOWN_SERVER_ERROR and "disk on fire" in error.message
    assert core.take_error() is None


def test_transport_failure_backs_off_and_refreshes_metadata():
    core, cache = seeked_core({TP0: 0}, retry_backoff_ms=100)
    fetches = {e.dst: e for e in sends(core.tick(0), "Fetch")}
    effects = core.step(fetches["broker-1"].failed("NETWORK_EXCEPTION: Fetch to x failed: UNAVAILABLE"), 5)
    assert events(effects, "FetchFailed") == [
        {"broker_id": 1, "reason": "NETWORK_EXCEPTION: Fetch to x failed: UNAVAILABLE"}
    ]
    assert cache.update_requested
    cache.update(metadata_response(), 6)
    assert sends(core.tick(50), "Fetch") == []
    assert sends(core.tick(105), "Fetch")[0].dst == "broker-1"


def test_list_offsets_errors_retry_after_a_refresh():
    core, cache = make_core()
    core.assign([TP0])
    (listing,) = sends(core.tick(0), "ListOffsets")
    core.step(list_offsets_reply(listing, {}, code=ErrorCode.NOT_LEADER_OR_FOLLOWER), 1)
    assert cache.update_requested and core.position(TP0) is None
    cache.update(metadata_response(leaders=(2, 2)), 2)
    (again,) = sends(core.tick(200), "ListOffsets")
    assert again.dst == "broker-2"


def test_a_corrupt_batch_is_reported_and_not_delivered():
    core, _ = seeked_core({TP0: 0})
    fetches = {e.dst: e for e in sends(core.tick(0), "Fetch")}
    good = batch(0, 2)
    bad = bytearray(batch(2, 2))
    bad[-1] ^= 0xFF
    effects = core.step(fetch_reply(fetches["broker-1"], {TP0: (0, good + bytes(bad))}), 1)
    assert events(effects, "CorruptBatchReceived")[0]["base_offset"] == 2
    assert core.take_error().code == ErrorCode.CORRUPT_MESSAGE
    assert [r.offset for r in core.drain(10)] == [0, 1]
    assert core.position(TP0) == 2


# ---- deserializers -----------------------------------------------------------------------


def test_deserializers_apply_to_keys_and_values():
    core, _ = seeked_core({TP0: 0}, key_deserializer=bytes.decode, value_deserializer=len)
    fetches = {e.dst: e for e in sends(core.tick(0), "Fetch")}
    core.step(fetch_reply(fetches["broker-1"], {TP0: (0, batch(0, 2, key=b"k"))}), 1)
    assert [(r.key, r.value) for r in core.drain(10)] == [("k", 10), ("k", 10)]


def test_a_bad_record_stops_the_poll_there_and_raises_next():
    def value(data):
        if data.startswith(b"C"):
            raise ValueError("no C allowed")
        return data[:1]

    core, _ = seeked_core({TP0: 0}, value_deserializer=value)
    fetches = {e.dst: e for e in sends(core.tick(0), "Fetch")}
    core.step(fetch_reply(fetches["broker-1"], {TP0: (0, batch(0, 5))}), 1)
    assert [r.value for r in core.drain(10)] == [b"A", b"B"]
    error = core.take_error()
    assert isinstance(error, RecordDeserializationError)
    assert (error.topic_partition, error.offset, error.field) == (TP0, 2, "value")
    assert core.position(TP0) == 2
    core.seek(TP0, 3)  # skip it, as in Kafka


# ---- the state table -----------------------------------------------------------------------


def test_transitions_outside_the_table_are_refused():
    core, _ = make_core()
    core.assign([TP0])
    state = core._partitions[TP0]
    assert (FetchState.FAILED, FetchState.FAILED) not in TRANSITIONS
    state.state = FetchState.FAILED
    with pytest.raises(AssertionError):
        state.move_to(FetchState.FAILED, 99)


def test_bad_configuration_is_rejected():
    with pytest.raises(ValueError, match="auto.offset.reset"):
        FetchConfig(auto_offset_reset="smallest")
    with pytest.raises(ValueError):
        FetchConfig(max_partition_fetch_bytes=0)
