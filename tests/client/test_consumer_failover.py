"""FetchCore under failover: leader epochs on requests, backoff, and the position across a leader change.

Sans-IO, no sockets, no sleeps: envelopes in and out, time is a number.
"""

from __future__ import annotations

import random

import pytest
from test_consumer_core import TP0, events, fetch_reply, list_offsets_reply, metadata_response, sends

from brokerlab import record_batch as rb
from brokerlab.errors import ErrorCode
from brokerlab.v1 import broker_pb2
from client.consumer.fetcher import FetchConfig, FetchCore, FetchState
from client.metadata import MetadataCache


def epoch_batch(base_offset, count, epoch):
    return rb.encode_batch([(1_000 + i, None, b"v%d" % (base_offset + i), ()) for i in range(count)],
                           base_offset=base_offset, partition_leader_epoch=epoch)


_PENDING: dict[int, list] = {}  # core id -> envelopes a step already sent


def next_sends(core, now_ms, rpc):
    """What ``core`` sends for ``rpc``: those its last step sent (kept aside), else a tick's."""
    pending = [e for e in _PENDING.pop(id(core), []) if e.rpc == rpc]
    return pending or sends(core.tick(now_ms), rpc)


def core_at(epoch=3, seed=None, **config):
    """TP0 led by broker 1 at ``epoch``, positioned by ListOffsets (so the position has an epoch).

    max.partition.fetch.bytes=1: one fetch at a time, the next only once the app drained the last.
    """
    cache = MetadataCache()
    cache.update(metadata_response(leaders=(1, 2), epochs=(epoch, 0)), 0)
    config.setdefault("max_partition_fetch_bytes", 1)
    core = FetchCore(FetchConfig(auto_offset_reset="earliest", **config), cache,
                     random=None if seed is None else random.Random(seed))
    core.assign([TP0])
    (listing,) = sends(core.tick(0), "ListOffsets")
    assert listing.message.partitions[0].current_leader_epoch == epoch
    _PENDING[id(core)] = core.step(list_offsets_reply(listing, {("orders", 0): 0}), 1).sends
    return core, cache


def read(core, cache, epoch, base, count, now_ms):
    """One fetch answered with ``count`` records from ``base`` stamped ``epoch``; returns offsets polled."""
    (fetch,) = next_sends(core, now_ms, "Fetch")
    assert fetch.message.partitions[0].current_leader_epoch == cache.leader_epoch_for(TP0)
    core.step(fetch_reply(fetch, {TP0: (0, epoch_batch(base, count, epoch))}), now_ms)
    return [r.offset for r in core.drain(1000)]


def epoch_reply(envelope, end_offset, leader_epoch, code=0):
    response = broker_pb2.OffsetForLeaderEpochResponse()
    for p in envelope.message.partitions:
        response.partitions.add(topic=p.topic, partition=p.partition, error_code=code,
                                leader_epoch=leader_epoch, end_offset=end_offset)
    return envelope.reply(response)


def test_requests_carry_the_leader_epoch_from_metadata() -> None:
    core, cache = core_at(epoch=7)
    assert read(core, cache, 7, 0, 3, 2) == [0, 1, 2]


def test_a_leader_change_keeps_the_position_after_validating_it_with_the_new_leader() -> None:
    core, cache = core_at(epoch=3)
    assert read(core, cache, 3, 0, 5, 2) == [0, 1, 2, 3, 4]
    # Another fetch is answered with records the app has not polled yet; then the leader moves.
    (fetch,) = next_sends(core, 3, "Fetch")
    core.step(fetch_reply(fetch, {TP0: (0, epoch_batch(5, 3, 3))}), 3)
    cache.update(metadata_response(leaders=(2, 2), epochs=(4, 0)), 4)
    effects = core.tick(5)
    assert sends(effects, "Fetch") == []
    (validate,) = sends(effects, "OffsetForLeaderEpoch")
    part = validate.message.partitions[0]
    assert validate.dst == "broker-2" and validate.message.replica_id == -1
    assert (part.current_leader_epoch, part.leader_epoch) == (4, 3)
    assert core.position(TP0) is None  # being validated (Kafka's position() waits too)
    assert core.drain(100) == []  # what the old leader sent is dropped, to be fetched again
    effects = core.step(epoch_reply(validate, end_offset=8, leader_epoch=3), 6)
    assert events(effects, "PositionValidated")[0]["truncated"] is False
    assert core.position(TP0) == 5
    (refetch,) = sends(effects, "Fetch")
    assert refetch.dst == "broker-2" and refetch.message.partitions[0].fetch_offset == 5
    core.step(fetch_reply(refetch, {TP0: (0, epoch_batch(5, 3, 3))}), 7)
    assert [r.offset for r in core.drain(100)] == [5, 6, 7]  # no skip, no duplicate


