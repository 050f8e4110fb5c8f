"""A consumer group member as its own process, for the real-process group tests.

    python group_member.py '{"bootstrap": [...], "group": "g", "topic": "t", ...}'

It subscribes, polls, "processes" each batch for ``process_ms``, commits exactly what it
processed (synchronously, auto-commit off) and prints one JSON line per event on stdout:
``assigned`` / ``revoked`` / ``lost`` (partitions, generation), ``records`` (per partition: first
and last offset, count, values), ``committed`` (offsets) and ``commit_failed`` (error). Every
line carries ``t``, the wall-clock time, so the test can line events up across processes.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from brokerlab.errors import KafkaError  # noqa: E402
from brokerlab.ids import TopicPartition  # noqa: E402
from client import Consumer  # noqa: E402


def emit(event: str, **fields) -> None:
    sys.stdout.write(json.dumps({"ev": event, "t": time.time(), **fields}) + "\n")
    sys.stdout.flush()


async def main(cfg: dict) -> None:
    consumer = Consumer(
        cfg["bootstrap"], group_id=cfg["group"], client_id=cfg.get("client_id", "member"),
        group_instance_id=cfg.get("instance_id"), auto_offset_reset="earliest", enable_auto_commit=False,
        session_timeout_ms=cfg.get("session_timeout_ms", 3000), heartbeat_interval_ms=cfg.get("heartbeat_ms", 300),
        max_poll_interval_ms=cfg.get("max_poll_interval_ms", 300_000),
        partition_assignment_strategy=cfg.get("strategy", "range,cooperative-sticky"),
        fetch_max_wait_ms=100, request_timeout_ms=cfg.get("request_timeout_ms", 10_000))

    def generation() -> int:
        return consumer.group_metadata()["generation_id"]

    def listener(name):
        def on_change(tps):
            emit(name, partitions=sorted(tp.partition for tp in tps), generation=generation())
        return on_change

    consumer.subscribe([cfg["topic"]], on_partitions_assigned=listener("assigned"),
                       on_partitions_revoked=listener("revoked"), on_partitions_lost=listener("lost"))
    stop = asyncio.Event()  # SIGTERM: a clean close (commit, revoke, LeaveGroup unless static)
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    emit("started")
    try:
        while not stop.is_set():
            records = await consumer.poll(timeout_ms=100, max_records=cfg.get("max_records", 20))
            if not records:
                continue
            by_partition: dict[int, list] = {}
            for record in records:
                by_partition.setdefault(record.partition, []).append(record)
            emit("records", partitions={p: [rs[0].offset, rs[-1].offset, len(rs), [r.value.decode() for r in rs]]
                                        for p, rs in by_partition.items()}, generation=generation())
            await asyncio.sleep(cfg.get("process_ms", 0) / 1000)
            offsets = {TopicPartition(cfg["topic"], p): rs[-1].offset + 1 for p, rs in by_partition.items()}
            try:
                await consumer.commit(offsets)
                emit("committed", offsets={tp.partition: o for tp, o in offsets.items()}, generation=generation(),
                     coordinator=consumer.group_metadata()["coordinator_id"])
            except KafkaError as exc:
                emit("commit_failed", error=str(exc), offsets={tp.partition: o for tp, o in offsets.items()})
    finally:
        await consumer.close()
        emit("closed")


if __name__ == "__main__":
    try:
        asyncio.run(main(json.loads(sys.argv[1])))
    except KeyboardInterrupt:
        pass
