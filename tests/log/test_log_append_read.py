import pytest
from log_testkit import TP, TP_DIR, CountingDisk, all_records, batch, headers_of, new_log, sized_batch

from brokerlab.disk import MemoryDisk
from brokerlab.record_batch import CRC_OFFSET, decode_records, encode_batch, validate_batches
from node.log import CorruptBatchError, InvalidOffsetError, OffsetOutOfRangeError, RecordTooLargeError
from node.log.segment import segment_file_name


def test_append_assigns_offsets_from_the_log_end_and_stamps_the_leader_epoch():
    _, log = new_log()
    first = log.append_as_leader(batch([b"a", b"b", b"c"], timestamp_ms=5_000), 3, now_ms=7)
    assert first == (0, 2, 3, 7, 5_002)
    second = log.append_as_leader(batch([b"d"]), 3, now_ms=8)
    assert (second.base_offset, second.last_offset) == (3, 3)
    assert log.log_end_offset == 4
    data = log.read(0, 1 << 20)
    validate_batches(data)  # stamping stays outside the CRC
    assert [(h.base_offset, h.partition_leader_epoch) for h in headers_of(data)] == [(0, 3), (3, 3)]
    assert [(r.offset, r.value) for r in decode_records(data)] == [(0, b"a"), (1, b"b"), (2, b"c"), (3, b"d")]


def test_a_produce_payload_with_several_batches_is_one_write():
    disk = CountingDisk()
    _, log = new_log(disk)
    disk.reset_counts()
    payload = batch([b"a", b"b"]) + batch([b"c"]) + batch([b"d", b"e", b"f"])
    info = log.append_as_leader(payload, 0, 0)
    assert (info.base_offset, info.last_offset, info.record_count) == (0, 5, 6)
    assert disk.appends == 1 and disk.fsyncs == 0  # flush policy "none"
    assert [h.base_offset for h in headers_of(log.read(0, 1 << 20))] == [0, 2, 3]


def _bad_crc():
    data = bytearray(batch([b"a"]))
    data[-1] ^= 0x01
    return bytes(data)


def _count_mismatch():
    # Two records' bytes under a header that claims one record.
    good = encode_batch([(1, b"k", b"a", ()), (2, b"k", b"b", ())])
    from brokerlab.record_batch import build_batch, encode_record
    records = encode_record(0, 0, b"k", b"a") + encode_record(1, 1, b"k", b"b")
    assert len(build_batch(records, 2, 1, 2)) == len(good)
    return build_batch(records, 1, 1, 2)


@pytest.mark.parametrize("payload", [
    pytest.param(_bad_crc(), id="bad-crc"),
    pytest.param(_count_mismatch(), id="count-mismatch"),
    pytest.param(batch([b"a", b"b"])[:-3], id="truncated-batch"),
    pytest.param(batch([b"ok"]) + _bad_crc(), id="good-then-bad"),
    pytest.param(batch([b"ok"]) + b"\x00" * 10, id="trailing-garbage"),
    pytest.param(b"", id="empty"),
])
def test_corrupt_input_is_refused_and_nothing_is_appended(payload):
    disk = MemoryDisk()
    _, log = new_log(disk)
    log.append_as_leader(batch([b"before"]), 0, 0)
    before = disk.file_bytes(f"{TP_DIR}/{segment_file_name(0)}")
    with pytest.raises(CorruptBatchError):
        log.append_as_leader(payload, 0, 0)
    with pytest.raises(CorruptBatchError):
        log.append_as_follower(payload, 0)
    assert log.log_end_offset == 1
    assert disk.file_bytes(f"{TP_DIR}/{segment_file_name(0)}") == before
    assert log.size_bytes == len(before)


def test_a_batch_over_max_message_bytes_is_refused():
    _, log = new_log(max_message_bytes=500)
    log.append_as_leader(sized_batch(500), 0, 0)
    with pytest.raises(RecordTooLargeError) as caught:
        log.append_as_leader(sized_batch(200) + sized_batch(501), 0, 0)
    assert caught.value.error_code == 10  # MESSAGE_TOO_LARGE
    assert log.log_end_offset == 1


