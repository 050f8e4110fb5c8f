"""validate_batch's fast path for batches of equal-sized records (strided slices over the length
prefixes and offset deltas) must accept and refuse exactly what the record-by-record walk does,
with the same error, and fall back to the walk for anything else."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from brokerlab import record_batch as rb

SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

header_lists = st.lists(st.tuples(st.text(max_size=4), st.one_of(st.none(), st.binary(max_size=6))), max_size=2)
# Offsets inside a record that the checks read: the length prefix and the offset delta.
CHECKED_BYTES = (0, 1, 2, 3, 12, 13, 14, 15)


@st.composite
def record_regions(draw) -> tuple[bytes, int]:
    """The records of one batch, ``(region, record_count)``: mostly equal-sized (same key and
    value lengths and headers), sometimes mixed, then possibly damaged."""
    count = draw(st.integers(1, 70))
    key = draw(st.one_of(st.none(), st.binary(max_size=10)))
    value = draw(st.one_of(st.none(), st.binary(max_size=40)))
    headers = draw(header_lists)
    shape = draw(st.sampled_from(["equal"] * 6 + ["mixed", "tiny"]))
    if shape == "tiny":  # equal lengths, but shorter than a record header
        length = draw(st.integers(0, rb.RECORD_HEADER_BYTES - 5))
        records = [length.to_bytes(4, "big") + bytes(length)] * count
    else:
        values = [value] * count
        if shape == "mixed":  # the fast path must step aside
            values = draw(st.lists(st.one_of(st.none(), st.binary(max_size=40)), min_size=count, max_size=count))
        records = [rb.encode_record(i, i * 3, key, v, headers) for i, v in enumerate(values)]
    region = bytearray(b"".join(records))
    stride = len(records[0])
    for _ in range(draw(st.sampled_from([0, 1, 1, 2, 3]))):
        kind = draw(st.sampled_from(["field", "delta", "delta", "byte", "cut", "extend"]))
        if kind == "delta" and stride >= rb.RECORD_HEADER_BYTES:  # a wrong offset delta, lengths intact
            at = draw(st.integers(0, count - 1)) * stride + 12
            region[at:at + 4] = draw(st.integers(-(2**31), 2**31 - 1)).to_bytes(4, "big", signed=True)
        elif kind == "field" and region:  # a length or offset-delta byte of some record
            at = draw(st.integers(0, count - 1)) * stride + draw(st.sampled_from(CHECKED_BYTES))
            if at < len(region):
                region[at] = draw(st.integers(0, 255))
        elif kind == "byte" and region:
            region[draw(st.integers(0, len(region) - 1))] = draw(st.integers(0, 255))
        elif kind == "cut":
            del region[len(region) - draw(st.integers(0, min(len(region), 2 * stride))):]
        elif kind == "extend":
            region += draw(st.binary(min_size=1, max_size=2 * stride))
    count += draw(st.sampled_from([0, 0, 0, 0, -1, 1, 2]))
    return bytes(region), max(count, 1)


def outcome(check, *args) -> tuple | None:
    try:
        check(*args)
    except rb.CorruptBatchError as exc:
        return exc.reason, exc.position
    return None


@SETTINGS
@given(record_regions(), st.integers(0, 70), st.sampled_from([bytes, bytearray, memoryview]))
def test_the_fast_path_agrees_with_the_walk(region_count, padding, wrap):
    region, count = region_count
    buf = wrap(b"\xaa" * padding + region + b"\x55" * 7)  # records sit inside a larger buffer
    args = (buf, padding, padding + len(region), count, 3)
    expected = outcome(rb._walk_records, *args)
    assert outcome(rb._check_records, *args) == expected
    if count >= rb._FAST_CHECK_MIN_RECORDS and rb.uniform_record_stride(*args[:4]):
        event("equal lengths: " + ("valid" if expected is None else "refused (offset deltas or short records)"))
    else:
        event("walked" if expected is None else "walked, refused")


@SETTINGS
@given(record_regions())
def test_validate_batch_agrees_with_the_walk(region_count):
    region, count = region_count
    batch = rb.build_batch(region, count, 1_000, 1_000)  # a valid CRC over whatever the records are
    expected = outcome(rb._walk_records, region, 0, len(region), count, 0)
    if expected is None:
        assert rb.validate_batch(batch).record_count == count
    else:
        with pytest.raises(rb.CorruptBatchError) as info:
            rb.validate_batch(batch)
        assert (info.value.reason, info.value.position) == expected


@SETTINGS
@given(record_regions())
def test_uniform_record_stride_matches_the_length_chain(region_count):
    region, count = region_count
    lengths, position = [], 0
    while len(lengths) < count and len(region) - position >= 4:
        lengths.append(int.from_bytes(region[position:position + 4], "big", signed=True))
        position += 4 + max(lengths[-1], 0)
    uniform = (len(lengths) == count and len(set(lengths)) == 1 and lengths[0] >= 0
               and (4 + lengths[0]) * count == len(region))
    assert rb.uniform_record_stride(region, 0, len(region), count) == (4 + lengths[0] if uniform else 0)


def uniform_batch(count: int, value_size: int = 100) -> bytes:
    return rb.encode_batch([(1_000 + i, b"k", bytes(value_size), ()) for i in range(count)])


def test_equal_sized_records_skip_the_walk(monkeypatch):
    def walk(*args):
        raise AssertionError("walked")

    monkeypatch.setattr(rb, "_walk_records", walk)
    assert rb.validate_batch(uniform_batch(1000)).record_count == 1000
    assert rb.validate_batches(uniform_batch(40) + uniform_batch(3000, 16))[1].record_count == 3000


def test_a_bad_offset_delta_in_equal_sized_records_keeps_its_message():
    count = 50
    region = bytearray(b"".join(rb.encode_record(i, 0, None, bytes(30)) for i in range(count)))
    stride = len(region) // count
    region[20 * stride + 12:20 * stride + 16] = (7).to_bytes(4, "big")
    batch = rb.build_batch(bytes(region), count, 1, 1)
    with pytest.raises(rb.CorruptBatchError, match="^record 20 has offset delta 7$"):
        rb.validate_batch(b"\0" * 9 + batch, 9)
