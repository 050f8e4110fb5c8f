"""``python -m controller``: the controller process.

    python -m controller --node-id 0 --listen HOST:PORT --data-dir DIR
        [--config-file F] [--config key=value ...] [--seed N] [--fault-injection]

Wires the real adapters around the sans-IO ControllerCore: OsDisk under the data directory,
``meta.properties`` (the cluster id, created on first start, as Kafka's storage format does),
the metadata journal (recovered and replayed before the server starts), the asyncio CoreDriver
(its transport is unused: the controller only answers), and the gRPC server with
ControllerService, health (SERVING once the journal is replayed) and reflection. Every trace
event becomes one logfmt line on stderr. SIGTERM/SIGINT: stop serving, exit 0. Bad flags or
configuration: one line on stderr, exit 2; any other start-up failure: one line, exit 1.

``--fault-injection`` (a TEST FACILITY, off by default) serves FaultService; its link rules apply
to calls into the controller (it makes none) and its clock skew to the core's clock.
"""

from __future__ import annotations

import argparse
import base64
import random
import sys
import uuid
from pathlib import Path

from brokerlab.config import ConfigError, read_properties
from brokerlab.disk import Disk, OsDisk
from brokerlab.driver import CoreDriver, wall_clock_ms
from brokerlab.ids import CONTROLLER_NODE
from brokerlab.logfmt import EventLog
from brokerlab.process_main import (
    OneLineArgumentParser,
    StartupError,
    bind_listener,
    read_config_flags,
    run_process,
    stop_on_signals,
)
from brokerlab.rpc.faults import SERVICE_NAME as FAULT_SERVICE_NAME
from brokerlab.rpc.faults import FaultInjector, add_fault_service
from brokerlab.rpc.grpc_options import add_health_and_reflection, new_server, set_serving
from brokerlab.sansio import Envelope
from controller.config import ControllerConfig
from controller.core import ControllerCore
from controller.journal import MetadataJournal
from controller.rpc.servicer import SERVICE_NAME, add_controller_service

PROG = "controller"
SHUTDOWN_GRACE_S = 0.5
META_PROPERTIES = "meta.properties"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = OneLineArgumentParser(PROG, "Run the brokerlab controller.")
    parser.add_argument("--node-id", type=int, default=0)
    parser.add_argument("--listen", required=True, help="HOST:PORT to serve on (port 0: any free port)")
    parser.add_argument("--data-dir", required=True, help="directory of the metadata journal")
    parser.add_argument("--config-file", help="Kafka-style properties file")
    parser.add_argument("--config", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--seed", type=int, help="seed of placement and topic ids (default: random)")
    parser.add_argument("--fault-injection", action="store_true",
                        help="TEST FACILITY: serve FaultService (link faults, clock skew) for experiments")
    return parser.parse_args(argv)


def parse_endpoint(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


def read_config(args: argparse.Namespace) -> dict[str, str]:
    raw = read_config_flags(args.config_file, args.config)
    if args.node_id < 0:
        raise ConfigError(f"--node-id must not be negative, got {args.node_id}")
    parse_endpoint(args.listen)
    ControllerConfig.from_values(raw)  # fail on bad keys before touching the data directory
    return raw


def load_cluster_id(disk: Disk, node_id: int) -> str:
    """The cluster id from meta.properties, created (atomically) on the first start."""
    if disk.exists(META_PROPERTIES):
        meta = read_properties(disk.read_file(META_PROPERTIES).decode("utf-8"))
        if meta.get("node.id") != str(node_id):
            raise StartupError(f"{META_PROPERTIES} belongs to node {meta.get('node.id')}, not {node_id}")
        if not meta.get("cluster.id"):
            raise StartupError(f"{META_PROPERTIES} has no cluster.id")
        return meta["cluster.id"]
    cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode("ascii")
    text = f"# brokerlab controller storage\nversion=1\nnode.id={node_id}\ncluster.id={cluster_id}\n"
    disk.write_file_atomic(META_PROPERTIES, text.encode("utf-8"))
    return cluster_id


async def _no_transport(envelope: Envelope) -> Envelope:
    raise RuntimeError(f"the controller sends no requests (got {envelope.rpc} to {envelope.dst})")


async def serve(args: argparse.Namespace, raw_config: dict[str, str], events: EventLog) -> int:
    host, _ = parse_endpoint(args.listen)
    faults = None
    if args.fault_injection:
        faults = FaultInjector(CONTROLLER_NODE, wall_clock_ms, lambda name, fields: events.emit(name, "warn", **fields))
    server = new_server([faults.interceptor()] if faults is not None else None)
    port = bind_listener(server, args.listen)
    config = ControllerConfig.from_values(raw_config, node_id=args.node_id, endpoint=(host, port))
    disk = OsDisk(args.data_dir)
    cluster_id = load_cluster_id(disk, args.node_id)
    journal = MetadataJournal(disk)
    rng = random.Random(args.seed) if args.seed is not None else random.Random()
    core = ControllerCore(config, journal, rng, cluster_id)
    for event in core.recovery_events:
        events(event)

    clock_ms = faults.clock_ms if faults is not None else wall_clock_ms
    driver = CoreDriver(core, CONTROLLER_NODE, _no_transport, clock_ms=clock_ms, on_event=events)
    add_controller_service(server, driver)
    if faults is not None:
        add_fault_service(server, faults)
    health = add_health_and_reflection(server, [SERVICE_NAME] + ([FAULT_SERVICE_NAME] if faults is not None else []))
    await server.start()
    driver.start()
    await set_serving(health, [SERVICE_NAME], True)  # the journal is replayed: ready
    events.emit(
        "ControllerStarted",
        listen=f"{host}:{port}",
        node_id=args.node_id,
        cluster_id=cluster_id,
        data_dir=str(Path(args.data_dir).resolve()),
        metadata_end_offset=journal.end_offset,
        seed=args.seed,
    )

    stop, received = stop_on_signals()
    await stop.wait()

    events.emit("ControllerStopping", signal=received[0])
    await set_serving(health, [SERVICE_NAME], False)
    await server.stop(SHUTDOWN_GRACE_S)
    await driver.close()
    journal.close()
    events.emit("ControllerStopped", metadata_end_offset=journal.end_offset)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    events = EventLog(CONTROLLER_NODE, wall_clock_ms)
    return run_process(PROG, events, "ControllerFailed", lambda: read_config(args),
                       lambda raw_config: serve(args, raw_config, events))


if __name__ == "__main__":
    sys.exit(main())
