"""The real cores on the simulator: a controller and N brokers, each over its own MemoryDisk.

The factories do what the processes' ``__main__`` do at start, minus sockets: open the metadata
journal (controller) or the LogManager (broker) over the node's disk, and build the core with
the node incarnation's own seeded Random. A restart calls the same factory over the same disk,
so a restarted broker recovers its logs and a restarted controller replays its journal.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

from brokerlab.ids import CONTROLLER_NODE, broker_node
from brokerlab.sansio import Effects, Envelope
from controller.config import ControllerConfig
from controller.core import ControllerCore
from controller.journal import MetadataJournal
from node.broker import BrokerCore
from node.call_timeouts import call_timeout_ms
from node.config import BrokerConfig
from node.log.manager import LogManager

from .cluster import Invariant, SimCluster
from .network import NetworkConfig
from .node import BootContext, GracefulStop
from .scheduler import SimulationError

# The port in every simulated endpoint; the host is the node name ("broker-1").
SIM_PORT = 9092


@dataclass(frozen=True)
class ClusterSpec:
    """What to build: broker count and Kafka-keyed config overrides for controller and brokers."""

    brokers: int = 3
    controller_config: dict[str, Any] = field(default_factory=dict)
    broker_config: dict[str, Any] = field(default_factory=dict)
    # Per-broker overrides on top of broker_config (e.g. one broker with log.flush.policy=batch).
    broker_overrides: dict[int, dict[str, Any]] = field(default_factory=dict)
    cluster_id: str = ""


def controller_config(spec: ClusterSpec) -> ControllerConfig:
    return ControllerConfig.from_values(dict(spec.controller_config), node_id=0, endpoint=(CONTROLLER_NODE, SIM_PORT))


def broker_config(spec: ClusterSpec, broker_id: int) -> BrokerConfig:
    raw: dict[str, Any] = {
        "broker.id": broker_id,
        "controller.quorum.bootstrap.servers": f"{CONTROLLER_NODE}:{SIM_PORT}",
        "log.dirs": f"/sim/{broker_node(broker_id)}",
    }
    raw.update(spec.broker_config)
    raw.update(spec.broker_overrides.get(broker_id, {}))
    return BrokerConfig.from_values(raw)


def make_controller_factory(cluster_id: str):
    def controller_factory(context: BootContext) -> ControllerCore:
        core = ControllerCore(context.config, MetadataJournal(context.disk), context.random, cluster_id)
        context.events.extend(core.recovery_events)
        return core

    return controller_factory


def broker_factory(context: BootContext) -> BrokerCore:
    config: BrokerConfig = context.config
    log_manager = LogManager(context.disk, config.log_config, context.now_ms, log_dir=config.log_dirs)
    context.events.extend(log_manager.recovery_events)
    # A fresh id per process start, as the real broker draws one (from the seed here).
    incarnation_id = f"{context.random.getrandbits(64):016x}"
    return BrokerCore(config, log_manager, (context.name, SIM_PORT), "", incarnation_id)


def broker_call_timeout(config: BrokerConfig):
    """The deadlines the real broker adapter puts on its calls (node/call_timeouts.py), so a
    lost message costs the same here."""
    def call_timeout(envelope: Envelope) -> int:
        return call_timeout_ms(config, envelope.rpc, envelope.message)

    return call_timeout


def broker_stop(config: BrokerConfig) -> GracefulStop:
    """SIGTERM, as node/__main__.py does it: a controlled shutdown first (heartbeats ask the
    controller to move our leaderships away) until the core reports it may stop or
    ``controlled.shutdown.timeout.ms`` passes, then close the logs (flush, checkpoints,
    clean-shutdown marker)."""

    def begin(core: BrokerCore, now_ms: int) -> Effects | None:
        return core.begin_controlled_shutdown(now_ms) if config.controlled_shutdown_enable else None

    def may_stop(core: BrokerCore) -> bool:
        return not config.controlled_shutdown_enable or core.controlled_shutdown_complete

    def finish(core: BrokerCore, now_ms: int) -> None:
        core.log_manager.close()

    timeout_ms = config.controlled_shutdown_timeout_ms if config.controlled_shutdown_enable else 0
    return GracefulStop(begin, may_stop, finish, timeout_ms, abandoned_event="ControlledShutdownAbandoned")


def build_cluster(
    seed: int,
    spec: ClusterSpec | None = None,
    network: NetworkConfig | None = None,
    invariants: Iterable[Invariant] | None = None,
) -> SimCluster:
    """A controller and ``spec.brokers`` brokers running the real cores, all started.

    ``invariants`` defaults to ``lab.sim.invariants.default_invariants()``.
    """
    from .invariants import default_invariants

    spec = spec or ClusterSpec()
    cluster = SimCluster(seed, network, invariants=default_invariants() if invariants is None else invariants)
    cluster_id = spec.cluster_id or f"sim-{seed}"
    cluster.add_node(CONTROLLER_NODE, make_controller_factory(cluster_id), controller_config(spec))
    for broker_id in range(1, spec.brokers + 1):
        config = broker_config(spec, broker_id)
        cluster.add_node(
            broker_node(broker_id), broker_factory, config,
            shutdown=broker_stop(config), call_timeout=broker_call_timeout(config),
        )
    return cluster


def brokers_ready(cluster: SimCluster) -> bool:
    """Every running broker says it is registered, unfenced and caught up."""
    cores = [node.core for name, node in cluster.nodes.items() if name.startswith("broker-") and node.alive]
    return bool(cores) and all(core.is_ready for core in cores)


def wait_ready(cluster: SimCluster, timeout_ms: int = 10_000) -> None:
    if not cluster.run_until(lambda: brokers_ready(cluster), timeout_ms):
        states = {
            name: (str(node.core.state) if node.core is not None else "down")
            for name, node in sorted(cluster.nodes.items())
            if name.startswith("broker-")
        }
        raise SimulationError(f"brokers not ready within {timeout_ms} ms (seed {cluster.seed}): {states}")