def test_a_batch_over_the_segment_size_is_refused():
    _, log = new_log(segment_bytes=300)
    with pytest.raises(RecordTooLargeError):
        log.append_as_leader(sized_batch(301), 0, 0)
    assert log.log_end_offset == 0


def test_follower_appends_keep_offsets_and_epochs_and_must_continue_the_log():
    _, leader = new_log()
    leader.append_as_leader(batch([b"a", b"b"]), 2, 0)
    leader.append_as_leader(batch([b"c"]), 5, 0)
    replicated = leader.read(0, 1 << 20)
    _, follower = new_log()
    info = follower.append_as_follower(replicated, 0)
    assert (info.base_offset, info.last_offset, info.record_count) == (0, 2, 3)
    assert follower.read(0, 1 << 20) == replicated
    assert follower.leader_epoch_cache.entries == [(2, 0), (5, 2)]
    with pytest.raises(InvalidOffsetError):
        follower.append_as_follower(replicated, 0)  # offsets 0.. again: not the log end
    gap = leader.read(2, 1 << 20)
    _, other = new_log()
    with pytest.raises(InvalidOffsetError):
        other.append_as_follower(gap, 0)
    assert other.log_end_offset == 0


def test_read_returns_whole_batches_from_the_one_holding_the_fetch_offset():
    _, log = new_log()
    for values in ([b"a", b"b", b"c"], [b"d"], [b"e", b"f"]):
        log.append_as_leader(batch(values), 0, 0)
    assert [h.base_offset for h in headers_of(log.read(1, 1 << 20))] == [0, 3, 4]
    assert [h.base_offset for h in headers_of(log.read(3, 1 << 20))] == [3, 4]
    assert log.read(6, 1 << 20) == b""  # at the log end


def test_read_returns_at_least_one_batch_and_respects_max_bytes():
    _, log = new_log()
    for _ in range(3):
        log.append_as_leader(sized_batch(1000), 0, 0)
    assert len(log.read(0, 10)) == 1000  # Kafka's rule: one batch even if larger than max_bytes
    assert len(log.read(0, 1999)) == 1000
    assert len(log.read(0, 2000)) == 2000
    assert len(log.read(1, 1 << 20)) == 2000


def test_read_stops_before_max_offset():
    _, log = new_log()
    for values in ([b"a", b"b"], [b"c"], [b"d", b"e"]):
        log.append_as_leader(batch(values), 0, 0)
    assert [h.base_offset for h in headers_of(log.read(0, 1 << 20, max_offset=3))] == [0, 2]
    assert log.read(3, 1 << 20, max_offset=3) == b""
    # A batch that straddles max_offset is not visible yet.
    assert log.read(0, 1 << 20, max_offset=1) == b""
    assert [h.base_offset for h in headers_of(log.read(0, 1 << 20, max_offset=4))] == [0, 2]


def test_fetch_offsets_outside_the_log_are_out_of_range():
    _, log = new_log()
    log.append_as_leader(batch([b"a"]), 0, 0)
    with pytest.raises(OffsetOutOfRangeError) as caught:
        log.read(2, 100)
    assert caught.value.error_code == 1
    with pytest.raises(OffsetOutOfRangeError):
        log.read(-1, 100)
    assert log.read(1, 100) == b""


def test_reads_cross_segments_and_use_one_read_call_per_segment():
    disk = CountingDisk()
    _, log = new_log(disk, segment_bytes=10_000, index_interval_bytes=1024)
    for i in range(100):
        log.append_as_leader(sized_batch(400, timestamp_ms=i), 0, 0)
    assert log.segment_count == 4  # 25 batches of 400 bytes per segment
    disk.reset_counts()
    data = log.read(10, 3000)
    assert disk.reads == 1
    assert [h.base_offset for h in headers_of(data)] == list(range(10, 17))
    disk.reset_counts()
    data = log.read(20, 4000)  # from the middle of segment 0 into segment 1
    assert [h.base_offset for h in headers_of(data)] == list(range(20, 30))
    assert disk.reads == 2
    assert len(all_records(log)) == 100


