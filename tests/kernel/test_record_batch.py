"""The batch codec: round trips, in-place offset stamping, and every kind of corruption."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from brokerlab import record_batch as rb

header_names = st.text(min_size=0, max_size=8)
optional_bytes = st.one_of(st.none(), st.binary(max_size=64))
records = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=2**40),
        optional_bytes,
        optional_bytes,
        st.lists(st.tuples(header_names, optional_bytes), max_size=3),
    ),
    min_size=1,
    max_size=20,
)


@given(records, st.integers(min_value=0, max_value=2**40))
def test_round_trip(items, base_offset):
    batch = bytearray(rb.encode_batch(items, producer_id=7, producer_epoch=1, base_sequence=3))
    rb.set_base_offset(batch, 0, base_offset)
    header = rb.validate_batch(bytes(batch))
    assert header.record_count == len(items)
    assert header.last_offset == base_offset + len(items) - 1
    decoded = rb.decode_records(bytes(batch))
    assert [r.offset for r in decoded] == list(range(base_offset, base_offset + len(items)))
    assert [(r.timestamp_ms, r.key, r.value, tuple(r.headers)) for r in decoded] == [
        (ts, k, v, tuple(h)) for ts, k, v, h in items
    ]


def test_stamping_offset_and_epoch_keeps_crc_valid():
    batch = bytearray(rb.encode_batch([(1, b"k", b"v", [])]))
    rb.set_base_offset(batch, 0, 1234)
    rb.set_partition_leader_epoch(batch, 0, 9)
    header = rb.validate_batch(bytes(batch))
    assert (header.base_offset, header.partition_leader_epoch) == (1234, 9)


@given(records, st.data())
def test_any_flipped_bit_after_the_crc_is_caught(items, data):
    batch = bytearray(rb.encode_batch(items))
    position = data.draw(st.integers(min_value=rb.ATTRIBUTES_OFFSET, max_value=len(batch) - 1))
    batch[position] ^= 1 << data.draw(st.integers(min_value=0, max_value=7))
    with pytest.raises(rb.CorruptBatchError):
        rb.validate_batch(bytes(batch))


@given(records, st.data())
def test_truncated_batch_is_rejected(items, data):
    batch = rb.encode_batch(items)
    cut = data.draw(st.integers(min_value=0, max_value=len(batch) - 1))
    with pytest.raises(rb.CorruptBatchError):
        rb.validate_batches(batch[:cut])


def test_record_count_disagreeing_with_length_is_rejected():
    good = rb.encode_batch([(1, None, b"a", []), (2, None, b"b", [])])
    records_only = good[rb.BATCH_HEADER_BYTES :]
    # Claim three records while carrying two: a specific error, not a crash.
    lying = rb.build_batch(records_only, 3, 1, 2)
    with pytest.raises(rb.CorruptBatchError, match="record count"):
        rb.validate_batch(lying)


def test_bad_magic_is_rejected():
    batch = bytearray(rb.encode_batch([(1, None, b"a", [])]))
    batch[rb.MAGIC_OFFSET] = 1
    with pytest.raises(rb.CorruptBatchError, match="magic"):
        rb.validate_batch(bytes(batch))


def test_iter_headers_stops_at_a_partial_batch():
    one = rb.encode_batch([(1, None, b"a", [])])
    two = rb.encode_batch([(2, None, b"b", [])])
    positions = [pos for pos, _ in rb.iter_headers(one + two[:-1])]
    assert positions == [0]


def test_empty_payload_is_rejected():
    with pytest.raises(rb.CorruptBatchError):
        rb.validate_batches(b"")
