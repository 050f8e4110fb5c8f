"""A running cluster of real processes (controller + brokers on 127.0.0.1), as pytest fixtures.

conftest.py in this folder exposes the fixtures; tests import helpers from this module
(``from real_cluster import RunningCluster, wait_until``). Other folders can reuse them with
``from real_cluster import cluster, cluster_factory`` in their own conftest after putting
tests/integration on sys.path, or simply live in this folder.

    def test_something(cluster):                 # 3 brokers, default config, started and healthy
        cluster.create_topic("orders", partitions=3, replication_factor=3)
        leader = cluster.leader_of("orders", 0)
        cluster.broker_stub(leader).Produce(...)

    def test_custom(cluster_factory):
        cluster = cluster_factory(brokers=1, config={"log.segment.bytes": "4096"})

Built on ``lab.local_cluster.LocalCluster`` (free ports, one data dir per cluster under
``tmp_path``, readiness by gRPC health with a deadline). At teardown every node gets SIGTERM
(SIGKILL after a deadline) and the fixture fails the test if any process is left. Waiting is
always "until a condition holds or a deadline passes", never a fixed sleep.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Iterator

import grpc
import pytest

from brokerlab.errors import ErrorCode, error_name
from brokerlab.rpc.grpc_options import CHANNEL_OPTIONS
from brokerlab.v1 import broker_pb2, broker_pb2_grpc, controller_pb2, controller_pb2_grpc
from lab.local_cluster import LocalCluster, NodeInfo

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 30.0
CALL_TIMEOUT_S = 10.0


def wait_until(condition: Callable[[], Any], timeout_s: float = 15.0, interval_s: float = 0.05,
               message: str = "condition") -> Any:
    """Poll ``condition`` until it returns something truthy; fail the test at the deadline."""
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while True:
        try:
            result = condition()
            if result:
                return result
        except grpc.RpcError as exc:  # a node still starting or restarting
            last_error = exc
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error})" if last_error else ""
            pytest.fail(f"timed out after {timeout_s:g} s waiting for {message}{detail}")
        time.sleep(interval_s)


def read_events(log_path: str | Path) -> list[dict[str, str]]:
    """The logfmt lines of a node's log as dicts (values unquoted; good enough for tests)."""
    import shlex

    events = []
    for line in Path(log_path).read_text(errors="replace").splitlines():
        if "event=" not in line:
            continue
        try:
            parts = shlex.split(line)
        except ValueError:
            continue
        events.append(dict(part.split("=", 1) for part in parts if "=" in part))
    return events


