"""``brokerlab cluster up|status|down|stop|start|stop-broker|start-broker``: the local cluster (lab/local_cluster.py).

``stop-broker N`` is a clean stop (SIGTERM: the broker asks the controller to move its
leaderships away first, then exits); it returns once the process has exited. ``start-broker N``
starts it again with the same flags, address and data, and returns once it is healthy.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from brokerlab.errors import ErrorCode
from cli.common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, CliError, parse_key_values
from cli.output import plural, print_json, table
from lab.local_cluster import DEFAULT_START_TIMEOUT_S, DEFAULT_STOP_TIMEOUT_S, STATE_FILE, LocalCluster


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("cluster", help="start, inspect and stop a local cluster")
    sub = parser.add_subparsers(dest="cluster_command", metavar="{up,status,down,stop,start,stop-broker,start-broker}",
                                required=True)

    up = sub.add_parser("up", help="start a controller and N brokers on 127.0.0.1; returns once all are healthy")
    up.add_argument("--brokers", type=int, default=3, help="number of brokers (default 3)")
    up.add_argument("--data-dir", type=Path, help="where data, logs and cluster.json go "
                    "(default .brokerlab/clusters/<UTC timestamp>); an existing stopped cluster is restarted")
    up.add_argument("--config", action="append", metavar="KEY=VALUE",
                    help="node configuration with Kafka's key names, e.g. log.flush.policy=batch (repeatable)")
    up.add_argument("--seed", type=int, help="the controller's placement seed")
    up.add_argument("--timeout", type=float, default=DEFAULT_START_TIMEOUT_S, metavar="SECONDS",
                    help=f"how long to wait for every node to be healthy (default {DEFAULT_START_TIMEOUT_S:g})")
    up.set_defaults(func=cmd_up)

    status = sub.add_parser("status", help="per node: id, role, address, pid, health (exit 1 unless all healthy)")
    add_data_dir(status)
    status.add_argument("--json", action="store_true", help="print JSON (shape in README)")
    status.set_defaults(func=cmd_status)

    down = sub.add_parser("down", help="stop every node (SIGTERM, then SIGKILL after --timeout)")
    add_data_dir(down)
    down.add_argument("--timeout", type=float, default=DEFAULT_STOP_TIMEOUT_S, metavar="SECONDS")
    down.set_defaults(func=cmd_down)

    stop = sub.add_parser("stop", help="stop one node, e.g. broker-2 (the rest keep running)")
    stop.add_argument("node", help="controller, broker-<id> or a broker id")
    stop.add_argument("--kill", action="store_true", help="SIGKILL instead of a clean SIGTERM shutdown")
    add_data_dir(stop)
    stop.set_defaults(func=cmd_stop_node)

    start = sub.add_parser("start", help="start one stopped node again, on the same address and data")
    start.add_argument("node", help="controller, broker-<id> or a broker id")
    start.add_argument("--timeout", type=float, default=DEFAULT_START_TIMEOUT_S, metavar="SECONDS")
    add_data_dir(start)
    start.set_defaults(func=cmd_start_node)

    stop_broker = sub.add_parser("stop-broker", help="cleanly stop broker N (SIGTERM: its leaderships move "
                                 "to other replicas first) and wait until it has exited")
    stop_broker.add_argument("broker_id", type=int, metavar="N")
    stop_broker.add_argument("--timeout", type=float, default=DEFAULT_STOP_TIMEOUT_S, metavar="SECONDS",
                             help=f"SIGKILL after this long (default {DEFAULT_STOP_TIMEOUT_S:g})")
    add_data_dir(stop_broker)
    stop_broker.set_defaults(func=cmd_stop_broker)

    start_broker = sub.add_parser("start-broker", help="start broker N again (same flags, address and data) "
                                  "and wait until it is healthy")
    start_broker.add_argument("broker_id", type=int, metavar="N")
    start_broker.add_argument("--timeout", type=float, default=DEFAULT_START_TIMEOUT_S, metavar="SECONDS")
    add_data_dir(start_broker)
    start_broker.set_defaults(func=cmd_start_broker)


def add_data_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", type=Path, help="the cluster's data directory (default: the current cluster)")


def find_cluster(data_dir: Path | None) -> LocalCluster:
    if data_dir is not None:
        return LocalCluster.load(data_dir)
    cluster = LocalCluster.current()
    if cluster is None:
        raise CliError(ErrorCode.BROKER_NOT_AVAILABLE,
                       "no local cluster found here (start one with: brokerlab cluster up, or pass --data-dir)",
                       EXIT_USAGE)
    return cluster


def cmd_up(args: argparse.Namespace) -> int:
    running = LocalCluster.current()
    if running is not None and running.any_running():
        raise CliError(ErrorCode.INVALID_REQUEST,
                       f"a local cluster is already running in {running.data_dir} "
                       "(stop it with: brokerlab cluster down)")
    config = parse_key_values(args.config)
    if args.data_dir is not None and (args.data_dir / STATE_FILE).exists():
        cluster = LocalCluster.load(args.data_dir)
        if cluster.any_running():
            raise CliError(ErrorCode.INVALID_REQUEST, f"the cluster in {cluster.data_dir} is already running")
        print(f"restarting the cluster in {cluster.data_dir} ({plural(len(cluster.brokers), 'broker')}, same addresses)")
    else:
        cluster = LocalCluster.plan(brokers=args.brokers, data_dir=args.data_dir, config=config, seed=args.seed)
    elapsed = cluster.start(timeout_s=args.timeout)
    cluster.write_pointer()
    print(f"cluster up in {elapsed:.1f} s: controller + {plural(len(cluster.brokers), 'broker')}, all healthy")
    print()
    print(status_table(cluster))
    print()
    print(f"data dir:  {cluster.data_dir}")
    print(f"logs:      {cluster.data_dir / 'logs'}/<node>.log")
    print(f"bootstrap: {','.join(cluster.bootstrap_servers())}")
    factor = min(3, len(cluster.brokers))
    print(f"next:      brokerlab topic create orders --partitions 3 --replication-factor {factor}")
    print("stop with: brokerlab cluster down")
    return EXIT_OK


def status_json(cluster: LocalCluster, statuses) -> dict:
    return {
        "data_dir": str(cluster.data_dir),
        "created_at": cluster.created_at,
        "config": cluster.config,
        "bootstrap": cluster.bootstrap_servers(),
        "healthy": all(s.healthy for s in statuses),
        "nodes": [
            {"id": s.id, "name": s.name, "role": s.role, "address": s.address, "pid": s.pid,
             "alive": s.alive, "health": s.health, "healthy": s.healthy, "log": s.log}
            for s in statuses
        ],
    }


def status_table(cluster: LocalCluster, statuses=None) -> str:
    statuses = statuses if statuses is not None else cluster.status()
    return table(["NODE", "ID", "ROLE", "ADDRESS", "PID", "ALIVE", "HEALTH"],
                 [[s.name, s.id, s.role, s.address, s.pid if s.alive else "-", "yes" if s.alive else "no",
                   s.health] for s in statuses])


def cmd_status(args: argparse.Namespace) -> int:
    cluster = find_cluster(args.data_dir)
    statuses = cluster.status()
    if args.json:
        print_json(status_json(cluster, statuses))
    else:
        print(f"cluster in {cluster.data_dir}")
        print(status_table(cluster, statuses))
    return EXIT_OK if all(s.healthy for s in statuses) else EXIT_FAILED


def cmd_down(args: argparse.Namespace) -> int:
    cluster = find_cluster(args.data_dir)
    started = time.monotonic()
    alive = [node.name for node in cluster.nodes if cluster.is_running(node)]
    killed = cluster.stop(timeout_s=args.timeout)
    cluster.remove_pointer()
    if not alive:
        print(f"no node of the cluster in {cluster.data_dir} was running")
    else:
        how = f"; {', '.join(killed)} needed SIGKILL" if killed else ""
        print(f"stopped {len(alive)} nodes in {time.monotonic() - started:.1f} s{how}")
    print(f"data kept in {cluster.data_dir}")
    return EXIT_OK


def cmd_stop_node(args: argparse.Namespace) -> int:
    cluster = find_cluster(args.data_dir)
    node = cluster.node(args.node)
    if not cluster.is_running(node):
        print(f"{node.name} is not running")
        return EXIT_OK
    clean = cluster.stop_node(node.name, kill=args.kill)
    print(f"{node.name} {'killed (SIGKILL)' if args.kill else 'stopped' if clean else 'killed after the timeout'}")
    return EXIT_OK


def cmd_start_node(args: argparse.Namespace) -> int:
    cluster = find_cluster(args.data_dir)
    node = cluster.node(args.node)
    cluster.start_node(node.name, timeout_s=args.timeout)
    print(f"{node.name} started (pid {node.pid}) and healthy at {node.address}")
    return EXIT_OK


def broker_of(cluster: LocalCluster, broker_id: int):
    node = cluster.node(str(broker_id))
    if node.role != "broker":
        raise CliError(ErrorCode.INVALID_REQUEST, f"{node.name} is not a broker (brokers: "
                       f"{', '.join(str(b.id) for b in cluster.brokers)})", EXIT_USAGE)
    return node


def cmd_stop_broker(args: argparse.Namespace) -> int:
    cluster = find_cluster(args.data_dir)
    node = broker_of(cluster, args.broker_id)
    if not cluster.is_running(node):
        print(f"{node.name} is not running")
        return EXIT_OK
    started = time.monotonic()
    clean = cluster.stop_node(node.name, timeout_s=args.timeout)
    elapsed = time.monotonic() - started
    if not clean:
        raise CliError(ErrorCode.REQUEST_TIMED_OUT,
                       f"{node.name} did not exit within {args.timeout:g} s of SIGTERM and was killed; see {node.log}")
    print(f"{node.name} stopped cleanly in {elapsed:.2f} s (leaderships moved first; see {node.log})")
    return EXIT_OK


def cmd_start_broker(args: argparse.Namespace) -> int:
    cluster = find_cluster(args.data_dir)
    node = broker_of(cluster, args.broker_id)
    started = time.monotonic()
    cluster.start_node(node.name, timeout_s=args.timeout)
    print(f"{node.name} started (pid {node.pid}) and healthy at {node.address} in {time.monotonic() - started:.1f} s")
    return EXIT_OK
