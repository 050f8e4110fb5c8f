"""``brokerlab group list|describe|reset-offsets|delete``: Kafka's kafka-consumer-groups.

``describe G`` shows, per partition with a committed offset or an owner: GROUP TOPIC PARTITION
CURRENT-OFFSET LOG-END-OFFSET LAG CONSUMER-ID HOST CLIENT-ID (LOG-END-OFFSET is the high
watermark, what a consumer can read; LAG = LOG-END-OFFSET - CURRENT-OFFSET). ``--members`` lists
the members, ``--state`` the coordinator, assignment strategy, state, member count and why the
last generations happened (brokerlab's addition). ``reset-offsets`` needs an inactive group and
only prints the plan unless ``--execute``. Every subcommand takes ``--json``.
"""

from __future__ import annotations

import argparse
import asyncio
from datetime import datetime, timezone
from typing import Any

from brokerlab.errors import ErrorCode, error_name
from brokerlab.ids import TopicPartition
from cli.common import EXIT_OK, CliError, add_bootstrap_argument, bootstrap_of, usage_error, with_admin
from cli.output import print_json, table


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("group", help="list, describe, reset and delete consumer groups")
    sub = parser.add_subparsers(dest="group_command", metavar="{list,describe,reset-offsets,delete}", required=True)

    listing = sub.add_parser("list", help="every consumer group, with its state")
    listing.add_argument("--state", action="append", metavar="STATE",
                         help="only groups in this state (Empty, Stable, PreparingRebalance, ...; repeatable)")
    listing.add_argument("--json", action="store_true")
    add_bootstrap_argument(listing)
    listing.set_defaults(func=cmd_list)

    describe = sub.add_parser("describe", help="offsets and lag per partition (or --members / --state)")
    describe.add_argument("group")
    view = describe.add_mutually_exclusive_group()
    view.add_argument("--members", action="store_true", help="the members and how many partitions each owns")
    view.add_argument("--state", action="store_true",
                      help="coordinator, assignment strategy, state, members and the last rebalances' causes")
    describe.add_argument("--verbose", action="store_true", help="with --members: each member's partitions")
    describe.add_argument("--json", action="store_true")
    add_bootstrap_argument(describe)
    describe.set_defaults(func=cmd_describe)

    reset = sub.add_parser("reset-offsets", help="move an inactive group's committed offsets")
    reset.add_argument("group")
    reset.add_argument("--topic", action="append", required=True, metavar="TOPIC[:P,P]",
                       help="a topic, or some of its partitions (repeatable)")
    to = reset.add_mutually_exclusive_group(required=True)
    to.add_argument("--to-earliest", action="store_true", help="the log start offset")
    to.add_argument("--to-latest", action="store_true", help="the log end (high watermark)")
    to.add_argument("--to-offset", type=int, metavar="N", help="offset N (clamped to the log)")
    to.add_argument("--shift-by", type=int, metavar="N", help="the committed offset + N (N may be negative)")
    to.add_argument("--to-datetime", metavar="ISO", help="the first offset at or after this time, e.g. 2024-05-01T12:00:00Z")
    run = reset.add_mutually_exclusive_group()
    run.add_argument("--dry-run", action="store_true", help="print the plan only (the default)")
    run.add_argument("--execute", action="store_true", help="commit the new offsets")
    reset.add_argument("--json", action="store_true")
    add_bootstrap_argument(reset)
    reset.set_defaults(func=cmd_reset_offsets)

    delete = sub.add_parser("delete", help="delete empty groups and their committed offsets")
    delete.add_argument("groups", nargs="+", metavar="GROUP")
    delete.add_argument("--json", action="store_true")
    add_bootstrap_argument(delete)
    delete.set_defaults(func=cmd_delete)


def _dash(value: Any) -> Any:
    return "-" if value in (None, "") else value


# ---- list ------------------------------------------------------------------------------------


def cmd_list(args: argparse.Namespace) -> int:
    groups = asyncio.run(with_admin(bootstrap_of(args), lambda admin: admin.list_groups(args.state or [])))
    data = {"groups": [{"group_id": g.group_id, "protocol_type": g.protocol_type, "state": g.state,
                        "coordinator_id": g.coordinator_id} for g in groups]}
    if args.json:
        print_json(data)
    elif not groups:
        print("no consumer groups")
    else:
        print(table(["GROUP", "STATE", "PROTOCOL-TYPE", "COORDINATOR"],
                    [[g["group_id"], g["state"], _dash(g["protocol_type"]), g["coordinator_id"]]
                     for g in data["groups"]]))
    return EXIT_OK


# ---- describe ----------------------------------------------------------------------------------


