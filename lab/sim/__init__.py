"""The deterministic simulator: real sans-IO cores on a simulated network, disk and clock.

One thread, no asyncio: a heap of events over a virtual clock (``scheduler``), a network with
seeded latency and faults (``network``), nodes that drive cores over in-memory disks (``node``),
a cluster that ties them together with a trace and invariants (``cluster``), and a tiny client
(``client``). A seed fixes everything: the same seed gives a byte-identical trace.
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
