"""``brokerlab demo`` (what ``make demo`` runs): a narrated tour in a throw-away cluster.

Starts a controller and 3 brokers in a temporary data directory, creates a 3-partition topic
with replication factor 3, produces keyed records, consumes them back, describes the partitions
and stops the cluster again — also on Ctrl-C or any failure (then the data directory is kept
and its path printed, for the logs).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import signal
import tempfile
import time
from pathlib import Path

from brokerlab.ids import TopicPartition
from cli.cluster import status_table
from cli.common import EXIT_OK
from cli.output import render
from cli.topic import describe_json, describe_text
from lab.local_cluster import LocalCluster
from lab.processes import pid_alive

TOPIC = "orders"
ORDERS = [
    ("alice", "1 x espresso"), ("bob", "2 x croissant"), ("carol", "1 x flat white"),
    ("alice", "1 x cookie"), ("dave", "3 x bagel"), ("bob", "1 x tea"),
    ("carol", "1 x muffin"), ("alice", "1 x cappuccino"), ("dave", "1 x juice"),
]


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("demo", help="a guided tour: cluster up, topic, produce, consume, describe, down")
    parser.add_argument("--brokers", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep the data directory (logs) afterwards")
    parser.set_defaults(func=cmd_demo)


def say(text: str = "") -> None:
    """Narrate; a closed stdout (``brokerlab demo | head``) must not skip stopping the cluster."""
    try:
        print(text, flush=True)
    except (BrokenPipeError, ValueError):  # ValueError: stdout already closed
        pass


def step(number: int, text: str) -> None:
    say()
    say(f"[{number}/6] {text}")


def cmd_demo(args: argparse.Namespace) -> int:
    started = time.monotonic()
    data_dir = Path(tempfile.mkdtemp(prefix="brokerlab-demo-"))
    say("brokerlab demo: a Kafka-style cluster on this machine, start to finish.")
    step(1, f"Starting a controller and {args.brokers} brokers on 127.0.0.1 (data in {data_dir}) ...")
    cluster = LocalCluster.plan(brokers=args.brokers, data_dir=data_dir / "cluster")
    ok = interrupted = False
    try:
        elapsed = cluster.start()
        say("      $ brokerlab cluster up   (the same, kept running until: brokerlab cluster down)")
        say(f"      every node answers SERVING on the gRPC health service after {elapsed:.1f} s:")
        say(indent(status_table(cluster)))
        asyncio.run(tour(cluster.bootstrap_servers(), min(3, args.brokers)))
        ok = True
    except KeyboardInterrupt:
        interrupted = True
        say("\n      interrupted (Ctrl-C)")
        raise
    finally:
        # A second Ctrl-C must not leave nodes behind: ignore it while stopping.
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            step(6, "Stopping the cluster (SIGTERM, clean shutdown) ...")
        finally:
            cluster.stop()
            signal.signal(signal.SIGINT, previous)
        left = [node.name for node in cluster.nodes if pid_alive(node.pid)]
        say(f"      stopped; processes left behind: {', '.join(left) if left else 'none'}")
        if (ok or interrupted) and not args.keep:
            shutil.rmtree(data_dir, ignore_errors=True)
        else:
            say(f"      data and logs kept in {data_dir}")
    say()
    say(f"Done in {time.monotonic() - started:.1f} s. Run your own: brokerlab cluster up  (see README.md)")
    return EXIT_OK


async def tour(bootstrap: list[str], replication_factor: int) -> None:
    from client import Admin, Consumer, NewTopic, Producer

    step(2, f"Creating topic {TOPIC!r}: 3 partitions, replication factor {replication_factor} ...")
    admin = Admin(bootstrap)
    try:
        await admin.create_topics([NewTopic(TOPIC, 3, replication_factor, {}, None)])
        await admin.wait_for_topics([TOPIC])
        say(f"      $ brokerlab topic create {TOPIC} --partitions 3 --replication-factor {replication_factor}")
        say("      the controller placed the replicas and picked a leader per partition")

        step(3, f"Producing {len(ORDERS)} keyed records (acks=1); one key always lands on one partition:")
        async with Producer(bootstrap, acks="1", key_serializer=str.encode, value_serializer=str.encode,
                            client_id="brokerlab-demo") as producer:
            say(f"      $ printf 'alice:1 x espresso\\n...' | brokerlab produce {TOPIC} --key-separator : --acks 1")
            handles = [await producer.send(TOPIC, value, key=key) for key, value in ORDERS]
            await producer.flush()
            for (key, value), handle in zip(ORDERS, handles):
                metadata = await handle
                say(f"      {key:>6} -> {value:<15} partition {metadata.partition}  offset {metadata.offset}")

        step(4, "Consuming them back from the beginning of every partition:")
        consumer = Consumer(bootstrap, auto_offset_reset="earliest", client_id="brokerlab-demo")
        try:
            tps = [TopicPartition(TOPIC, p) for p in range(3)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            say(f"      $ brokerlab consume {TOPIC} --from-beginning --max-messages {len(ORDERS)} "
                "--format '{partition} {offset} {key} {value}'")
            seen = 0
            deadline = time.monotonic() + 15
            while seen < len(ORDERS) and time.monotonic() < deadline:
                for record in await consumer.poll(timeout_ms=500):
                    seen += 1
                    say(f"      partition {record.partition} offset {record.offset}: "
                        f"{render(record.key)} = {render(record.value)}")
            say(f"      {seen} of {len(ORDERS)} records read back (order is kept within a partition)")
        finally:
            await consumer.close()

        step(5, f"Describing {TOPIC!r}: leaders, replicas, in-sync replicas, offsets:")
        say(f"      $ brokerlab topic describe {TOPIC}")
        descriptions = await admin.describe_topics([TOPIC])
        say(indent(describe_text(describe_json(descriptions))))
    finally:
        await admin.close()


def indent(text: str, prefix: str = "      ") -> str:
    return "\n".join(prefix + line for line in text.splitlines())
