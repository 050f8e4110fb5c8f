"""Producer ids: blocks from the controller (AllocateProducerIds, journaled), handed out by every
broker (InitProducerId), unique across brokers and across controller and broker restarts."""

from __future__ import annotations

import random

from replication_harness import ReplicationCluster

from brokerlab.errors import ErrorCode
from brokerlab.ids import CONTROLLER_NODE
from brokerlab.v1 import broker_pb2, controller_pb2
from controller.core import ControllerCore
from controller.journal import MetadataJournal
from controller.producer_ids import PRODUCER_ID_BLOCK_SIZE


def init(cluster: ReplicationCluster, broker_id: int) -> broker_pb2.InitProducerIdResponse:
    return cluster.call(f"broker-{broker_id}", "InitProducerId", broker_pb2.InitProducerIdRequest())


def ready_cluster() -> ReplicationCluster:
    cluster = ReplicationCluster()
    cluster.wait_ready()
    return cluster


def journal_blocks(cluster: ReplicationCluster) -> list[tuple[int, int]]:
    journal = MetadataJournal(cluster.controller_disk)
    return [(r.producer_ids.broker_id, r.producer_ids.next_producer_id)
            for r in journal.records() if r.WhichOneof("record") == "producer_ids"]


def test_every_broker_hands_out_ids_from_its_own_journaled_block() -> None:
    cluster = ready_cluster()
    assert journal_blocks(cluster) == []  # lazily: no block before the first InitProducerId
    answers = {b: [init(cluster, b) for _ in range(3)] for b in (1, 2, 3)}
    ids = [a.producer_id for b in answers for a in answers[b]]
    assert all(a.error_code == ErrorCode.NONE and a.producer_epoch == 0 for b in answers for a in answers[b])
    assert len(set(ids)) == 9
    for got in answers.values():
        assert [a.producer_id for a in got] == [got[0].producer_id + i for i in range(3)]  # one block
    assert sorted(journal_blocks(cluster)) == sorted(
        (b, answers[b][0].producer_id + PRODUCER_ID_BLOCK_SIZE) for b in (1, 2, 3))


def test_ids_stay_unique_across_a_controller_restart_and_a_broker_restart() -> None:
    cluster = ready_cluster()
    before = {init(cluster, b).producer_id for b in (1, 2)}
    # The controller restarts from its journal; broker 1 restarts with no block in memory.
    cluster.controller = ControllerCore(cluster.controller_config, MetadataJournal(cluster.controller_disk),
                                        random.Random(8), "replication-test")
    cluster.kill(1)
    cluster.start(1)
    cluster.wait_ready()
    after = init(cluster, 1).producer_id
    assert after >= max(before) - max(before) % PRODUCER_ID_BLOCK_SIZE + PRODUCER_ID_BLOCK_SIZE
    assert len(journal_blocks(cluster)) == 3


def test_the_next_block_is_fetched_before_the_current_one_runs_out() -> None:
    cluster = ready_cluster()
    first = init(cluster, 1).producer_id
    for _ in range(int(PRODUCER_ID_BLOCK_SIZE * 0.9)):
        init(cluster, 1)
    assert len(journal_blocks(cluster)) == 2  # prefetched at 90 %
    ids = [init(cluster, 1).producer_id for _ in range(PRODUCER_ID_BLOCK_SIZE // 10 + 5)]
    assert ids[-1] > first + PRODUCER_ID_BLOCK_SIZE and len(set(ids)) == len(ids)


def test_without_the_controller_init_is_answered_retriably_after_the_request_timeout() -> None:
    cluster = ready_cluster()
    cluster.isolate(1)  # clients still reach broker-1, the controller does not
    request_id = cluster.request("broker-1", "InitProducerId", broker_pb2.InitProducerIdRequest())
    assert request_id not in cluster.replies  # parked, waiting for a block
    cluster.advance(cluster.core(1).config.controller_request_timeout_ms + 10)
    answer = cluster.replies.pop(request_id).message
    assert answer.error_code == ErrorCode.COORDINATOR_LOAD_IN_PROGRESS
    cluster.heal()
    cluster.advance(2_000)
    assert init(cluster, 1).error_code == ErrorCode.NONE


def test_transactions_and_stale_brokers_are_refused() -> None:
    cluster = ready_cluster()
    answer = cluster.call("broker-1", "InitProducerId", broker_pb2.InitProducerIdRequest(transactional_id="tx"))
    assert answer.error_code == ErrorCode.INVALID_REQUEST
    stale = cluster.call(CONTROLLER_NODE, "AllocateProducerIds",
                         controller_pb2.AllocateProducerIdsRequest(broker_id=1, broker_epoch=12345))
    assert stale.error_code == ErrorCode.STALE_BROKER_EPOCH and journal_blocks(cluster) == []