async def gather_description(admin, group_id: str) -> dict:
    """Everything ``describe`` prints, in its JSON shape."""
    [description] = await admin.describe_groups([group_id])
    committed = await admin.list_group_offsets(group_id)
    if description.state == "Dead" and not committed:
        raise CliError(ErrorCode.GROUP_ID_NOT_FOUND, f"consumer group {group_id!r} does not exist")
    owners = {tp: m for m in description.members for tp in m.assignment}
    partitions = sorted(set(committed) | set(owners))
    log_end = await admin.list_offsets({tp: -1 for tp in partitions}) if partitions else {}
    offsets = []
    for tp in partitions:
        current, end, member = committed.get(tp), log_end.get(tp), owners.get(tp)
        offsets.append({
            "topic": tp.topic, "partition": tp.partition, "current_offset": current, "log_end_offset": end,
            "lag": end - current if current is not None and end is not None else None,
            "consumer_id": member.member_id if member else None, "host": member.host if member else None,
            "client_id": member.client_id if member else None,
        })
    members = [{"consumer_id": m.member_id, "group_instance_id": m.group_instance_id or None, "host": m.host,
                "client_id": m.client_id, "partitions": len(m.assignment),
                "assignment": [str(tp) for tp in m.assignment]} for m in description.members]
    rebalances = [{
        "generation_id": r.generation_id, "cause": r.cause, "member_id": r.member_id or None,
        "detail": r.detail or None, "started_ms": r.started_ms, "completed_ms": r.completed_ms or None,
        "duration_ms": (r.completed_ms - r.started_ms) if r.completed_ms else None,
        "assigned": {m: [str(tp) for tp in tps] for m, tps in r.assigned.items()},
        "revoked": {m: [str(tp) for tp in tps] for m, tps in r.revoked.items()},
    } for r in description.rebalances]
    return {
        "group": group_id, "state": description.state,
        "coordinator": {"id": description.coordinator_id, "address": description.coordinator},
        "assignment_strategy": description.protocol or None, "protocol_type": description.protocol_type or None,
        "generation_id": description.generation_id, "leader": description.leader or None,
        "member_count": len(members), "members": members, "offsets": offsets,
        "last_rebalance": rebalances[-1] if rebalances else None, "rebalances": rebalances,
    }


def _when(ms: int | None) -> str:
    if not ms:
        return "-"
    return datetime.fromtimestamp(ms / 1000, timezone.utc).strftime("%H:%M:%S.%f")[:-3]


def describe_text(data: dict, view: str, verbose: bool = False) -> str:
    group = data["group"]
    lines = []
    if view == "state":
        last = data["last_rebalance"]
        cause = "-" if last is None else (f"{last['cause']}" + (f" ({last['detail']})" if last["detail"] else ""))
        coordinator = data["coordinator"]
        lines.append(table(
            ["GROUP", "COORDINATOR (ID)", "ASSIGNMENT-STRATEGY", "STATE", "#MEMBERS", "GENERATION", "LAST-REBALANCE"],
            [[group, f"{coordinator['address']} ({coordinator['id']})", _dash(data["assignment_strategy"]),
              data["state"], data["member_count"], data["generation_id"], cause]]))
        if data["rebalances"]:
            rows = []
            for r in data["rebalances"]:
                moved = " ".join(f"{m[:24]}:+{len(tps)}" for m, tps in r["assigned"].items())
                revoked = " ".join(f"{m[:24]}:-{len(tps)}" for m, tps in r["revoked"].items())
                rows.append([r["generation_id"], r["cause"], _dash(r["member_id"]), _dash(r["detail"]),
                             _when(r["started_ms"]), _dash(r["duration_ms"]), " ".join(x for x in (moved, revoked) if x)
                             or "-"])
            lines.append("")
            lines.append(table(["GENERATION", "CAUSE", "MEMBER", "DETAIL", "STARTED", "DURATION-MS", "MOVED"], rows))
        return "\n".join(lines)
    if not data["members"]:
        lines.append(f"Consumer group '{group}' has no active members.\n")
    if view == "members":
        headers = ["GROUP", "CONSUMER-ID", "GROUP-INSTANCE-ID", "HOST", "CLIENT-ID", "#PARTITIONS"]
        rows = [[group, m["consumer_id"], _dash(m["group_instance_id"]), m["host"], m["client_id"], m["partitions"]]
                for m in data["members"]]
        if verbose:
            headers.append("ASSIGNMENT")
            for row, m in zip(rows, data["members"]):
                row.append(",".join(m["assignment"]) or "-")
        lines.append(table(headers, rows))
        return "\n".join(lines)
    rows = [[group, o["topic"], o["partition"], _dash(o["current_offset"]), _dash(o["log_end_offset"]),
             _dash(o["lag"]), _dash(o["consumer_id"]), _dash(o["host"]), _dash(o["client_id"])]
            for o in data["offsets"]]
    lines.append(table(["GROUP", "TOPIC", "PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET", "LAG", "CONSUMER-ID",
                        "HOST", "CLIENT-ID"], rows))
    return "\n".join(lines)


def cmd_describe(args: argparse.Namespace) -> int:
    data = asyncio.run(with_admin(bootstrap_of(args), lambda admin: gather_description(admin, args.group)))
    view = "members" if args.members else "state" if args.state else "offsets"
    if args.json:
        keys = {"offsets": ["group", "state", "coordinator", "offsets"],
                "members": ["group", "state", "coordinator", "members"],
                "state": ["group", "coordinator", "assignment_strategy", "protocol_type", "state", "member_count",
                          "generation_id", "leader", "last_rebalance", "rebalances"]}[view]
        print_json({key: data[key] for key in keys})
    else:
        print(describe_text(data, view, args.verbose))
    return EXIT_OK