def test_offset_index_entries_follow_index_interval_bytes():
    _, log = new_log(index_interval_bytes=1000)
    for _ in range(10):
        log.append_as_leader(sized_batch(400), 0, 0)
    # Kafka's rule: an entry once more than 1000 bytes went by since the last one.
    assert log.active_segment.index.entries() == [(3, 1200), (6, 2400), (9, 3600)]
    for offset in range(10):
        position = log.active_segment.index.lookup(offset)
        assert offset * 400 - position <= 1000 + 400


def test_size_roll_happens_before_the_append_that_would_exceed_segment_bytes():
    manager, log = new_log(segment_bytes=1000)
    log.append_as_leader(sized_batch(400), 0, 0)
    log.append_as_leader(sized_batch(400), 0, 0)
    log.append_as_leader(sized_batch(400), 0, 0)  # 1200 > 1000: a new segment first
    assert [(s.base_offset, s.size) for s in log.segments] == [(0, 800), (2, 400)]
    (event,) = manager.drain_events()
    assert event.name == "SegmentRolled"
    assert event.fields == {"topic": "orders", "partition": 0, "base_offset": 2, "previous_base_offset": 0,
                            "previous_size_bytes": 800, "reason": "segment_bytes"}


def test_age_roll_counts_from_the_first_append_of_the_segment():
    manager, log = new_log(segment_ms=1000)
    assert manager.tick(5_000) == []  # an empty segment never rolls
    log.append_as_leader(batch([b"a"]), 0, now_ms=10_000)
    log.append_as_leader(batch([b"b"]), 0, now_ms=10_500)
    assert log.next_deadline_ms() == 11_000
    assert manager.next_deadline_ms() <= 11_000
    assert manager.tick(10_999) == []
    events = manager.tick(11_000)
    assert [e.name for e in events] == ["SegmentRolled"]
    assert events[0].fields["reason"] == "segment_ms"
    assert log.segment_count == 2
    # An append that finds the active segment too old also rolls first.
    log.append_as_leader(batch([b"c"]), 0, now_ms=11_000)
    log.append_as_leader(batch([b"d"]), 0, now_ms=12_500)
    assert [s.base_offset for s in log.segments] == [0, 2, 3]
    assert [r[0] for r in all_records(log)] == [0, 1, 2, 3]


def test_offset_for_timestamp_uses_the_time_index_and_returns_the_first_match():
    _, log = new_log(segment_bytes=2000, index_interval_bytes=200)
    timestamps = [100, 300, 200, 500, 400, 900, 700, 800]
    for ts in timestamps:
        log.append_as_leader(encode_batch([(ts, b"k", b"v" * 100, ()), (ts + 1, b"k", b"w" * 100, ())]), 0, 0)
    assert log.segment_count > 1
    assert log.offset_for_timestamp(0) == (0, 100)
    assert log.offset_for_timestamp(101) == (1, 101)
    assert log.offset_for_timestamp(250) == (2, 300)
    assert log.offset_for_timestamp(450) == (6, 500)
    assert log.offset_for_timestamp(850) == (10, 900)
    assert log.offset_for_timestamp(902) is None
    assert log.offset_for_timestamp(850, max_offset=10) is None


def test_records_with_null_keys_values_and_headers_round_trip():
    _, log = new_log()
    payload = encode_batch([(1, None, b"v", ()), (2, b"k", None, (("h", b"x"), ("n", None)))])
    log.append_as_leader(payload, 0, 0)
    assert all_records(log) == [(0, 1, None, b"v", ()), (1, 2, b"k", None, (("h", b"x"), ("n", None)))]


def test_crc_is_not_recomputed_by_stamping():
    _, log = new_log()
    payload = batch([b"a"])
    log.append_as_leader(payload, 9, 0)
    stored = log.read(0, 100)
    assert stored[CRC_OFFSET:] == payload[CRC_OFFSET:]
    assert log.topic_partition == TP