def test_a_truncated_log_moves_the_position_back_to_the_divergence_point_only() -> None:
    core, cache = core_at(epoch=3)
    read(core, cache, 3, 0, 10, 2)
    cache.update(metadata_response(leaders=(2, 2), epochs=(5, 0)), 3)  # an unclean election
    (validate,) = sends(core.tick(4), "OffsetForLeaderEpoch")
    effects = core.step(epoch_reply(validate, end_offset=7, leader_epoch=3), 5)
    assert events(effects, "PositionValidated") == [
        {"topic": "orders", "partition": 0, "position": 7, "end_offset": 7, "truncated": True}
    ]
    assert core.position(TP0) == 7
    assert sends(effects, "Fetch")[0].message.partitions[0].fetch_offset == 7


def test_truncation_with_auto_offset_reset_none_fails_the_partition() -> None:
    cache = MetadataCache()
    cache.update(metadata_response(epochs=(3, 0)), 0)
    core = FetchCore(FetchConfig(auto_offset_reset="none", max_partition_fetch_bytes=1), cache)
    core.assign([TP0])
    core.seek(TP0, 0)
    assert read(core, cache, 3, 0, 4, 1) == [0, 1, 2, 3]
    cache.update(metadata_response(leaders=(2, 2), epochs=(4, 0)), 2)
    (validate,) = sends(core.tick(3), "OffsetForLeaderEpoch")
    core.step(epoch_reply(validate, end_offset=2, leader_epoch=3), 4)
    error = core.take_error()
    assert error.code == ErrorCode.OFFSET_OUT_OF_RANGE and "truncation" in error.message
    core.seek(TP0, 2)
    assert core.position(TP0) == 2


def test_a_broker_without_offset_for_leader_epoch_skips_the_validation() -> None:
    core, cache = core_at(epoch=3)
    read(core, cache, 3, 0, 4, 2)
    cache.update(metadata_response(leaders=(2, 2), epochs=(4, 0)), 3)
    (validate,) = sends(core.tick(4), "OffsetForLeaderEpoch")
    effects = core.step(validate.failed("INVALID_REQUEST: OffsetForLeaderEpoch failed: UNIMPLEMENTED"), 5)
    assert events(effects, "PositionValidationSkipped")
    assert sends(effects, "Fetch")[0].message.partitions[0].fetch_offset == 4


@pytest.mark.parametrize("code", [ErrorCode.FENCED_LEADER_EPOCH, ErrorCode.UNKNOWN_LEADER_EPOCH,
                                  ErrorCode.NOT_LEADER_OR_FOLLOWER])
def test_a_validation_refused_for_a_stale_epoch_refreshes_and_tries_again(code) -> None:
    core, cache = core_at(epoch=3)
    read(core, cache, 3, 0, 4, 2)
    cache.update(metadata_response(leaders=(2, 2), epochs=(4, 0)), 3)
    (validate,) = sends(core.tick(4), "OffsetForLeaderEpoch")
    core.step(epoch_reply(validate, -1, -1, code=code), 5)
    assert cache.update_requested
    cache.update(metadata_response(leaders=(3, 2), epochs=(5, 0)), 6)
    (again,) = sends(core.tick(7), "OffsetForLeaderEpoch")  # newer epoch: no backoff to wait out
    assert again.dst == "broker-3" and again.message.partitions[0].current_leader_epoch == 5
    core.step(epoch_reply(again, 4, 3), 8)
    assert core.position(TP0) == 4