# ---- reset-offsets -----------------------------------------------------------------------------


def parse_topic_specs(specs: list[str]) -> dict[str, list[int] | None]:
    """``["orders", "audit:0,2"]`` -> ``{"orders": None, "audit": [0, 2]}`` (None: every partition)."""
    out: dict[str, list[int] | None] = {}
    for spec in specs:
        topic, sep, partitions = spec.partition(":")
        if not topic:
            raise usage_error(f"bad --topic {spec!r}: expected TOPIC or TOPIC:P,P")
        if not sep:
            out[topic] = None
            continue
        try:
            out[topic] = sorted({int(p) for p in partitions.split(",") if p.strip()})
        except ValueError:
            raise usage_error(f"bad --topic {spec!r}: partitions must be numbers") from None
    return out


def parse_datetime_ms(text: str) -> int:
    """ISO 8601 (``2024-05-01T12:00:00Z``, ``...+02:00``, or naive = UTC) -> epoch milliseconds."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise usage_error(f"bad --to-datetime {text!r}: expected ISO 8601, e.g. 2024-05-01T12:00:00Z") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp() * 1000)


def reset_strategy(args: argparse.Namespace) -> tuple[str, int | None]:
    if args.to_earliest:
        return "to-earliest", None
    if args.to_latest:
        return "to-latest", None
    if args.to_offset is not None:
        if args.to_offset < 0:
            raise usage_error("--to-offset must not be negative")
        return "to-offset", args.to_offset
    if args.shift_by is not None:
        return "shift-by", args.shift_by
    return "to-datetime", parse_datetime_ms(args.to_datetime)


async def reset_offsets(admin, group_id: str, topics: dict[str, list[int] | None], strategy: str,
                        value: int | None, execute: bool) -> dict:
    from client.group_admin import plan_offset_reset

    [description] = await admin.describe_groups([group_id])
    if description.state not in ("Empty", "Dead"):
        raise CliError(ErrorCode.NON_EMPTY_GROUP, (
            f"assignments can only be reset if the group '{group_id}' is inactive, but the current state is "
            f"{description.state} ({len(description.members)} member(s)): stop its consumers first"))
    descriptions = await admin.describe_topics(sorted(topics))
    partitions = [TopicPartition(t.name, p.partition) for t in descriptions for p in t.partitions
                  if topics[t.name] is None or p.partition in topics[t.name]]
    missing = [f"{t}-{p}" for t, ps in topics.items() for p in (ps or [])
               if TopicPartition(t, p) not in partitions]
    if missing:
        raise CliError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"no such partition: {', '.join(missing)}")
    committed = await admin.list_group_offsets(group_id)
    earliest = await admin.list_offsets({tp: -2 for tp in partitions})
    latest = await admin.list_offsets({tp: -1 for tp in partitions})
    by_time = await admin.list_offsets({tp: value for tp in partitions}) if strategy == "to-datetime" else None
    plan = plan_offset_reset(strategy, value, partitions, committed, earliest, latest, by_time)
    if execute:
        await admin.alter_group_offsets(group_id, plan)
    return {"group": group_id, "executed": execute, "strategy": strategy, "offsets": [
        {"topic": tp.topic, "partition": tp.partition, "previous_offset": committed.get(tp), "new_offset": offset}
        for tp, offset in sorted(plan.items())]}


def cmd_reset_offsets(args: argparse.Namespace) -> int:
    topics = parse_topic_specs(args.topic)
    strategy, value = reset_strategy(args)
    data = asyncio.run(with_admin(bootstrap_of(args), lambda admin: reset_offsets(
        admin, args.group, topics, strategy, value, bool(args.execute))))
    if args.json:
        print_json(data)
        return EXIT_OK
    print(table(["GROUP", "TOPIC", "PARTITION", "PREVIOUS-OFFSET", "NEW-OFFSET"],
                [[data["group"], o["topic"], o["partition"], _dash(o["previous_offset"]), o["new_offset"]]
                 for o in data["offsets"]]))
    if not args.execute:
        print("\n(dry run: nothing was changed; add --execute to commit these offsets)")
    return EXIT_OK


# ---- delete ------------------------------------------------------------------------------------


def cmd_delete(args: argparse.Namespace) -> int:
    results = asyncio.run(with_admin(bootstrap_of(args), lambda admin: admin.delete_groups(
        args.groups, raise_on_error=False)))
    deleted = [g for g, error in results.items() if error is None]
    errors = {g: f"{error_name(int(e.code))}: {e.message}" for g, e in results.items() if e is not None}
    if args.json:
        print_json({"deleted": deleted, "errors": errors})
    else:
        for group in deleted:
            print(f"deleted consumer group {group}")
    if errors:
        first_group, first = next((g, e) for g, e in results.items() if e is not None)
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise CliError(int(first.code), f"deleting group {first_group!r} failed: {first.message}{more}")
    return EXIT_OK
