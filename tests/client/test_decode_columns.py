"""The consumer's decode path: record_batch.decode_batch_columns against what was encoded."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from brokerlab import record_batch as rb

payload = st.one_of(st.none(), st.binary(max_size=40))
header = st.tuples(st.text(max_size=5), payload)
record = st.tuples(st.integers(0, 10_000), payload, payload, st.lists(header, max_size=2).map(tuple))


def encode(records, base_offset=0, **fields):
    return rb.encode_batch([(1_000 + ts, k, v, h) for ts, k, v, h in records], base_offset=base_offset, **fields)


def expected(records, base_offset=0):
    return [rb.Record(base_offset + i, 1_000 + ts, k, v, h) for i, (ts, k, v, h) in enumerate(records)]


def columns_as_records(buf, first_offset=None):
    out = []
    for position, header_ in rb.iter_headers(buf):
        columns = rb.decode_batch_columns(buf, position, header_, first_offset)
        assert len(columns.timestamps) == len(columns.keys) == len(columns.values) == columns.record_count
        out.extend(rb.Record(*row) for row in zip(*columns))
    return out


@settings(max_examples=150, deadline=None)
@given(st.lists(record, min_size=1, max_size=20), st.integers(0, 1 << 40), st.integers(0, 25))
def test_mixed_records_round_trip_and_skip(records, base_offset, skip):
    buf = encode(records, base_offset)
    want = expected(records, base_offset)
    assert rb.decode_records(buf) == want
    assert columns_as_records(buf, base_offset + skip) == want[skip:]


@settings(max_examples=100, deadline=None)
@given(
    st.integers(1, 30),
    st.one_of(st.none(), st.integers(0, 12)),
    st.one_of(st.none(), st.integers(0, 120)),
    st.integers(0, 35),
)
def test_uniform_records_take_the_fast_path_and_match(count, key_size, value_size, skip):
    records = [
        (i * 3, None if key_size is None else bytes([i % 251]) * key_size,
         None if value_size is None else bytes([(i * 7) % 251]) * value_size, ())
        for i in range(count)
    ]
    buf = encode(records, 500)
    want = expected(records, 500)
    assert rb.decode_records(buf) == want
    assert columns_as_records(buf, 500 + skip) == want[skip:]


def test_same_total_size_but_different_shapes_is_not_mistaken_for_uniform():
    # Key 2 + value 4 and key 4 + value 2 give equal strides; the shape check must notice.
    records = [(0, b"ab", b"cdef", ()), (1, b"ghij", b"kl", ()), (2, None, b"mnopqr", ())]
    buf = encode(records)
    assert rb.decode_records(buf) == expected(records)


def test_log_append_time_stamps_every_record_with_the_max_timestamp():
    records = [(i, None, b"x" * 10, ()) for i in range(5)]
    buf = encode(records, attributes=rb.ATTR_TIMESTAMP_LOG_APPEND)
    assert [r.timestamp_ms for r in rb.decode_records(buf)] == [1_004] * 5


def test_several_batches_and_a_partial_tail():
    first = encode([(0, None, b"a" * 8, ())] * 3, 0)
    second = encode([(0, b"k", b"b" * 8, ())] * 2, 3)
    buf = first + second + second[:20]
    assert [r.offset for r in rb.decode_records(buf)] == [0, 1, 2, 3, 4]
    assert [r.offset for r in columns_as_records(buf, 2)] == [2, 3, 4]
    assert columns_as_records(buf, 10) == []


def test_decode_from_a_memoryview():
    buf = encode([(0, None, b"v" * 8, ())] * 4, 7)
    assert rb.decode_records(memoryview(buf)) == rb.decode_records(buf)
