"""GroupAdmin.list_offsets (lag in `group describe`, offset resets) asks again on retriable
errors — OFFSET_NOT_AVAILABLE from a leader elected a moment ago (KIP-207), a leader that moved
— and fails at once on anything else."""

from __future__ import annotations

import asyncio

import pytest

from brokerlab.errors import ErrorCode, KafkaError
from brokerlab.ids import TopicPartition
from brokerlab.v1 import broker_pb2
from client.group_admin import LATEST, GroupAdmin

TP = TopicPartition("orders", 0)


class FakeLink:
    request_timeout_ms = 1_000

    def __init__(self, answers: list[tuple[int, int]]) -> None:
        self.answers = answers  # (error code, offset) per call, in order
        self.calls = 0
        self.refreshes = 0
        self.cache = self

    def leader_for(self, tp: TopicPartition) -> int:
        return 1

    async def refresh_metadata(self, topics) -> None:
        self.refreshes += 1

    async def call_broker(self, broker_id: int, rpc: str, request) -> broker_pb2.ListOffsetsResponse:
        code, offset = self.answers[min(self.calls, len(self.answers) - 1)]
        self.calls += 1
        response = broker_pb2.ListOffsetsResponse()
        response.partitions.add(topic=TP.topic, partition=TP.partition, offset=offset, error_code=code,
                                error_message="" if code == 0 else "not now")
        return response


def test_offset_not_available_after_an_election_is_asked_again() -> None:
    link = FakeLink([(ErrorCode.OFFSET_NOT_AVAILABLE, -1), (ErrorCode.OFFSET_NOT_AVAILABLE, -1), (0, 614)])
    assert asyncio.run(GroupAdmin(link).list_offsets({TP: LATEST})) == {TP: 614}
    assert link.calls == 3 and link.refreshes == 3  # fresh metadata before every attempt


def test_a_non_retriable_error_fails_at_once_and_a_retriable_one_at_the_timeout() -> None:
    link = FakeLink([(ErrorCode.INVALID_REQUEST, -1)])
    with pytest.raises(KafkaError) as failed:
        asyncio.run(GroupAdmin(link).list_offsets({TP: LATEST}))
    assert failed.value.code == ErrorCode.INVALID_REQUEST and link.calls == 1
    link = FakeLink([(ErrorCode.OFFSET_NOT_AVAILABLE, -1)])
    with pytest.raises(KafkaError) as timed_out:
        asyncio.run(GroupAdmin(link).list_offsets({TP: LATEST}, timeout_ms=250))
    assert timed_out.value.code == ErrorCode.OFFSET_NOT_AVAILABLE and link.calls == 2  # 0.1 s, then 0.2 s > 0.25 s
