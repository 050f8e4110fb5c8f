"""``brokerlab bench produce|consume|failover``: parsing and printing around lab/bench.py and
lab/failover_bench.py."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    add_bootstrap_argument,
    check_topic,
    describe_error,
    parse_acks,
    parse_key_values,
    print_error,
    resolve_bootstrap,
    usage_error,
)
from cli.output import print_json


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("bench", help="measure produce and consume throughput and latency")
    sub = parser.add_subparsers(dest="bench_command", metavar="{produce,consume,failover}", required=True)

    produce = sub.add_parser("produce", help="send N records of B bytes as fast as possible")
    produce.add_argument("--topic", required=True)
    produce.add_argument("--records", type=int, required=True, metavar="N")
    produce.add_argument("--record-size", type=int, default=100, metavar="BYTES", help="value size (default 100)")
    produce.add_argument("--acks", default="1", help="0, 1 or all (default 1)")
    produce.add_argument("--batch-size", type=int, default=16384, metavar="BYTES", help="batch.size (default 16384)")
    produce.add_argument("--linger-ms", type=int, default=5, help="linger.ms (default 5)")
    produce.add_argument("--idempotence", action=argparse.BooleanOptionalAction, default=None,
                         help="enable.idempotence (default: on with --acks all, as in Kafka 3.0+)")
    produce.add_argument("--throughput", type=float, default=-1, metavar="RECORDS_PER_SEC",
                         help="cap the send rate (Kafka's producer-perf-test --throughput; default -1: no cap)")
    produce.add_argument("--json", action="store_true", help="print JSON (shape in README)")
    add_bootstrap_argument(produce)
    produce.set_defaults(func=cmd_bench_produce)

    consume = sub.add_parser("consume", help="read N records from the beginning of every partition")
    consume.add_argument("--topic", required=True)
    consume.add_argument("--records", type=int, required=True, metavar="N")
    consume.add_argument("--max-poll-records", type=int, default=500, help="max.poll.records (default 500)")
    consume.add_argument("--timeout-ms", type=int, default=10_000, help="give up after this long without data")
    consume.add_argument("--json", action="store_true", help="print JSON (shape in README)")
    add_bootstrap_argument(consume)
    consume.set_defaults(func=cmd_bench_consume)

    failover = sub.add_parser(
        "failover", help="on a cluster of its own: kill (or cleanly stop) the leader of partition 0 again and "
        "again under an acks=all load and print how long the partition was unavailable")
    failover.add_argument("--mode", choices=("hard", "controlled"), default="hard",
                          help="hard: SIGKILL, time to the first acks=all ack by the new leader; controlled: "
                          "SIGTERM, time until leadership moved (default hard)")
    failover.add_argument("--trials", type=int, default=20, help="number of kills (default 20)")
    failover.add_argument("--brokers", type=int, default=3, help="brokers in the cluster (default 3)")
    failover.add_argument("--partitions", type=int, default=3, help="partitions of the topic (default 3)")
    failover.add_argument("--record-size", type=int, default=100, metavar="BYTES", help="value size (default 100)")
    failover.add_argument("--send-interval-ms", type=float, default=5.0,
                          help="one record every this many ms to partition 0 (default 5)")
    failover.add_argument("--config", action="append", metavar="KEY=VALUE",
                          help="node configuration, e.g. broker.session.timeout.ms=500 (repeatable)")
    failover.add_argument("--data-dir", type=Path, help="where the cluster's data and logs go "
                          "(default .brokerlab/clusters/<UTC timestamp>; kept for inspection)")
    failover.add_argument("--json", action="store_true", help="print JSON: the distribution, every sample, "
                          "every trial and the settings")
    failover.set_defaults(func=cmd_bench_failover)


def flush_policy_of(source: str, topic_configs: dict[str, str]) -> str:
    """The flush policy the figures were measured under: the topic's, else the local cluster's."""
    if "flush.policy" in topic_configs:
        return topic_configs["flush.policy"]
    from lab.local_cluster import LocalCluster

    cluster = LocalCluster.current()
    if cluster is not None and source == str(cluster.data_dir):
        if "log.flush.policy" in cluster.config:
            return cluster.config["log.flush.policy"]
        from node.log.config import LogConfig

        return LogConfig().flush_policy
    return "unknown"


async def _describe(bootstrap: list[str], topic: str) -> tuple[int, dict[str, str]]:
    from client import Admin

    partitions = await check_topic(Admin(bootstrap), topic)
    admin = Admin(bootstrap)
    try:
        description = (await admin.describe_topics([topic]))[0]
    finally:
        await admin.close()
    return partitions, dict(getattr(description, "configs", None) or {})


def _progress(what: str):
    def show(count: int, elapsed_s: float) -> None:
        print(f"  ... {count:,} records {what} in {elapsed_s:.1f} s ({count / max(elapsed_s, 1e-9):,.0f}/s)",
              file=sys.stderr, flush=True)
    return show


def cmd_bench_produce(args: argparse.Namespace) -> int:
    from lab.bench import bench_produce

    acks = parse_acks(args.acks)
    if args.records < 1 or args.record_size < 0 or args.batch_size < 1 or args.linger_ms < 0:
        raise usage_error("--records and --batch-size must be >= 1, --record-size and --linger-ms >= 0")
    bootstrap, source = resolve_bootstrap(args.bootstrap)
    _, configs = asyncio.run(_describe(bootstrap, args.topic))
    extra = {} if args.idempotence is None else {"enable_idempotence": args.idempotence}
    result = asyncio.run(bench_produce(bootstrap, args.topic, args.records, args.record_size, acks=acks,
                                       batch_size=args.batch_size, linger_ms=args.linger_ms,
                                       progress=None if args.json else _progress("acknowledged"),
                                       producer_settings=extra, throughput=args.throughput))
    result.settings["flush_policy"] = flush_policy_of(source, configs)
    print_result(result, args.json)
    if result.failed:
        code_name, message, _ = describe_error(result.first_error or TimeoutError("unknown"))
        print_error(code_name, f"{result.failed} of {result.records} records failed; first: {message}")
        return EXIT_FAILED
    return EXIT_OK


def cmd_bench_consume(args: argparse.Namespace) -> int:
    from lab.bench import bench_consume

    if args.records < 1:
        raise usage_error("--records must be >= 1")
    bootstrap, source = resolve_bootstrap(args.bootstrap)
    partitions, configs = asyncio.run(_describe(bootstrap, args.topic))
    result = asyncio.run(bench_consume(bootstrap, args.topic, args.records, partitions,
                                       timeout_ms=args.timeout_ms,
                                       progress=None if args.json else _progress("consumed"),
                                       consumer_settings={"max_poll_records": args.max_poll_records}))
    result.settings["flush_policy"] = flush_policy_of(source, configs)
    result.settings["max_poll_records"] = args.max_poll_records
    print_result(result, args.json)
    return EXIT_OK


def cmd_bench_failover(args: argparse.Namespace) -> int:
    from lab.failover_bench import FailoverSettings, run_failover_bench

    settings = FailoverSettings(mode=args.mode, trials=args.trials, brokers=args.brokers, partitions=args.partitions,
                                record_size=args.record_size, send_interval_ms=args.send_interval_ms,
                                cluster_config=parse_key_values(args.config), data_dir=args.data_dir)

    def show(trial) -> None:
        figure = "failed: " + trial.error if trial.sample_ms is None else f"{trial.sample_ms:.1f} ms"
        extra = f", exited in {trial.exit_ms:.0f} ms" if trial.exit_ms is not None else ""
        print(f"  trial {trial.trial}: broker-{trial.victim} -> broker-{trial.new_leader}  {figure}{extra}"
              f"  (failed sends {trial.failed_sends}, rejoined in {trial.rejoin_ms or 0:.0f} ms)",
              file=sys.stderr, flush=True)

    result = asyncio.run(run_failover_bench(settings, progress=None if args.json else show))
    print_failover(result, args.json)
    return EXIT_FAILED if any(t.sample_ms is None for t in result.trials) else EXIT_OK


def print_failover(result, as_json: bool) -> None:
    data = result.to_json()
    if as_json:
        print_json(data)
        return
    print(f"failover ({result.mode}): {data['count']} of {len(result.trials)} trials measured; {data['metric']}")
    print(f"  p50 {data['p50']:.1f}  p99 {data['p99']:.1f}  max {data['max']:.1f}  min {data['min']:.1f} ms")
    print("  samples ms: " + " ".join(f"{s:.0f}" for s in data["samples_ms"]))
    if result.mode == "controlled":
        exits = data["exit_ms"]
        print(f"  SIGTERM -> exit ms: p50 {exits['p50']:.1f}  p99 {exits['p99']:.1f}  max {exits['max']:.1f}; "
              f"failed acks=all sends during the steps: {data['failed_sends_during_steps']}")
    gaps = data["max_ack_gap_ms"]
    print(f"  produce (acks=all): {data['sent']:,} sent, {data['acknowledged']:,} acknowledged, "
          f"{data['failed']:,} failed; longest wait for an ack per trial ms: p50 {gaps['p50']:.0f}  "
          f"max {gaps['max']:.0f}")
    settings = dict(data["settings"])
    config = settings.pop("cluster_config")
    print("  settings: " + ", ".join(f"{k}={v}" for k, v in settings.items() if k != "trials"))
    print("  cluster: " + ", ".join(f"{k}={v}" for k, v in config.items()))
    print(f"  logs: {data['data_dir']}/logs")


def print_result(result, as_json: bool) -> None:
    if as_json:
        print_json(result.to_json())
        return
    latency = result.latency_ms
    settings = ", ".join(f"{k}={v}" for k, v in result.settings.items() if v is not None)
    print(f"{result.kind}: {result.records:,} records, {result.bytes / 2**20:,.1f} MiB in {result.elapsed_s:.2f} s")
    print(f"  {result.records_per_sec:,.0f} records/s  {result.mb_per_sec:,.2f} MB/s  "
          f"latency ms p50 {latency.p50:.2f}  p99 {latency.p99:.2f}  max {latency.max:.2f}")
    print(f"  settings: {settings}")