def test_no_validation_after_an_explicit_seek() -> None:
    cache = MetadataCache()
    cache.update(metadata_response(epochs=(3, 0)), 0)
    core = FetchCore(FetchConfig(), cache)
    core.assign([TP0])
    core.seek(TP0, 10)  # an offset without an epoch: nothing to validate it against
    (fetch,) = sends(core.tick(0), "Fetch")
    core.step(fetch_reply(fetch, {TP0: (ErrorCode.NOT_LEADER_OR_FOLLOWER, b"")}), 1)
    cache.update(metadata_response(leaders=(2, 2), epochs=(4, 0)), 2)
    effects = core.tick(3)
    assert sends(effects, "OffsetForLeaderEpoch") == []
    (fetch,) = sends(effects, "Fetch")
    assert fetch.dst == "broker-2" and fetch.message.partitions[0].fetch_offset == 10


@pytest.mark.parametrize("code", [ErrorCode.NOT_LEADER_OR_FOLLOWER, ErrorCode.FENCED_LEADER_EPOCH,
                                  ErrorCode.UNKNOWN_LEADER_EPOCH, ErrorCode.LEADER_NOT_AVAILABLE])
def test_leader_errors_back_off_exponentially_until_a_newer_epoch_shows(code) -> None:
    core, cache = core_at(epoch=3, retry_backoff_ms=100, retry_backoff_max_ms=1000)
    now, gaps = 2, []
    for _ in range(4):
        (fetch,) = next_sends(core, now, "Fetch")
        core.step(fetch_reply(fetch, {TP0: (code, b"")}), now)
        cache.update(metadata_response(epochs=(3, 0)), now)  # the refresh still names broker 1
        gaps.append(core.next_deadline_ms() - now)
        assert sends(core.tick(core.next_deadline_ms() - 1), "Fetch") == []
        assert cache.update_requested  # still looking for the new leader while backing off
        now = core.next_deadline_ms()
    assert gaps == [100, 200, 400, 800]
    (fetch,) = sends(core.tick(now), "Fetch")
    core.step(fetch.failed("NETWORK_EXCEPTION: UNAVAILABLE"), now)
    cache.update(metadata_response(leaders=(2, 2), epochs=(4, 0)), now + 1)
    (validate,) = sends(core.tick(now + 2), "OffsetForLeaderEpoch")  # at once, not after 1000 ms
    assert validate.dst == "broker-2"


def test_backoff_jitter_is_drawn_from_the_injected_random() -> None:
    def gaps(seed):
        core, cache = core_at(epoch=3, seed=seed, retry_backoff_ms=100, retry_backoff_max_ms=1000)
        now, out = 2, []
        for _ in range(5):
            (fetch,) = next_sends(core, now, "Fetch")
            core.step(fetch_reply(fetch, {TP0: (ErrorCode.NOT_ENOUGH_REPLICAS, b"")}), now)
            out.append(core.next_deadline_ms() - now)
            now = core.next_deadline_ms()
        return out

    assert gaps(1) == gaps(1) != gaps(2)
    for gap, base in zip(gaps(1), [100, 200, 400, 800, 1000]):
        assert 0.8 * base <= gap <= 1.2 * base


def test_a_successful_fetch_resets_the_backoff() -> None:
    core, cache = core_at(epoch=3, retry_backoff_ms=100)
    (fetch,) = next_sends(core, 2, "Fetch")
    core.step(fetch_reply(fetch, {TP0: (ErrorCode.NOT_ENOUGH_REPLICAS, b"")}), 2)
    (fetch,) = sends(core.tick(102), "Fetch")
    core.step(fetch_reply(fetch, {TP0: (ErrorCode.NOT_ENOUGH_REPLICAS, b"")}), 102)
    assert core.next_deadline_ms() == 302
    assert read(core, cache, 3, 0, 1, 302) == [0]
    (fetch,) = sends(core.tick(303), "Fetch")
    core.step(fetch_reply(fetch, {TP0: (ErrorCode.NOT_ENOUGH_REPLICAS, b"")}), 303)
    assert core.next_deadline_ms() == 403


def test_transitions_include_validation() -> None:
    from client.consumer.fetcher import TRANSITIONS

    assert (FetchState.FETCHING, FetchState.AWAITING_VALIDATION) in TRANSITIONS
    assert (FetchState.AWAITING_VALIDATION, FetchState.FETCHING) in TRANSITIONS
    assert (FetchState.AWAITING_RESET, FetchState.AWAITING_VALIDATION) not in TRANSITIONS
