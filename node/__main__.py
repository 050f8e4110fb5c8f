"""``python -m node``: one broker process.

    python -m node --broker-id N --listen HOST:PORT [--advertised-listener HOST:PORT]
        --controller HOST:PORT --data-dir DIR [--rack R] [--config-file F] [--config k=v ...]
        [--external-listener HOST:PORT [--advertised-external-listener HOST:PORT]
         [--external-controller HOST:PORT]] [--fault-injection]

Wires the real adapters around the sans-IO BrokerCore: OsDisk under the data directory, the
LogManager (start-up recovery), the asyncio CoreDriver, the gRPC server (BrokerService, health,
reflection) and the transport to the controller; optionally a second, external listener for
clients outside the brokers' network (node/rpc/external_listener.py, used by docker-compose).
Every trace event becomes one logfmt line on stderr. Health says NOT_SERVING until the core
is ready (registered, unfenced, caught up with the metadata journal), then SERVING.
SIGTERM/SIGINT: controlled shutdown first (heartbeats ask the controller to move our
leaderships away; up to controlled.shutdown.timeout.ms, a second signal cuts it short), then
stop serving, close the logs (writing the clean-shutdown marker), exit 0. Bad flags or
configuration: one line on stderr, exit 2.

``--fault-injection`` (a TEST FACILITY, off by default) serves FaultService and applies its link
rules and clock skew to this broker's traffic and clock (brokerlab/rpc/faults.py).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
from dataclasses import replace
from pathlib import Path

from brokerlab.config import ConfigError
from brokerlab.disk import OsDisk
from brokerlab.driver import CoreDriver, wall_clock_ms
from brokerlab.ids import broker_node
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
from brokerlab.sansio import TraceEvent
from node.broker import BrokerCore
from node.config import BrokerConfig, parse_endpoint
from node.log.manager import LogManager
from node.rpc.external_listener import ExternalListener, external_endpoints
from node.rpc.group_servicer import SERVICE_NAME as GROUP_SERVICE_NAME
from node.rpc.group_servicer import add_group_service
from node.rpc.servicer import SERVICE_NAME, add_broker_service
from node.rpc.transport import BrokerTransport

PROG = "node"
SHUTDOWN_GRACE_S = 1.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = OneLineArgumentParser(PROG, "Run one brokerlab broker.")
    parser.add_argument("--broker-id", type=int, required=True)
    parser.add_argument("--listen", required=True, help="HOST:PORT to serve on (port 0: any free port)")
    parser.add_argument("--advertised-listener", help="HOST:PORT other nodes and clients use (default: --listen)")
    parser.add_argument("--controller", required=True, help="HOST:PORT of the controller")
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--rack", default="")
    parser.add_argument("--config-file", help="Kafka-style properties file")
    parser.add_argument("--config", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--external-listener", metavar="HOST:PORT",
                        help="a second listener for clients outside the brokers' network (Kafka's EXTERNAL)")
    parser.add_argument("--advertised-external-listener", metavar="HOST:PORT",
                        help="HOST:PORT those clients use for this broker (default: --external-listener)")
    parser.add_argument("--external-controller", metavar="HOST:PORT",
                        help="HOST:PORT those clients use for the controller (default: --controller)")
    parser.add_argument("--fault-injection", action="store_true",
                        help="TEST FACILITY: serve FaultService (link faults, clock skew) for experiments")
    return parser.parse_args(argv)


def build_config(args: argparse.Namespace) -> BrokerConfig:
    raw = read_config_flags(args.config_file, args.config)
    if args.broker_id < 0:
        raise ConfigError(f"--broker-id must not be negative, got {args.broker_id}")
    parse_endpoint(args.listen, allow_any_port=True)
    if args.advertised_listener:
        parse_endpoint(args.advertised_listener)
    if args.external_listener:
        parse_endpoint(args.external_listener, allow_any_port=True)
    elif args.advertised_external_listener or args.external_controller:
        raise ConfigError("--advertised-external-listener and --external-controller need --external-listener")
    for text in (args.advertised_external_listener, args.external_controller):
        if text:
            parse_endpoint(text)
    raw["broker.id"] = str(args.broker_id)
    raw["controller.quorum.bootstrap.servers"] = args.controller
    raw["log.dirs"] = str(Path(args.data_dir).resolve())
    return BrokerConfig.from_values(raw)


async def serve(args: argparse.Namespace, config: BrokerConfig, events: EventLog) -> int:
    loop = asyncio.get_running_loop()
    faults = None
    if args.fault_injection:
        faults = FaultInjector(broker_node(config.broker_id), wall_clock_ms,
                               lambda name, fields: events.emit(name, "warn", **fields))
    interceptors = [faults.interceptor()] if faults is not None else None
    server = new_server(interceptors)
    listen_host, _ = parse_endpoint(args.listen, allow_any_port=True)
    port = bind_listener(server, args.listen)  # before touching the logs
    if args.advertised_listener:
        advertised = parse_endpoint(args.advertised_listener)
    else:
        advertised = (listen_host, port)
    external = None
    if args.external_listener:
        external_advertised = args.advertised_external_listener
        try:
            external = ExternalListener(args.external_listener,
                                        parse_endpoint(external_advertised) if external_advertised else None,
                                        interceptors)
        except RuntimeError as exc:
            raise StartupError(f"cannot listen on {args.external_listener}: {exc}") from None
        config = replace(config, external_endpoint=external.advertised)

    log_manager = LogManager(OsDisk(args.data_dir), config.log_config, wall_clock_ms())
    for event in log_manager.recovery_events:
        events(event)
    incarnation_id = uuid.uuid4().hex
    core = BrokerCore(config, log_manager, advertised, args.rack, incarnation_id)

    def endpoint_of(broker_id: int) -> tuple[str, int] | None:
        broker = core.image.broker(broker_id)
        return (broker.host, broker.port) if broker is not None else None

    transport = BrokerTransport(config, endpoint_of, faults)
    services = [SERVICE_NAME, GROUP_SERVICE_NAME] + ([FAULT_SERVICE_NAME] if faults is not None else [])
    health = add_health_and_reflection(server, services)
    tasks: set[asyncio.Task] = set()
    serving = False

    shutdown_granted = asyncio.Event()

    def on_event(event: TraceEvent) -> None:
        nonlocal serving
        events(event)
        if event.name == "ControlledShutdownCompleted":
            shutdown_granted.set()
        if core.is_ready != serving:  # readiness only changes with a BrokerStateChanged event
            serving = core.is_ready
            task = loop.create_task(set_serving(health, [SERVICE_NAME], serving))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            if external is not None:
                task = loop.create_task(external.set_serving(serving))
                tasks.add(task)
                task.add_done_callback(tasks.discard)

    clock_ms = faults.clock_ms if faults is not None else wall_clock_ms
    driver = CoreDriver(core, core.node, transport, clock_ms=clock_ms, on_event=on_event)
    add_broker_service(server, driver)
    add_group_service(server, driver)
    if faults is not None:
        add_fault_service(server, faults)
    await set_serving(health, [SERVICE_NAME], False)
    await server.start()
    extra = {}
    if external is not None:  # answers carry the external endpoints (node/rpc/external_listener.py)
        external_controller = parse_endpoint(args.external_controller) if args.external_controller else None
        external.attach(driver, lambda: external_endpoints(core.image, config.controller_endpoint,
                                                           external_controller))
        if faults is not None:  # reachable from outside the compose network too
            add_fault_service(external.server, faults)
        await external.start()
        extra = {"external_listen": external.listen,
                 "external_advertised": f"{external.advertised[0]}:{external.advertised[1]}"}
    events.emit("BrokerStarted", listen=f"{listen_host}:{port}", advertised=f"{advertised[0]}:{advertised[1]}",
                controller=args.controller, data_dir=config.log_dirs, rack=args.rack, incarnation_id=incarnation_id,
                **extra)

    stop, received = stop_on_signals()
    driver.start()
    await stop.wait()

    events.emit("BrokerStopping", signal=received[0])
    stopping_at = loop.time()
    if config.controlled_shutdown_enable:
        stop.clear()  # a second signal cuts the controlled shutdown short
        await controlled_shutdown(core, driver, config, events, shutdown_granted, stop)
    await set_serving(health, [SERVICE_NAME], False)
    if external is not None:
        await external.set_serving(False)
    await asyncio.gather(server.stop(SHUTDOWN_GRACE_S), *([external.stop(SHUTDOWN_GRACE_S)] if external else []))
    await driver.close()
    await transport.close()
    if tasks:
        await asyncio.gather(*tasks, return_exceptions=True)
    log_manager.close()  # flush, checkpoints, clean-shutdown marker
    events.emit("BrokerStopped", shutdown_ms=round((loop.time() - stopping_at) * 1000))
    return 0


async def controlled_shutdown(core: BrokerCore, driver: CoreDriver, config: BrokerConfig, events: EventLog,
                              granted: asyncio.Event, interrupted: asyncio.Event) -> None:
    """Heartbeat want_shut_down until the controller moved our leaderships away (the core logs
    ControlledShutdownCompleted with how long it took), a deadline passes, or a second signal."""
    started = asyncio.get_running_loop().time()
    driver.execute(core.begin_controlled_shutdown(driver.now_ms()))
    if core.controlled_shutdown_complete:
        return
    waits = [asyncio.ensure_future(granted.wait()), asyncio.ensure_future(interrupted.wait())]
    await asyncio.wait(waits, timeout=config.controlled_shutdown_timeout_ms / 1000,
                       return_when=asyncio.FIRST_COMPLETED)
    for wait in waits:
        wait.cancel()
    if not core.controlled_shutdown_complete:
        waited_ms = round((asyncio.get_running_loop().time() - started) * 1000)
        reason = "second signal" if interrupted.is_set() else "controlled.shutdown.timeout.ms passed"
        events.emit("ControlledShutdownAbandoned", "warn", waited_ms=waited_ms, reason=reason,
                    state=core.state.name)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    events = EventLog(broker_node(args.broker_id), wall_clock_ms)
    return run_process(PROG, events, "BrokerFailed", lambda: build_config(args),
                       lambda config: serve(args, config, events))


if __name__ == "__main__":
    sys.exit(main())
