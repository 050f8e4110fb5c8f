"""acks=0 hands records to the network without waiting: close() must still let them reach the broker."""

from __future__ import annotations

import asyncio

from real_cluster import wait_until

from client import Producer


def test_acks_zero_records_reach_the_log_after_close(cluster):
    cluster.create_topic("fire-and-forget", partitions=1, replication_factor=3)
    bootstrap = [cluster.brokers[0].address]

    async def produce() -> list:
        producer = Producer(bootstrap, acks=0, linger_ms=1)
        handles = [await producer.send("fire-and-forget", b"v%d" % i) for i in range(500)]
        await producer.close()
        return [await handle for handle in handles]

    results = asyncio.run(asyncio.wait_for(produce(), 60))
    # Kafka's acks=0: no offsets are known to the producer.
    assert {metadata.offset for metadata in results} == {-1}
    leader = cluster.leader_of("fire-and-forget", 0)
    wait_until(lambda: cluster.log_dirs(leader)[("fire-and-forget", 0)].log_end_offset == 500, 10,
               message="all 500 acks=0 records in the leader's log")
