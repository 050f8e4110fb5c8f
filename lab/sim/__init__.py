"""The deterministic simulator: real sans-IO cores on a simulated network, disk and clock.

One thread, no asyncio: a heap of events over a virtual clock (``scheduler``), a network with
seeded latency and faults (``network``), nodes that drive cores over in-memory disks, with a
graceful stop that runs the broker's real controlled shutdown (``node``), a cluster that ties
them together with a trace and invariants checked after every event (``cluster``,
``invariants``), the real controller and broker cores (``cores``) and a script client for tests
and admin calls (``client``). A seed fixes everything: the same seed gives a byte-identical
trace and history.

Failover scenarios: the real producer (client/producer's accumulator, sender and idempotence
cores with the real metadata cache, driven as the asyncio facade drives them:
``producer_actor``) and the real consumer (client/consumer's fetch core and the experiments' poll
loop, each on a node of its own: ``consumer_core``, group members ``group_consumer``), recorded
in a ``lab.history`` history on the virtual clock (``workload``), a step language for faults
(``steps``), scenarios as data (``catalog``, run by ``failover``, judged by ``verdict`` with
``lab.checker``), the
lab's TOML experiment scenarios on the simulator (``experiments``), and the registry that
``python -m lab.sim`` and the seed sweeps run (``scenarios``).
"""

from .client import LeaderNotFound, RetriableError, SimClient, TransportFailed
from .cluster import InvariantViolation, SimCluster
from .network import NetworkConfig, SimNetwork
from .node import BootContext, CoreFailed, GracefulStop, SimNode
from .scheduler import Livelock, Scheduler, SimulationError, derive_seed
from .trace import Trace, TraceEntry

__all__ = [
    "BootContext",
    "CoreFailed",
    "GracefulStop",
    "InvariantViolation",
    "LeaderNotFound",
    "Livelock",
    "NetworkConfig",
    "RetriableError",
    "Scheduler",
    "SimClient",
    "SimCluster",
    "SimNetwork",
    "SimNode",
    "SimulationError",
    "Trace",
    "TraceEntry",
    "TransportFailed",
    "derive_seed",
]