class RunningCluster:
    """A started LocalCluster plus synchronous gRPC helpers."""

    def __init__(self, local: LocalCluster) -> None:
        self.local = local
        self._channels: dict[str, grpc.Channel] = {}

    # -- nodes
    @property
    def brokers(self) -> list[NodeInfo]:
        return self.local.brokers

    def node(self, name_or_id: str | int) -> NodeInfo:
        if isinstance(name_or_id, int):
            name_or_id = f"broker-{name_or_id}"
        return self.local.node(name_or_id)

    def events(self, name_or_id: str | int) -> list[dict[str, str]]:
        return read_events(self.node(name_or_id).log)

    def kill(self, broker_id: int) -> None:
        """kill -9 (SIGKILL to the process group), and wait until it is gone."""
        self.local.stop_node(f"broker-{broker_id}", kill=True)
        self._drop_channel(self.node(broker_id).address)

    def terminate(self, broker_id: int) -> bool:
        """SIGTERM; True if it exited within the deadline."""
        clean = self.local.stop_node(f"broker-{broker_id}")
        self._drop_channel(self.node(broker_id).address)
        return clean

    def restart(self, broker_id: int, timeout_s: float = START_TIMEOUT_S) -> None:
        """Start a stopped broker again and wait until it reports SERVING."""
        self.local.start_node(f"broker-{broker_id}", timeout_s=timeout_s)

    # -- stubs
    def _channel(self, address: str) -> grpc.Channel:
        channel = self._channels.get(address)
        if channel is None:
            channel = self._channels[address] = grpc.insecure_channel(address, options=CHANNEL_OPTIONS)
        return channel

    def _drop_channel(self, address: str) -> None:
        channel = self._channels.pop(address, None)
        if channel is not None:
            channel.close()

    def controller_stub(self) -> controller_pb2_grpc.ControllerServiceStub:
        return controller_pb2_grpc.ControllerServiceStub(self._channel(self.local.controller.address))

    def broker_stub(self, broker_id: int) -> broker_pb2_grpc.BrokerServiceStub:
        return broker_pb2_grpc.BrokerServiceStub(self._channel(self.node(broker_id).address))

    # -- admin and metadata
    def create_topic(self, name: str, partitions: int = 3, replication_factor: int = 3,
                     configs: dict[str, str] | None = None, timeout_s: float = 15.0) -> controller_pb2.CreatableTopicResult:
        """Create a topic and wait until every running broker knows a leader for each partition."""
        request = controller_pb2.CreateTopicsRequest(topics=[controller_pb2.CreatableTopic(
            name=name, num_partitions=partitions, replication_factor=replication_factor,
            configs=[{"name": k, "value": v} for k, v in (configs or {}).items()])])
        [result] = self.controller_stub().CreateTopics(request, timeout=CALL_TIMEOUT_S).topics
        if result.error_code != ErrorCode.NONE:
            pytest.fail(f"CreateTopics {name}: {error_name(result.error_code)}: {result.error_message}")
        running = [b.id for b in self.brokers if self.local.is_running(b)]
        for broker_id in running:
            wait_until(lambda b=broker_id: self._knows_leaders(b, name, partitions), timeout_s,
                       message=f"broker-{broker_id} to learn the leaders of {name}")
        return result

    def _knows_leaders(self, broker_id: int, topic: str, partitions: int) -> bool:
        [meta] = self.metadata([topic], broker_id=broker_id).topics
        return (meta.error_code == ErrorCode.NONE and len(meta.partitions) == partitions
                and all(p.leader_id >= 0 for p in meta.partitions))

    def metadata(self, topics: list[str] | None = None, broker_id: int | None = None) -> broker_pb2.MetadataResponse:
        broker_id = broker_id if broker_id is not None else next(
            b.id for b in self.brokers if self.local.is_running(b))
        return self.broker_stub(broker_id).Metadata(broker_pb2.MetadataRequest(topics=topics or []),
                                                    timeout=CALL_TIMEOUT_S)

    def leader_of(self, topic: str, partition: int) -> int:
        [meta] = self.metadata([topic]).topics
        return next(p.leader_id for p in meta.partitions if p.partition == partition)

    def log_dirs(self, broker_id: int) -> dict[tuple[str, int], broker_pb2.ReplicaLogInfo]:
        response = self.broker_stub(broker_id).DescribeLogDirs(broker_pb2.DescribeLogDirsRequest(),
                                                               timeout=CALL_TIMEOUT_S)
        return {(r.topic, r.partition): r for r in response.replicas}

    def close(self) -> None:
        for address in list(self._channels):
            self._drop_channel(address)


@pytest.fixture
def cluster_factory(tmp_path: Path) -> Iterator[Callable[..., RunningCluster]]:
    """Start clusters of real processes; all are stopped (and checked gone) at teardown."""
    if not (ROOT / "controller" / "__main__.py").exists() or not (ROOT / "node" / "__main__.py").exists():
        pytest.skip("python -m controller / python -m node are not there yet")
    started: list[RunningCluster] = []

    def make(brokers: int = 3, config: dict[str, str] | None = None,
             timeout_s: float = START_TIMEOUT_S) -> RunningCluster:
        local = LocalCluster.plan(brokers=brokers, data_dir=tmp_path / f"cluster-{len(started)}",
                                  config=config, base_dir=tmp_path)
        running = RunningCluster(local)
        started.append(running)
        local.start(timeout_s)
        return running

    yield make

    leftovers = []
    for running in started:
        running.close()
        running.local.stop()
        leftovers += [n.name for n in running.local.nodes if running.local.is_running(n)]
    assert not leftovers, f"processes left running: {leftovers}"


@pytest.fixture
def cluster(cluster_factory: Callable[..., RunningCluster]) -> RunningCluster:
    """A controller and 3 brokers, started and SERVING."""
    return cluster_factory()
