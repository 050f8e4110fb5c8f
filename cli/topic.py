"""``brokerlab topic create|list|delete|describe`` through the Admin client (sent to the controller).

``describe`` filters, as kafka-topics.sh (one at a time): ``--under-replicated`` partitions with a
leader and fewer ISR members than replicas; ``--under-min-isr`` partitions without a leader or with
fewer ISR members than ``min.insync.replicas`` (the topic's when the description carries its
configs, else ``--min-insync-replicas``, default 2 as the cluster's); ``--unavailable`` partitions
without a leader. Topics with no matching partition are left out.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from cli.common import (
    EXIT_OK,
    add_bootstrap_argument,
    bootstrap_of,
    parse_key_values,
    usage_error,
    with_admin,
)
from cli.output import int_list, print_json, table

DEFAULT_MIN_INSYNC_REPLICAS = 2


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("topic", help="create, list, delete and describe topics")
    sub = parser.add_subparsers(dest="topic_command", metavar="{create,list,delete,describe}", required=True)

    create = sub.add_parser("create", help="create a topic")
    create.add_argument("name")
    create.add_argument("--partitions", type=int, default=-1, help="number of partitions (default: the controller's)")
    create.add_argument("--replication-factor", type=int, default=-1,
                        help="replicas per partition, at most the number of brokers (default: the controller's)")
    create.add_argument("--config", action="append", metavar="KEY=VALUE",
                        help="topic configuration, e.g. retention.ms=60000 (repeatable)")
    add_bootstrap_argument(create)
    create.set_defaults(func=cmd_create)

    listing = sub.add_parser("list", help="topic names, one per line")
    listing.add_argument("--json", action="store_true")
    add_bootstrap_argument(listing)
    listing.set_defaults(func=cmd_list)

    delete = sub.add_parser("delete", help="delete topics and their data")
    delete.add_argument("names", nargs="+", metavar="NAME")
    add_bootstrap_argument(delete)
    delete.set_defaults(func=cmd_delete)

    describe = sub.add_parser("describe", help="partitions: leader, leader epoch, replicas, isr, offsets")
    describe.add_argument("names", nargs="*", metavar="NAME", help="topics to describe (default: all)")
    describe.add_argument("--json", action="store_true", help="print JSON (shape in README)")
    only = describe.add_mutually_exclusive_group()
    only.add_argument("--under-replicated", action="store_true", help="only partitions whose ISR is smaller than their replicas")
    only.add_argument("--under-min-isr", action="store_true",
                      help="only partitions without a leader or with fewer ISR members than min.insync.replicas")
    only.add_argument("--unavailable", action="store_true", help="only partitions without a leader")
    describe.add_argument("--min-insync-replicas", type=int, default=DEFAULT_MIN_INSYNC_REPLICAS, metavar="N",
                          help="min.insync.replicas for --under-min-isr when the topic's is not known "
                               f"(default {DEFAULT_MIN_INSYNC_REPLICAS}, the cluster default)")
    add_bootstrap_argument(describe)
    describe.set_defaults(func=cmd_describe)


def cmd_create(args: argparse.Namespace) -> int:
    from client import NewTopic

    if args.partitions == 0 or args.partitions < -1:
        raise usage_error("--partitions must be at least 1")
    if args.replication_factor == 0 or args.replication_factor < -1:
        raise usage_error("--replication-factor must be at least 1")
    topic = NewTopic(args.name, args.partitions, args.replication_factor, parse_key_values(args.config), None)

    async def create(admin) -> None:
        await admin.create_topics([topic])
        # Created means committed by the controller; wait until the brokers know the leaders too,
        # so that a `produce` right after this command finds them.
        await admin.wait_for_topics([args.name])

    asyncio.run(with_admin(bootstrap_of(args), create))
    partitions = "default" if args.partitions == -1 else args.partitions
    factor = "default" if args.replication_factor == -1 else args.replication_factor
    print(f"created topic {args.name} (partitions: {partitions}, replication factor: {factor})")
    return EXIT_OK


def cmd_list(args: argparse.Namespace) -> int:
    names = sorted(asyncio.run(with_admin(bootstrap_of(args), lambda admin: admin.list_topics())))
    if args.json:
        print_json({"topics": names})
    else:
        for name in names:
            print(name)
    return EXIT_OK


def cmd_delete(args: argparse.Namespace) -> int:
    asyncio.run(with_admin(bootstrap_of(args), lambda admin: admin.delete_topics(args.names)))
    for name in args.names:
        print(f"deleted topic {name}")
    return EXIT_OK


def describe_json(descriptions: list[Any]) -> dict:
    """The stable ``topic describe --json`` shape (documented in the README)."""
    topics = []
    for topic in descriptions:
        partitions = sorted(topic.partitions, key=lambda p: p.partition)
        topics.append({
            "name": topic.name,
            "topic_id": topic.topic_id,
            "is_internal": bool(getattr(topic, "is_internal", False)),
            "partition_count": len(partitions),
            "replication_factor": len(partitions[0].replicas) if partitions else 0,
            "configs": dict(getattr(topic, "configs", None) or {}),
            "partitions": [
                {
                    "partition": p.partition,
                    "leader": p.leader,
                    "leader_epoch": p.leader_epoch,
                    "replicas": list(p.replicas),
                    "isr": list(p.isr),
                    "offline_replicas": list(getattr(p, "offline_replicas", ())),
                    "log_start_offset": getattr(p, "log_start_offset", -1),
                    "log_end_offset": p.log_end_offset,
                    "high_watermark": p.high_watermark,
                }
                for p in partitions
            ],
        })
    return {"topics": topics}


def describe_text(data: dict) -> str:
    blocks = []
    for topic in data["topics"]:
        configs = ",".join(f"{k}={v}" for k, v in sorted(topic["configs"].items())) or "-"
        head = (f"topic {topic['name']}  partitions: {topic['partition_count']}  "
                f"replication factor: {topic['replication_factor']}  configs: {configs}")
        rows = [[p["partition"], p["leader"], p["leader_epoch"], int_list(p["replicas"]), int_list(p["isr"]),
                 p["log_end_offset"], p["high_watermark"]] for p in topic["partitions"]]
        blocks.append(head + "\n" + table(
            ["PARTITION", "LEADER", "LEADER_EPOCH", "REPLICAS", "ISR", "LOG_END_OFFSET", "HIGH_WATERMARK"], rows))
    return "\n\n".join(blocks) if blocks else "no topics"


def partition_filter(args: argparse.Namespace):
    """``(topic json, partition json) -> bool`` for the chosen describe filter, or None."""
    if args.min_insync_replicas < 1:
        raise usage_error("--min-insync-replicas must be at least 1")
    if args.under_replicated:
        return lambda topic, p: p["leader"] >= 0 and len(p["isr"]) < len(p["replicas"])
    if args.under_min_isr:
        def under_min_isr(topic, p) -> bool:
            min_isr = int(topic["configs"].get("min.insync.replicas", args.min_insync_replicas))
            return p["leader"] < 0 or len(p["isr"]) < min_isr

        return under_min_isr
    if args.unavailable:
        return lambda topic, p: p["leader"] < 0
    return None


def filter_partitions(data: dict, keep) -> dict:
    """Only the partitions ``keep`` accepts; topics left without any are dropped."""
    topics = []
    for topic in data["topics"]:
        partitions = [p for p in topic["partitions"] if keep(topic, p)]
        if partitions:
            topics.append({**topic, "partitions": partitions})
    return {"topics": topics}


def cmd_describe(args: argparse.Namespace) -> int:
    names = args.names or None
    keep = partition_filter(args)
    descriptions = asyncio.run(with_admin(bootstrap_of(args), lambda admin: admin.describe_topics(names)))
    data = describe_json(sorted(descriptions, key=lambda t: t.name))
    if keep is not None:
        data = filter_partitions(data, keep)
    if args.json:
        print_json(data)
    elif keep is not None and not data["topics"]:
        print("no matching partitions")
    else:
        print(describe_text(data))
    return EXIT_OK
