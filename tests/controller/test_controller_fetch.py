"""FetchMetadataRecords: immediate answers, long-poll parking, release on new records, expiry by tick."""

from __future__ import annotations

from controller_harness import Harness

from brokerlab.errors import ErrorCode
from brokerlab.v1 import controller_pb2 as pb


def fetch(offset: int, max_wait_ms: int = 500, max_records: int = 0) -> pb.FetchMetadataRecordsRequest:
    return pb.FetchMetadataRecordsRequest(broker_id=1, fetch_offset=offset, max_wait_ms=max_wait_ms, max_records=max_records)


def test_answers_at_once_when_records_exist():
    h = Harness()
    h.start_brokers([1, 2])
    end = h.core.journal.end_offset
    response = h.call("FetchMetadataRecords", fetch(0))
    assert (response.error_code, response.base_offset, response.end_offset, len(response.records)) == (0, 0, end, end)
    assert list(response.records) == h.core.journal.read(0, end)
    limited = h.call("FetchMetadataRecords", fetch(1, max_records=2))
    assert (limited.base_offset, len(limited.records)) == (1, 2)


def test_parks_at_the_end_and_is_released_by_new_records():
    h = Harness()
    h.start_brokers([1])
    end = h.core.journal.end_offset
    parked = h.send("FetchMetadataRecords", fetch(end, max_wait_ms=500), now_ms=10)
    parked_id = h._request_id
    assert parked.replies == []
    assert h.core.next_deadline_ms() == 510
    effects = h.send("CreateTopics", pb.CreateTopicsRequest(topics=[pb.CreatableTopic(name="t", num_partitions=2, replication_factor=1)]), now_ms=20)
    by_id = {r.request_id: r.message for r in effects.replies}
    assert set(by_id) == {parked_id, h._request_id}
    released = by_id[parked_id]
    assert released.base_offset == end
    assert [r.WhichOneof("record") for r in released.records] == ["topic", "partition", "partition"]
    assert released.end_offset == end + 3
    # The fetch reply is emitted before the CreateTopics reply, after the records are durable.
    assert [r.request_id for r in effects.replies] == [parked_id, h._request_id]
    assert h.core.parked == []


def test_parked_fetch_expires_empty_on_tick():
    h = Harness()
    end = h.core.journal.end_offset
    h.send("FetchMetadataRecords", fetch(end, max_wait_ms=300), now_ms=1000)
    assert h.tick(1299).replies == []
    (reply,) = h.tick(1300).replies
    assert (reply.message.error_code, reply.message.base_offset, list(reply.message.records)) == (0, end, [])
    assert h.core.parked == [] and h.core.next_deadline_ms() is None


def test_no_wait_answers_empty_at_once():
    h = Harness()
    response = h.call("FetchMetadataRecords", fetch(0, max_wait_ms=0))
    assert (response.error_code, len(response.records), response.end_offset) == (0, 0, 0)


def test_offsets_outside_the_journal_are_out_of_range():
    h = Harness()
    h.register(1)
    for offset in (-1, 2):
        response = h.call("FetchMetadataRecords", fetch(offset))
        assert response.error_code == ErrorCode.OFFSET_OUT_OF_RANGE
        assert response.end_offset == 1


def test_several_parked_fetches_release_together_and_keep_their_own_limits():
    h = Harness()
    h.start_brokers([1, 2])
    end = h.core.journal.end_offset
    h.send("FetchMetadataRecords", fetch(end, max_records=1))
    h.send("FetchMetadataRecords", fetch(end))
    effects = h.send("CreateTopics", pb.CreateTopicsRequest(topics=[pb.CreatableTopic(name="t", num_partitions=3, replication_factor=2)]))
    fetches = [r.message for r in effects.replies if r.rpc == "FetchMetadataRecords"]
    assert [len(f.records) for f in fetches] == [1, 4]


def test_heartbeat_that_writes_nothing_does_not_release_parked_fetches():
    h = Harness()
    epochs = h.start_brokers([1])
    end = h.core.journal.end_offset
    h.send("FetchMetadataRecords", fetch(end))
    effects = h.send("BrokerHeartbeat", pb.BrokerHeartbeatRequest(broker_id=1, broker_epoch=epochs[1], current_metadata_offset=end - 1))
    assert [r.rpc for r in effects.replies] == ["BrokerHeartbeat"]
    assert len(h.core.parked) == 1
