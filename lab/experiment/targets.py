"""Where an experiment's nodes run: a target starts the cluster, signals nodes, and hands back
their logs. The runner and the nemesis only use this interface, so a scenario runs unchanged on
local processes (``LocalTarget``) or docker-compose containers (``ComposeTarget``); the
deterministic simulator plugs in the same way (``lab/sim``).

Every node runs with ``--fault-injection`` so link faults and clock skew go through FaultService.
All methods block (the runner calls them from a worker thread).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import Protocol

from brokerlab.errors import ErrorCode, KafkaError


class Target(Protocol):
    name: str
    supports_disk_faults: bool

    def start(self) -> float: ...
    def stop(self) -> None: ...
    def bootstrap_servers(self) -> list[str]: ...
    def broker_names(self) -> list[str]: ...
    def address(self, node: str) -> str: ...  # host:port for FaultService (and clients)
    def kill(self, node: str, sig: str) -> None: ...  # "KILL" | "TERM" (waits for the exit)
    def start_node(self, node: str, wait: bool = True) -> None: ...
    def pause(self, node: str) -> None: ...
    def resume(self, node: str) -> None: ...
    def is_running(self, node: str) -> bool: ...
    def data_dir(self, node: str) -> Path | None: ...
    def log_text(self, node: str) -> str: ...


class LocalTarget:
    """Real processes on 127.0.0.1 (lab.local_cluster), data and logs under the run folder."""

    name = "local"
    supports_disk_faults = True

    def __init__(self, data_dir: Path, brokers: int, config: dict[str, str], seed: int | None = None) -> None:
        from lab.local_cluster import LocalCluster

        flag = ["--fault-injection"]
        self.cluster = LocalCluster.plan(
            brokers=brokers, data_dir=data_dir, config=config, base_dir=data_dir.parent, seed=seed,
            controller_command=[sys.executable, "-m", "controller", *flag],
            broker_command=[sys.executable, "-m", "node", *flag])
        self._paused: set[str] = set()

    def start(self) -> float:
        return self.cluster.start()

    def stop(self) -> None:
        for name in list(self._paused):
            self.resume(name)
        self.cluster.stop(timeout_s=5.0)

    def bootstrap_servers(self) -> list[str]:
        return self.cluster.bootstrap_servers()

    def broker_names(self) -> list[str]:
        return [node.name for node in self.cluster.brokers]

    def address(self, node: str) -> str:
        return self.cluster.node(node).address

    def kill(self, node: str, sig: str) -> None:
        if node in self._paused:  # a stopped process only acts on SIGTERM once continued
            self.resume(node)
        self.cluster.stop_node(node, timeout_s=10.0, kill=(sig == "KILL"))

    def start_node(self, node: str, wait: bool = True) -> None:
        self.cluster.start_node(node, wait=wait)

    def pause(self, node: str) -> None:
        self._signal(node, signal.SIGSTOP)
        self._paused.add(node)

    def resume(self, node: str) -> None:
        self._signal(node, signal.SIGCONT)
        self._paused.discard(node)

    def _signal(self, node: str, sig: int) -> None:
        info = self.cluster.node(node)
        if not self.cluster.is_running(info):
            raise KafkaError(ErrorCode.BROKER_NOT_AVAILABLE, f"{node} is not running")
        os.kill(info.pid, sig)

    def is_running(self, node: str) -> bool:
        return self.cluster.is_running(self.cluster.node(node))

    def data_dir(self, node: str) -> Path | None:
        return Path(self.cluster.node(node).data_dir)

    def log_text(self, node: str) -> str:
        try:
            return Path(self.cluster.node(node).log).read_text(errors="replace")
        except OSError:
            return ""


class ComposeTarget:
    """The docker-compose cluster of deploy/ (lab.compose_cluster), a project of its own on free
    host ports; brought up with the scenario's node configuration and down (volumes too) at the end.
    The node logs are kept in the run folder (``cluster/logs/<node>.log``, as for local runs)."""

    name = "compose"
    supports_disk_faults = False  # the logs live in docker volumes; use --target local

    def __init__(self, data_dir: Path, brokers: int, config: dict[str, str],
                 project: str = "brokerlab-experiment") -> None:
        from lab.compose_cluster import ComposeCluster
        from lab.local_cluster import route_config
        from lab.ports import free_ports

        controller_config, broker_config = route_config(config)
        ports = free_ports(6)
        names = ["controller"] + [f"broker-{i}" for i in range(1, 6)]
        self.cluster = ComposeCluster(project=project, brokers=brokers, ports=dict(zip(names, ports)),
                                      broker_config=broker_config, controller_config=controller_config,
                                      fault_injection=True)
        self.files_dir = data_dir  # node logs after the run (the data stays in docker volumes)
        self._logs: dict[str, str] = {}
        self._paused: set[str] = set()

    def start(self) -> float:
        from lab.compose_cluster import engine_status

        ok, why = engine_status()
        if not ok:
            raise KafkaError(ErrorCode.BROKER_NOT_AVAILABLE, f"--target compose: {why}")
        self.cluster.down()  # leftovers of an interrupted run
        # Always (re)build: cached layers make it a no-op when nothing changed, and the nodes must
        # run this tree's code as local processes do, not whatever image an earlier build left.
        self.cluster.build()
        return self.cluster.up()

    def stop(self) -> None:
        try:
            for name in list(self._paused):
                self.resume(name)
            logs = self.files_dir / "logs"
            logs.mkdir(parents=True, exist_ok=True)
            for name in self.cluster.node_names:  # keep the logs: they go away with the containers
                self._logs[name] = self.cluster.logs(name)
                (logs / f"{name}.log").write_text(self._logs[name])
        finally:
            self.cluster.down()

    def bootstrap_servers(self) -> list[str]:
        return self.cluster.bootstrap_servers()

    def broker_names(self) -> list[str]:
        return self.cluster.broker_names

    def address(self, node: str) -> str:
        return self.cluster.address(node)

    def kill(self, node: str, sig: str) -> None:
        if node in self._paused:  # a stopped process only acts on SIGTERM once continued
            self.resume(node)
        if sig == "TERM":
            self.cluster.stop_node(node)
        else:
            self.cluster.kill_node(node, "KILL")
            deadline = time.monotonic() + 10
            while self.is_running(node) and time.monotonic() < deadline:
                time.sleep(0.05)

    def start_node(self, node: str, wait: bool = True) -> None:
        self.cluster.start_node(node, wait=wait)

    # SIGSTOP/SIGCONT through `docker kill -s`, as the local target signals its processes. Not
    # `docker pause` (cgroup freezer): docker's health check exec racing with the freeze hangs in
    # the frozen container until its timeout, and stalled other docker calls (the scenario's
    # next kill and the unpause itself) by ~3 s.
    def pause(self, node: str) -> None:
        self.cluster.kill_node(node, "STOP")
        self._paused.add(node)

    def resume(self, node: str) -> None:
        self.cluster.kill_node(node, "CONT")
        self._paused.discard(node)

    def is_running(self, node: str) -> bool:
        return any(s.name == node and s.state in ("running", "paused") for s in self.cluster.status())

    def data_dir(self, node: str) -> Path | None:
        return None

    def log_text(self, node: str) -> str:
        return self._logs.get(node) or self.cluster.logs(node)


def make_target(kind: str, run_dir: Path, brokers: int, config: dict[str, str], seed: int | None) -> Target:
    if kind == "local":
        return LocalTarget(run_dir / "cluster", brokers, config, seed)
    if kind == "compose":
        return ComposeTarget(run_dir / "cluster", brokers, config)
    raise KafkaError(ErrorCode.INVALID_REQUEST, f"--target must be local or compose, not {kind!r} "
                     "(the simulator runs scenarios with `brokerlab sim run`)")
