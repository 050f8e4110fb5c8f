"""MetadataJournal: framing, durability, and recovery to the longest valid prefix."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from brokerlab.disk import MemoryDisk, OsDisk
from brokerlab.v1.common_pb2 import Endpoint
from brokerlab.v1.metadata_pb2 import (
    FenceBrokerRecord,
    MetadataRecord,
    PartitionRecord,
    RegisterBrokerRecord,
    RemoveTopicRecord,
    TopicRecord,
)
from controller.journal import DEFAULT_PATH, FRAME_HEADER, MetadataJournal, encode_frame


def sample_records(count: int) -> list[MetadataRecord]:
    out = []
    for i in range(count):
        if i % 3 == 0:
            out.append(MetadataRecord(register_broker=RegisterBrokerRecord(broker_id=i, broker_epoch=i, endpoint=Endpoint(host="h", port=9000 + i), incarnation_id=f"inc-{i}", fenced=True)))
        elif i % 3 == 1:
            out.append(MetadataRecord(topic=TopicRecord(name=f"topic-{i}", topic_id=f"id-{i}")))
        else:
            out.append(MetadataRecord(partition=PartitionRecord(topic_id=f"id-{i - 1}", partition=0, replicas=[1, 2, 3], isr=[1, 2, 3], leader_id=1)))
    return out


@pytest.fixture(params=["memory", "os"])
def disk(request, tmp_path):
    return MemoryDisk() if request.param == "memory" else OsDisk(str(tmp_path))


def test_append_returns_end_offset_and_reads_back(disk):
    journal = MetadataJournal(disk)
    records = sample_records(7)
    assert journal.end_offset == 0
    assert journal.append(records[:3]) == 3
    assert journal.append([]) == 3
    assert journal.append(records[3:]) == 7
    assert journal.read(0, 100) == records
    assert journal.read(2, 3) == records[2:5]
    assert journal.read(7, 10) == []
    with pytest.raises(ValueError):
        journal.read(8, 1)
    with pytest.raises(ValueError):
        journal.read(-1, 1)
    journal.close()
    reopened = MetadataJournal(disk)
    assert list(reopened.records()) == records
    assert reopened.truncated_bytes == 0
    assert reopened.size_bytes == sum(len(encode_frame(r)) for r in records)


def test_append_is_durable_before_it_returns():
    disk = MemoryDisk()
    journal = MetadataJournal(disk)
    journal.append(sample_records(4))
    disk.crash()  # power loss right after append returned
    assert list(MetadataJournal(disk).records()) == sample_records(4)


def test_torn_tail_is_cut_and_appends_continue(disk):
    journal = MetadataJournal(disk)
    records = sample_records(5)
    journal.append(records)
    journal.close()
    handle = disk.open(DEFAULT_PATH)
    size = handle.size()
    handle.truncate(size - 3)  # the last frame lost its last 3 bytes
    handle.close()
    recovered = MetadataJournal(disk)
    assert list(recovered.records()) == records[:4]
    assert recovered.truncated_bytes == len(encode_frame(records[4])) - 3
    assert disk.open(DEFAULT_PATH).size() == recovered.size_bytes
    recovered.append([records[4]])
    recovered.close()
    assert list(MetadataJournal(disk).records()) == records


def test_crc_mismatch_cuts_from_the_bad_frame():
    disk = MemoryDisk()
    journal = MetadataJournal(disk)
    records = sample_records(6)
    journal.append(records)
    third_frame = sum(len(encode_frame(r)) for r in records[:2])
    disk.corrupt(DEFAULT_PATH, third_frame + FRAME_HEADER.size + 1, b"\xff")
    recovered = MetadataJournal(disk)
    assert list(recovered.records()) == records[:2]
    assert recovered.size_bytes == third_frame


def test_garbage_length_is_a_torn_tail():
    disk = MemoryDisk()
    MetadataJournal(disk).append(sample_records(2))
    disk.open(DEFAULT_PATH).append(b"\xff\xff\xff\xff\x00\x00\x00\x00junk")
    recovered = MetadataJournal(disk)
    assert list(recovered.records()) == sample_records(2)
    assert recovered.truncated_bytes == 12


def test_empty_and_lone_header_files():
    disk = MemoryDisk()
    assert MetadataJournal(disk).end_offset == 0
    disk.open(DEFAULT_PATH).append(b"\x00\x00")
    assert MetadataJournal(disk).end_offset == 0
    assert disk.file_bytes(DEFAULT_PATH) == b""


# ---- property: whatever is cut or flipped, recovery keeps exactly the longest valid prefix ----

record_strategy = st.one_of(
    st.builds(
        lambda b, e, host, inc: MetadataRecord(register_broker=RegisterBrokerRecord(broker_id=b, broker_epoch=e, endpoint=Endpoint(host=host, port=9092), incarnation_id=inc)),
        st.integers(0, 1000),
        st.integers(0, 2**40),
        st.text(max_size=20),
        st.text(max_size=30),
    ),
    st.builds(lambda n, i: MetadataRecord(topic=TopicRecord(name=n, topic_id=i)), st.text(max_size=60), st.text(max_size=22)),
    st.builds(
        lambda t, p, r: MetadataRecord(partition=PartitionRecord(topic_id=t, partition=p, replicas=r, isr=r, leader_id=r[0] if r else -1)),
        st.text(max_size=22),
        st.integers(0, 10_000),
        st.lists(st.integers(0, 100), max_size=5),
    ),
    st.builds(lambda b, e: MetadataRecord(fence_broker=FenceBrokerRecord(broker_id=b, broker_epoch=e)), st.integers(0, 5), st.integers(0, 99)),
    st.builds(lambda i: MetadataRecord(remove_topic=RemoveTopicRecord(topic_id=i)), st.text(max_size=22)),
    st.just(MetadataRecord()),
)


def frame_ends(records: list[MetadataRecord]) -> list[int]:
    ends, position = [], 0
    for record in records:
        position += len(encode_frame(record))
        ends.append(position)
    return ends


def write_journal(records: list[MetadataRecord]) -> MemoryDisk:
    disk = MemoryDisk()
    journal = MetadataJournal(disk)
    for record in records:  # one frame per append, as small commands write them
        journal.append([record])
    return disk


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records=st.lists(record_strategy, min_size=1, max_size=12), data=st.data())
def test_recovery_after_a_cut_keeps_the_longest_valid_prefix(records, data):
    disk = write_journal(records)
    size = len(disk.file_bytes(DEFAULT_PATH))
    cut = data.draw(st.integers(0, size), label="cut")
    disk.open(DEFAULT_PATH).truncate(cut)
    survivors = sum(1 for end in frame_ends(records) if end <= cut)
    recovered = MetadataJournal(disk)
    assert list(recovered.records()) == records[:survivors]
    assert len(disk.file_bytes(DEFAULT_PATH)) == recovered.size_bytes
    assert recovered.truncated_bytes == cut - recovered.size_bytes


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records=st.lists(record_strategy, min_size=1, max_size=12), data=st.data())
def test_recovery_after_a_bit_flip_keeps_the_frames_before_it(records, data):
    disk = write_journal(records)
    raw = disk.file_bytes(DEFAULT_PATH)
    position = data.draw(st.integers(0, len(raw) - 1), label="position")
    bit = data.draw(st.integers(0, 7), label="bit")
    disk.corrupt(DEFAULT_PATH, position, bytes([raw[position] ^ (1 << bit)]))
    survivors = sum(1 for end in frame_ends(records) if end <= position)
    recovered = MetadataJournal(disk)
    assert list(recovered.records()) == records[:survivors]
    # The recovered journal is writable and stays consistent.
    recovered.append([records[0]])
    assert list(MetadataJournal(disk).records()) == records[:survivors] + [records[0]]
