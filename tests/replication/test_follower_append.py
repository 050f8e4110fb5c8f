"""Follower appends check batches without re-walking every record (node/log addition for
replication: ``check_replicated_batches``), yet still refuse what REFERENCE.md names: a bad CRC,
a record count that disagrees with the batch length, a truncated batch."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from brokerlab.record_batch import (
    CorruptBatchError,
    build_batch,
    encode_batch,
    encode_record,
    validate_batches,
)
from node.log.replicated_batches import check_replicated_batches

values = st.one_of(st.none(), st.binary(max_size=40))
records = st.lists(st.tuples(st.integers(0, 10_000), st.one_of(st.none(), st.binary(max_size=8)), values),
                   min_size=1, max_size=30)


def payload(batches) -> bytes:
    return b"".join(encode_batch([(1_000 + ts, key, value, ()) for ts, key, value in batch]) for batch in batches)


@settings(max_examples=200, deadline=None)
@given(st.lists(records, min_size=1, max_size=4))
def test_valid_payloads_give_the_same_headers_as_full_validation(batches) -> None:
    data = payload(batches)
    assert check_replicated_batches(data) == validate_batches(data)


@settings(max_examples=200, deadline=None)
@given(records, st.integers(-3, 3).filter(lambda d: d != 0))
def test_a_record_count_that_disagrees_with_the_length_is_refused(batch, delta) -> None:
    encoded = b"".join(encode_record(i, 0, key, value) for i, (_, key, value) in enumerate(batch))
    count = len(batch) + delta
    if count < 1:
        return
    data = build_batch(encoded, count, 1_000, 1_000)  # a valid CRC over a lying header
    with pytest.raises(CorruptBatchError):
        check_replicated_batches(data)


def test_uniform_records_take_the_fast_path_and_still_catch_a_bad_length() -> None:
    same = [encode_record(i, 0, None, b"v" * 100) for i in range(50)]
    assert len(check_replicated_batches(build_batch(b"".join(same), 50, 1, 1))) == 1
    # One record one byte longer, another one shorter: the total length still matches.
    odd = list(same)
    odd[10] = encode_record(10, 0, None, b"v" * 101)
    odd[20] = encode_record(20, 0, None, b"v" * 99)
    data = build_batch(b"".join(odd), 50, 1, 1)
    assert len(check_replicated_batches(data)) == 1  # a valid batch of unequal records
    stride = len(same[0])
    broken = bytearray(b"".join(same))
    broken[stride * 7: stride * 7 + 4] = (stride - 4 - 3).to_bytes(4, "big")  # record 7 claims 3 bytes less
    with pytest.raises(CorruptBatchError):
        check_replicated_batches(build_batch(bytes(broken), 50, 1, 1))


@pytest.mark.parametrize("cut", [1, 10, 61])
def test_truncated_and_empty_payloads_are_refused(cut: int) -> None:
    data = payload([[(0, None, b"abc"), (1, None, b"def")]])
    with pytest.raises(CorruptBatchError):
        check_replicated_batches(data[:-cut])
    with pytest.raises(CorruptBatchError):
        check_replicated_batches(b"")
    bad = bytearray(data)
    bad[-1] ^= 1
    with pytest.raises(CorruptBatchError, match="CRC"):
        check_replicated_batches(bytes(bad))
