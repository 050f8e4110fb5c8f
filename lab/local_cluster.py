"""A local cluster: controller + N brokers as real detached processes on 127.0.0.1.

One run = one data directory::

    <data-dir>/cluster.json        nodes (id, role, address, pid, log, data dir, command) + config
    <data-dir>/logs/<node>.log     each node's stderr/stdout (logfmt lines), never the terminal
    <data-dir>/controller/         the controller's journal
    <data-dir>/broker-<id>/        each broker's log directories

and ``<base>/.brokerlab/current`` names the running cluster's data directory so that client
commands started from ``<base>`` (or below it) find it. Nodes run in their own session, so they
outlive ``brokerlab cluster up``; ``stop`` signals them by the pids in ``cluster.json``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable

from brokerlab.errors import ErrorCode, KafkaError
from brokerlab.ids import CONTROLLER_NODE, broker_node
from lab import processes
from lab.health import EXITED, SERVING, UNREACHABLE, probe_all, wait_for_serving
from lab.ports import LOOPBACK, free_ports

STATE_FILE = "cluster.json"
POINTER_DIR = ".brokerlab"
POINTER_FILE = "current"
CONTROLLER_ID = 0
DEFAULT_START_TIMEOUT_S = 30.0
DEFAULT_STOP_TIMEOUT_S = 10.0


class ClusterError(KafkaError):
    """A local cluster problem, reported like any Kafka error: a code and one line."""

    def __init__(self, message: str, code: int = ErrorCode.BROKER_NOT_AVAILABLE) -> None:
        super().__init__(code, message)


@dataclass
class NodeInfo:
    id: int
    role: str  # "controller" | "broker"
    name: str  # "controller" | "broker-<id>"
    address: str
    data_dir: str
    log: str
    command: list[str]
    pid: int | None = None

    @classmethod
    def from_json(cls, data: dict) -> "NodeInfo":
        return cls(**{key: data.get(key) for key in cls.__dataclass_fields__})


@dataclass
class NodeStatus:
    id: int
    role: str
    name: str
    address: str
    pid: int | None
    alive: bool
    health: str  # SERVING | NOT_SERVING | UNREACHABLE
    log: str

    @property
    def healthy(self) -> bool:
        return self.health == SERVING

    def to_json(self) -> dict:
        data = asdict(self)
        data["healthy"] = self.healthy
        return data


@dataclass
class LocalCluster:
    data_dir: Path
    nodes: list[NodeInfo]
    config: dict[str, str] = field(default_factory=dict)
    created_at: str = ""
    _popens: dict[str, subprocess.Popen] = field(default_factory=dict, repr=False)

    # ---- planning and persistence -------------------------------------------------------------

    @classmethod
    def plan(
        cls,
        brokers: int = 3,
        data_dir: Path | str | None = None,
        config: dict[str, str] | None = None,
        base_dir: Path | str | None = None,
        seed: int | None = None,
        controller_command: list[str] | None = None,
        broker_command: list[str] | None = None,
    ) -> "LocalCluster":
        """Choose ports and commands for a new cluster and write ``cluster.json`` (starts nothing).

        ``controller_command``/``broker_command`` replace ``python -m controller``/``python -m node``
        (tests use stand-ins; the node flags of the process contract are appended either way).
        """
        if brokers < 1:
            raise ClusterError("a cluster needs at least 1 broker", ErrorCode.INVALID_REQUEST)
        now = datetime.now(timezone.utc)
        if data_dir is None:
            data_dir = new_run_dir(Path(base_dir or Path.cwd()) / POINTER_DIR / "clusters", now)
        data_dir = Path(data_dir).resolve()
        if (data_dir / STATE_FILE).exists():
            raise ClusterError(f"{data_dir} already holds a cluster; choose another --data-dir",
                               ErrorCode.INVALID_REQUEST)
        data_dir.mkdir(parents=True, exist_ok=True)
        config = dict(config or {})
        controller_config, broker_config = route_config(config)
        ports = free_ports(brokers + 1)
        controller_address = f"{LOOPBACK}:{ports[0]}"
        logs = data_dir / "logs"
        nodes = []
        controller_command = controller_command or [sys.executable, "-m", "controller"]
        broker_command = broker_command or [sys.executable, "-m", "node"]
        command = [*controller_command, "--node-id", str(CONTROLLER_ID), "--listen", controller_address,
                   "--data-dir", str(data_dir / CONTROLLER_NODE), *config_flags(controller_config)]
        if seed is not None:
            command += ["--seed", str(seed)]
        nodes.append(NodeInfo(CONTROLLER_ID, "controller", CONTROLLER_NODE, controller_address,
                              str(data_dir / CONTROLLER_NODE), str(logs / f"{CONTROLLER_NODE}.log"), command))
        for broker_id in range(1, brokers + 1):
            name = broker_node(broker_id)
            address = f"{LOOPBACK}:{ports[broker_id]}"
            command = [*broker_command, "--broker-id", str(broker_id), "--listen", address,
                       "--controller", controller_address, "--data-dir", str(data_dir / name),
                       *config_flags(broker_config)]
            nodes.append(NodeInfo(broker_id, "broker", name, address, str(data_dir / name),
                                  str(logs / f"{name}.log"), command))
        cluster = cls(data_dir, nodes, config, now.strftime("%Y-%m-%dT%H:%M:%SZ"))
        cluster.save()
        return cluster

    @classmethod
    def load(cls, data_dir: Path | str) -> "LocalCluster":
        data_dir = Path(data_dir).resolve()
        try:
            state = json.loads((data_dir / STATE_FILE).read_text())
        except FileNotFoundError:
            raise ClusterError(f"no local cluster in {data_dir} (no {STATE_FILE})") from None
        except (OSError, ValueError) as exc:
            raise ClusterError(f"cannot read {data_dir / STATE_FILE}: {exc}", ErrorCode.KAFKA_STORAGE_ERROR) from None
        nodes = [NodeInfo.from_json(node) for node in state.get("nodes", [])]
        return cls(data_dir, nodes, dict(state.get("config", {})), state.get("created_at", ""))

    def save(self) -> None:
        state = {
            "data_dir": str(self.data_dir),
            "created_at": self.created_at,
            "config": self.config,
            "nodes": [asdict(node) for node in self.nodes],
        }
        tmp = self.data_dir / (STATE_FILE + ".tmp")
        tmp.write_text(json.dumps(state, indent=2) + "\n")
        os.replace(tmp, self.data_dir / STATE_FILE)

    # ---- the pointer that client commands follow ------------------------------------------------

    @classmethod
    def current(cls, start_dir: Path | str | None = None) -> "LocalCluster | None":
        """The cluster named by the nearest ``.brokerlab/current`` at or above ``start_dir``."""
        pointer = find_pointer(start_dir)
        if pointer is None:
            return None
        target = pointer.read_text().strip()
        if not target or not (Path(target) / STATE_FILE).exists():
            return None
        return cls.load(target)

    def write_pointer(self, base_dir: Path | str | None = None) -> Path:
        pointer = Path(base_dir or Path.cwd()) / POINTER_DIR / POINTER_FILE
        pointer.parent.mkdir(parents=True, exist_ok=True)
        pointer.write_text(str(self.data_dir) + "\n")
        return pointer

    def remove_pointer(self, start_dir: Path | str | None = None) -> None:
        """Remove the nearest pointer if it names this cluster (never someone else's)."""
        pointer = find_pointer(start_dir)
        if pointer is not None and Path(pointer.read_text().strip()) == self.data_dir:
            pointer.unlink(missing_ok=True)

    # ---- lookups ------------------------------------------------------------------------------

    def node(self, name: str) -> NodeInfo:
        for node in self.nodes:
            if name in (node.name, str(node.id)):
                return node
        have = ", ".join(n.name for n in self.nodes)
        raise ClusterError(f"no node {name!r} in this cluster (have {have})", ErrorCode.INVALID_REQUEST)

    @property
    def controller(self) -> NodeInfo:
        return next(node for node in self.nodes if node.role == "controller")

    @property
    def brokers(self) -> list[NodeInfo]:
        return [node for node in self.nodes if node.role == "broker"]

    def bootstrap_servers(self) -> list[str]:
        return [node.address for node in self.brokers]

    def is_running(self, node: NodeInfo) -> bool:
        popen = self._popens.get(node.name)
        if popen is not None:
            return popen.poll() is None
        return bool(node.pid) and processes.pid_alive(node.pid) and processes.runs_command(node.pid, node.data_dir)

    def any_running(self) -> bool:
        return any(self.is_running(node) for node in self.nodes)

    # ---- start / stop -----------------------------------------------------------------------

    def start(self, timeout_s: float = DEFAULT_START_TIMEOUT_S) -> float:
        """Start every node and wait until all are SERVING; returns the seconds it took.

        On failure (a node exits, or the deadline passes) every started node is stopped again
        and ``ClusterError`` names the culprit with the tail of its log.
        """
        started = time.monotonic()
        try:
            self._spawn(self.nodes)
            self._wait_serving(self.nodes, timeout_s)
        except BaseException:
            self.stop()
            raise
        return time.monotonic() - started

    def start_node(self, name: str, timeout_s: float = DEFAULT_START_TIMEOUT_S, wait: bool = True) -> None:
        node = self.node(name)
        if self.is_running(node):
            raise ClusterError(f"{node.name} is already running (pid {node.pid})", ErrorCode.INVALID_REQUEST)
        self._spawn([node])
        if wait:
            self._wait_serving([node], timeout_s)

    def stop_node(self, name: str, timeout_s: float = DEFAULT_STOP_TIMEOUT_S, kill: bool = False) -> bool:
        """Stop one node (SIGTERM, or SIGKILL when ``kill``); True if it stopped cleanly."""
        node = self.node(name)
        clean = self._terminate(node, timeout_s, signal.SIGKILL if kill else signal.SIGTERM)
        return clean and not kill

    def stop(self, timeout_s: float = DEFAULT_STOP_TIMEOUT_S) -> list[str]:
        """Stop brokers first (they may tell the controller they are leaving), then the controller.

        SIGTERM, wait up to ``timeout_s``, then SIGKILL. Returns the names that needed SIGKILL.
        """
        killed = []
        for group in (self.brokers, [self.controller]):
            with ThreadPoolExecutor(max_workers=max(1, len(group))) as pool:
                results = list(pool.map(lambda node: self._terminate(node, timeout_s, signal.SIGTERM), group))
            killed += [node.name for node, clean in zip(group, results) if not clean]
        return killed

    def _terminate(self, node: NodeInfo, timeout_s: float, sig: int) -> bool:
        if not self.is_running(node):
            return True
        popen = self._popens.get(node.name)
        clean = processes.terminate(node.pid, popen, timeout_s=timeout_s, sig=sig)
        if popen is not None:
            popen.wait(timeout=1)
        return clean

    def _spawn(self, nodes: Iterable[NodeInfo]) -> None:
        env = node_environment()
        for node in nodes:
            Path(node.data_dir).mkdir(parents=True, exist_ok=True)
            popen = processes.spawn(node.command, Path(node.log), cwd=Path(node.data_dir), env=env)
            self._popens[node.name] = popen
            node.pid = popen.pid
        self.save()

    def _wait_serving(self, nodes: list[NodeInfo], timeout_s: float) -> None:
        by_name = {node.name: node for node in nodes}
        result = wait_for_serving(
            {node.name: node.address for node in nodes},
            lambda name: self.is_running(by_name[name]),
            timeout_s,
        )
        if result.ready:
            return
        if result.exited:
            node = by_name[result.exited[0]]
            popen = self._popens.get(node.name)
            code = popen.poll() if popen is not None else None
            raise ClusterError(f"{node.name} exited during start-up (exit code {code}); {log_hint(node)}")
        waiting = ", ".join(f"{name} {result.statuses[name]}" for name in result.not_ready)
        node = by_name[result.not_ready[0]]
        raise ClusterError(f"not healthy after {timeout_s:g} s: {waiting}; {log_hint(node)}",
                           ErrorCode.REQUEST_TIMED_OUT)

    # ---- status -----------------------------------------------------------------------------

    def status(self, probe_timeout_s: float = 1.0) -> list[NodeStatus]:
        running = {node.name: self.is_running(node) for node in self.nodes}
        health = probe_all({n.name: n.address for n in self.nodes if running[n.name]}, probe_timeout_s)
        return [
            NodeStatus(node.id, node.role, node.name, node.address, node.pid, running[node.name],
                       health.get(node.name, UNREACHABLE), node.log)
            for node in self.nodes
        ]


# ---- helpers ------------------------------------------------------------------------------------


def new_run_dir(parent: Path, now: datetime) -> Path:
    """``<parent>/<UTC timestamp>``; a suffix keeps two runs in the same second apart."""
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    candidate = parent / stamp
    suffix = 1
    while candidate.exists():
        candidate = parent / f"{stamp}-{suffix}"
        suffix += 1
    return candidate


def find_pointer(start_dir: Path | str | None = None) -> Path | None:
    directory = Path(start_dir or Path.cwd()).resolve()
    for candidate in (directory, *directory.parents):
        pointer = candidate / POINTER_DIR / POINTER_FILE
        if pointer.is_file():
            return pointer
    return None


def config_flags(config: dict[str, str]) -> list[str]:
    flags = []
    for key, value in config.items():
        flags += ["--config", f"{key}={value}"]
    return flags


def route_config(config: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """Split ``--config`` pairs into the controller's and the brokers' (a key may go to both).

    Each main rejects keys it does not know, so a key goes where it is known; one known nowhere
    is an error here rather than a node that dies at start-up.
    """
    is_controller_key, is_broker_key = config_key_tests()
    unknown = sorted(key for key in config if not is_controller_key(key) and not is_broker_key(key))
    if unknown:
        raise ClusterError(f"unknown configuration key(s): {', '.join(unknown)}", ErrorCode.INVALID_CONFIG)
    return ({k: v for k, v in config.items() if is_controller_key(k)},
            {k: v for k, v in config.items() if is_broker_key(k)})


def config_key_tests() -> tuple[Callable[[str], bool], Callable[[str], bool]]:
    """Whether the controller / a broker accepts a key (from their declared ConfigKeys)."""
    from controller.config import CONTROLLER_KEYS
    from node.config import BROKER_KEYS, is_log_key

    controller_keys = {key.name for key in CONTROLLER_KEYS}
    broker_keys = {key.name for key in BROKER_KEYS}
    return controller_keys.__contains__, lambda name: name in broker_keys or is_log_key(name)


def node_environment() -> dict[str, str]:
    """The nodes' environment: ours, unbuffered, with our packages importable from any cwd."""
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    return env


def log_hint(node: NodeInfo) -> str:
    lines = processes.tail(Path(node.log), 3)
    last = " | ".join(line.strip() for line in lines) if lines else "(log empty)"
    return f"see {node.log}: {last}"


__all__ = ["ClusterError", "LocalCluster", "NodeInfo", "NodeStatus", "EXITED", "SERVING", "UNREACHABLE"]
