"""A docker-compose cluster (deploy/docker-compose.yml) driven from the host.

The compose counterpart of ``lab.local_cluster.LocalCluster``: the same node names
(``controller``, ``broker-<id>`` are the compose services), host addresses for clients (the
published external listeners on 127.0.0.1), readiness by health check with a deadline, and
process faults through docker (kill with a signal, stop, start, pause, unpause). Used by
``make compose-up|compose-down|compose-ps``, the e2e test and experiments with
``--target compose``.

    cluster = ComposeCluster(project="brokerlab")
    cluster.build(); cluster.up()                 # returns the seconds until all are healthy
    cluster.bootstrap_servers()                   # ["127.0.0.1:19091", ...]
    cluster.kill_node("broker-2"); cluster.start_node("broker-2")
    cluster.down()                                # containers, network and volumes

    python -m lab.compose_cluster up|down|ps|build [--brokers N] [--project P]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

from brokerlab.errors import ErrorCode, KafkaError

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "deploy" / "docker-compose.yml"
COMPOSE_ENV = "BROKERLAB_COMPOSE"  # "docker compose" or "docker-compose": which client to use
MORE_BROKERS_PROFILE = "more-brokers"  # broker-4 and broker-5
MAX_BROKERS = 5
DEFAULT_PROJECT = "brokerlab"
DEFAULT_IMAGE = "brokerlab:dev"
DEFAULT_PORT_BASE = 19090  # controller; broker N at base + N
HOST = "127.0.0.1"
DEFAULT_UP_TIMEOUT_S = 60.0
COMMAND_TIMEOUT_S = 120.0
BUILD_TIMEOUT_S = 900.0


class ComposeError(KafkaError):
    """A docker or compose failure, reported like any Kafka error: a code and one line."""

    def __init__(self, message: str, code: int = ErrorCode.BROKER_NOT_AVAILABLE) -> None:
        super().__init__(code, message)


@dataclass
class ComposeNodeStatus:
    name: str
    container: str  # id, "" when there is none
    state: str  # running | exited | paused | restarting | created | missing
    health: str  # healthy | unhealthy | starting | none
    address: str  # from the host

    @property
    def healthy(self) -> bool:
        return self.state == "running" and self.health == "healthy"

    def to_json(self) -> dict:
        return {**asdict(self), "healthy": self.healthy}


def compose_client() -> list[str] | None:
    """The compose command: $BROKERLAB_COMPOSE, else ``docker compose`` (v2), else ``docker-compose``."""
    chosen = os.environ.get(COMPOSE_ENV, "").strip()
    if chosen:
        return shlex.split(chosen)
    if shutil.which("docker") and _succeeds(["docker", "compose", "version"]):
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


def engine_status(timeout_s: float = 15.0) -> tuple[bool, str]:
    """(True, "") when a Docker engine answers and a compose client exists, else (False, why)."""
    if shutil.which("docker") is None:
        return False, "no docker command on the PATH"
    try:
        result = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True,
                                text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return False, f"docker info did not answer within {timeout_s:g} s"
    if result.returncode != 0 or not result.stdout.strip():
        detail = " ".join((result.stderr or result.stdout).split())[:200]
        return False, f"no Docker engine reachable (docker info: {detail or 'failed'})"
    if compose_client() is None:
        return False, "neither `docker compose` nor `docker-compose` is installed"
    return True, ""


def _succeeds(command: list[str]) -> bool:
    try:
        return subprocess.run(command, capture_output=True, timeout=15).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@dataclass
class ComposeCluster:
    project: str = DEFAULT_PROJECT
    brokers: int = 3
    ports: dict[str, int] = field(default_factory=dict)  # node name -> host port (default: base + id)
    image: str = DEFAULT_IMAGE
    broker_config: dict[str, str] = field(default_factory=dict)
    controller_config: dict[str, str] = field(default_factory=dict)
    compose_file: Path = COMPOSE_FILE
    fault_injection: bool = False  # nodes serve FaultService (experiments, --target compose)

    def __post_init__(self) -> None:
        if not 1 <= self.brokers <= MAX_BROKERS:
            raise ComposeError(f"the compose file has brokers 1..{MAX_BROKERS}, not {self.brokers}",
                               ErrorCode.INVALID_REQUEST)
        defaults = {"controller": DEFAULT_PORT_BASE}
        defaults.update({f"broker-{i}": DEFAULT_PORT_BASE + i for i in range(1, MAX_BROKERS + 1)})
        self.ports = {**defaults, **self.ports}

    # ---- names and addresses --------------------------------------------------------------

    @property
    def broker_names(self) -> list[str]:
        return [f"broker-{i}" for i in range(1, self.brokers + 1)]

    @property
    def node_names(self) -> list[str]:
        return ["controller", *self.broker_names]

    def address(self, name: str) -> str:
        """How a host client reaches the node (a broker's external listener, the controller)."""
        self._check_name(name)
        return f"{HOST}:{self.ports[name]}"

    def bootstrap_servers(self) -> list[str]:
        return [self.address(name) for name in self.broker_names]

    def controller_address(self) -> str:
        return self.address("controller")

    def _check_name(self, name: str) -> None:
        if name not in self.node_names:
            raise ComposeError(f"no node {name!r} in this cluster (have {', '.join(self.node_names)})",
                               ErrorCode.INVALID_REQUEST)

    # ---- compose ------------------------------------------------------------------------------

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env["BROKERLAB_IMAGE"] = self.image
        env["BROKERLAB_CONTROLLER_PORT"] = str(self.ports["controller"])
        for i in range(1, MAX_BROKERS + 1):
            env[f"BROKERLAB_BROKER{i}_PORT"] = str(self.ports[f"broker-{i}"])
        env["BROKERLAB_BROKER_CONFIG"] = " ".join(f"{k}={v}" for k, v in self.broker_config.items())
        env["BROKERLAB_CONTROLLER_CONFIG"] = " ".join(f"{k}={v}" for k, v in self.controller_config.items())
        env["BROKERLAB_FAULT_INJECTION"] = "1" if self.fault_injection else ""
        return env

    def compose_command(self, *args: str) -> list[str]:
        client = compose_client()
        if client is None:
            raise ComposeError("neither `docker compose` nor `docker-compose` is installed")
        profiles = ["--profile", MORE_BROKERS_PROFILE] if self.brokers > 3 or args[:1] == ("down",) else []
        return [*client, "-f", str(self.compose_file), "-p", self.project, *profiles, *args]

    def compose(self, *args: str, timeout_s: float = COMMAND_TIMEOUT_S, quiet: bool = True) -> str:
        """Run one compose command; its stdout, or ComposeError with the tail of its output."""
        return _run(self.compose_command(*args), self.environment(), timeout_s, quiet)

    def build(self, timeout_s: float = BUILD_TIMEOUT_S, quiet: bool = True) -> float:
        """Build the image (every service shares it, so building one service is enough)."""
        started = time.monotonic()
        self.compose("build", "controller", timeout_s=timeout_s, quiet=quiet)
        return time.monotonic() - started

    def image_exists(self) -> bool:
        return _succeeds(["docker", "image", "inspect", self.image])

    def up(self, timeout_s: float = DEFAULT_UP_TIMEOUT_S) -> float:
        """Create and start the nodes, wait until every one is healthy; returns the seconds it took."""
        if not self.image_exists():
            self.build()
        started = time.monotonic()
        self.compose("up", "-d", "--no-build", *self.node_names, timeout_s=max(timeout_s, COMMAND_TIMEOUT_S))
        self.wait_healthy(self.node_names, max(1.0, timeout_s - (time.monotonic() - started)))
        return time.monotonic() - started

    def down(self, volumes: bool = True, timeout_s: float = COMMAND_TIMEOUT_S) -> None:
        """Remove the containers and the network (and the named volumes unless ``volumes=False``)."""
        args = ["down", "--remove-orphans", "-t", "5"]
        if volumes:
            args.append("-v")
        self.compose(*args, timeout_s=timeout_s)

    def leftovers(self) -> dict[str, list[str]]:
        """Containers, networks and volumes of this project still on the engine."""
        label = f"label=com.docker.compose.project={self.project}"
        return {
            "containers": _lines(_run(["docker", "ps", "-a", "-q", "--filter", label], None)),
            "networks": _lines(_run(["docker", "network", "ls", "-q", "--filter", label], None)),
            "volumes": _lines(_run(["docker", "volume", "ls", "-q", "--filter", label], None)),
        }

    # ---- state ------------------------------------------------------------------------------

    def _containers(self) -> dict[str, dict]:
        """service name -> docker inspect of its container (compose labels, not `compose ps`: one
        docker call instead of one compose process per node)."""
        ids = _lines(_run(["docker", "ps", "-a", "-q", "--filter", f"label=com.docker.compose.project={self.project}",
                           "--filter", "label=com.docker.compose.oneoff=False"], None))
        if not ids:
            return {}
        out = {}
        for item in json.loads(_run(["docker", "inspect", *ids], None)):
            service = (item["Config"].get("Labels") or {}).get("com.docker.compose.service", "")
            out[service] = item
        return out

    def container_id(self, name: str) -> str:
        self._check_name(name)
        item = self._containers().get(name)
        return item["Id"][:12] if item else ""

    def status(self) -> list[ComposeNodeStatus]:
        containers = self._containers()
        out = []
        for name in self.node_names:
            item = containers.get(name)
            if item is None:
                out.append(ComposeNodeStatus(name, "", "missing", "none", self.address(name)))
                continue
            health = (item["State"].get("Health") or {}).get("Status", "none")
            out.append(ComposeNodeStatus(name, item["Id"][:12], item["State"]["Status"], health, self.address(name)))
        return out

    def wait_healthy(self, names: Sequence[str], timeout_s: float, interval_s: float = 0.5,
                     probe: bool = False) -> None:
        """Until every named node is running and healthy; ComposeError (with log tails) at the deadline.

        ``probe``: a running node also counts once its gRPC health service (the one docker's check
        asks) answers SERVING on the published port. Docker re-runs its check only every few
        seconds; a restart in an experiment should not wait for that cadence."""
        from lab.rpc.health import SERVING, HealthProber

        deadline = time.monotonic() + timeout_s
        with HealthProber() as prober:
            while True:
                statuses = {s.name: s for s in self.status() if s.name in names}
                waiting = [s for s in statuses.values() if not s.healthy and not (
                    probe and s.state == "running" and prober.probe(s.address, 0.5) == SERVING)]
                if not waiting:
                    return
                if time.monotonic() >= deadline:
                    break
                time.sleep(interval_s / 5 if probe else interval_s)
        detail = "; ".join(f"{s.name} {s.state}/{s.health}: {self.log_tail(s.name)}" for s in waiting)
        raise ComposeError(f"not healthy after {timeout_s:g} s: {detail}", ErrorCode.REQUEST_TIMED_OUT)

    def logs(self, name: str, tail: int | None = None) -> str:
        """The node's log (logfmt lines on stderr), as docker keeps it."""
        cid = self.container_id(name)
        if not cid:
            return ""
        command = ["docker", "logs", *(["--tail", str(tail)] if tail else []), cid]
        result = subprocess.run(command, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
        return result.stdout + result.stderr

    def log_tail(self, name: str, lines: int = 2) -> str:
        tail = [line.strip() for line in self.logs(name, tail=lines).splitlines() if line.strip()]
        return " | ".join(tail) if tail else "(no log)"

    # ---- faults -----------------------------------------------------------------------------

    def kill_node(self, name: str, signal: str = "KILL") -> None:
        """Send a signal to the node's process (docker kill). After SIGKILL docker does not restart
        it (a manual kill), so it stays down until ``start_node``."""
        _run(["docker", "kill", "-s", signal, self._running_id(name)], None)

    def stop_node(self, name: str, timeout_s: int = 10) -> None:
        """SIGTERM (a clean shutdown), SIGKILL after ``timeout_s``."""
        _run(["docker", "stop", "-t", str(timeout_s), self._running_id(name)], None, timeout_s + COMMAND_TIMEOUT_S)

    def start_node(self, name: str, wait: bool = True, timeout_s: float = DEFAULT_UP_TIMEOUT_S) -> None:
        cid = self.container_id(name)
        if not cid:
            raise ComposeError(f"{name} has no container (is the cluster up?)")
        _run(["docker", "start", cid], None)
        if wait:
            self.wait_healthy([name], timeout_s, probe=True)

    def pause_node(self, name: str) -> None:
        """Freeze every process of the node (cgroup freezer), like SIGSTOP."""
        _run(["docker", "pause", self._running_id(name)], None)

    def resume_node(self, name: str) -> None:
        _run(["docker", "unpause", self._running_id(name)], None)

    def _running_id(self, name: str) -> str:
        cid = self.container_id(name)
        if not cid:
            raise ComposeError(f"{name} has no container (is the cluster up?)")
        return cid


def _run(command: list[str], env: dict[str, str] | None, timeout_s: float = COMMAND_TIMEOUT_S,
         quiet: bool = True) -> str:
    try:
        result = subprocess.run(command, env=env, timeout=timeout_s, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE if quiet else None)
    except FileNotFoundError:
        raise ComposeError(f"{command[0]} is not installed") from None
    except subprocess.TimeoutExpired:
        raise ComposeError(f"{shlex.join(command[:4])} ... took more than {timeout_s:g} s",
                           ErrorCode.REQUEST_TIMED_OUT) from None
    if result.returncode != 0:
        tail = " | ".join(line.strip() for line in (result.stderr or "").strip().splitlines()[-3:])
        raise ComposeError(f"{shlex.join(command)} failed (exit {result.returncode}): {tail}")
    return result.stdout


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


# ---- python -m lab.compose_cluster (the Makefile's compose targets) ----------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.compose_cluster",
                                     description="Run the docker-compose cluster of deploy/docker-compose.yml.")
    parser.add_argument("action", choices=["build", "up", "down", "ps"])
    parser.add_argument("--brokers", type=int, default=3, help="3, or up to 5 (the more-brokers profile)")
    parser.add_argument("--project", default=DEFAULT_PROJECT, help="compose project name")
    parser.add_argument("--timeout", type=float, default=DEFAULT_UP_TIMEOUT_S, help="seconds to become healthy")
    parser.add_argument("--keep-volumes", action="store_true", help="down: keep the named volumes")
    parser.add_argument("--json", action="store_true", help="ps: JSON")
    args = parser.parse_args(argv)
    try:
        cluster = ComposeCluster(project=args.project, brokers=args.brokers)
        if args.action == "build":
            elapsed = cluster.build(quiet=False)
            print(f"built {cluster.image} in {elapsed:.1f} s")
        elif args.action == "up":
            elapsed = cluster.up(args.timeout)
            print(f"{len(cluster.node_names)} containers healthy in {elapsed:.1f} s "
                  f"(project {cluster.project}); controller {cluster.controller_address()}")
            print(f"try: brokerlab topic list --bootstrap {cluster.bootstrap_servers()[0]}")
        elif args.action == "down":
            cluster.down(volumes=not args.keep_volumes)
            left = {kind: ids for kind, ids in cluster.leftovers().items() if ids}
            print(f"removed project {cluster.project}" + (f"; still there: {left}" if left else ""))
        else:
            _print_status(cluster, args.json)
    except KafkaError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    return 0


def _print_status(cluster: ComposeCluster, as_json: bool) -> None:
    statuses = cluster.status()
    if as_json:
        print(json.dumps({"project": cluster.project, "nodes": [s.to_json() for s in statuses]}, indent=2))
        return
    print(f"{'NODE':<12}{'CONTAINER':<14}{'STATE':<12}{'HEALTH':<11}ADDRESS (host)")
    for s in statuses:
        print(f"{s.name:<12}{s.container or '-':<14}{s.state:<12}{s.health:<11}{s.address}")


if __name__ == "__main__":
    sys.exit(main())
