"""Static checks of deploy/ that need no Docker (they run everywhere, unlike test_compose.py).

The entrypoint's environment -> flags mapping is accepted by the real mains; the compose file
publishes on 127.0.0.1 only and advertises exactly the ports it publishes; the build context
keeps local state out.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"deploy_{name}", DEPLOY / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


entrypoint = load("entrypoint")
healthcheck = load("healthcheck")

BROKER_ENV = {
    "BROKERLAB_ROLE": "broker",
    "BROKERLAB_BROKER_ID": "2",
    "BROKERLAB_CONTROLLER": "controller:9090",
    "BROKERLAB_ADVERTISED_LISTENER": "broker-2:9092",
    "BROKERLAB_EXTERNAL_LISTENER": "0.0.0.0:9093",
    "BROKERLAB_ADVERTISED_EXTERNAL_LISTENER": "127.0.0.1:19092",
    "BROKERLAB_EXTERNAL_CONTROLLER": "127.0.0.1:19090",
    "BROKERLAB_CONFIG": "min.insync.replicas=2, replica.lag.time.max.ms=2000",
    "BROKERLAB_RACK": "",
}


def test_broker_environment_becomes_flags_the_broker_main_accepts() -> None:
    from node.__main__ import parse_args

    command = entrypoint.command_for([], BROKER_ENV)
    assert command[:3] == [sys.executable, "-m", "node"]
    args = parse_args(command[3:])
    assert (args.broker_id, args.controller, args.listen) == (2, "controller:9090", "0.0.0.0:9092")
    assert args.advertised_listener == "broker-2:9092"
    assert args.external_listener == "0.0.0.0:9093"
    assert args.advertised_external_listener == "127.0.0.1:19092"
    assert args.external_controller == "127.0.0.1:19090"
    assert args.data_dir == entrypoint.DEFAULT_DATA_DIR
    assert args.config == ["min.insync.replicas=2", "replica.lag.time.max.ms=2000"]
    assert args.rack == ""  # empty variables are left out


def test_controller_role_from_the_first_argument_and_flags_win_over_the_environment() -> None:
    from controller.__main__ import parse_args

    command = entrypoint.command_for(["controller", "--listen", "0.0.0.0:7000"], {"BROKERLAB_SEED": "7"})
    assert command[:3] == [sys.executable, "-m", "controller"]
    args = parse_args(command[3:])
    assert (args.listen, args.seed, args.node_id) == ("0.0.0.0:7000", 7, 0)


def test_other_commands_run_as_they_are() -> None:
    assert entrypoint.command_for(["brokerlab", "topic", "list"], BROKER_ENV) == ["brokerlab", "topic", "list"]


@pytest.mark.parametrize("argv, env, message", [
    ([], {}, "BROKERLAB_ROLE"),
    (["broker"], {"BROKERLAB_CONTROLLER": "c:1"}, "BROKERLAB_BROKER_ID"),
    ([], {**BROKER_ENV, "BROKERLAB_CONFIG": "oops"}, "key=value"),
])
def test_usage_errors(argv, env, message) -> None:
    with pytest.raises(entrypoint.UsageError, match=message):
        entrypoint.command_for(argv, env)


def test_required_values_may_come_as_flags() -> None:
    command = entrypoint.command_for(["broker", "--broker-id", "1", "--controller", "c:1"], {})
    assert command[-4:] == ["--broker-id", "1", "--controller", "c:1"]


def test_healthcheck_probes_the_nodes_own_listener() -> None:
    assert healthcheck.address_of({"BROKERLAB_LISTEN": "0.0.0.0:9092"}) == "127.0.0.1:9092"
    assert healthcheck.address_of({"BROKERLAB_ROLE": "controller"}) == "127.0.0.1:9090"


def compose_text() -> str:
    return (DEPLOY / "docker-compose.yml").read_text()


def test_ports_are_published_on_loopback_only() -> None:
    ports = re.findall(r'^\s+- "([^"]+:\d+)"\s*$', compose_text(), re.M)
    assert len(ports) == 6  # controller + brokers 1-5
    assert all(p.startswith("127.0.0.1:") for p in ports), ports


def test_each_broker_advertises_the_port_it_publishes() -> None:
    text = compose_text()
    for broker_id in range(1, 6):
        block = text.split(f"  broker-{broker_id}:\n", 1)[1].split("\n\n", 1)[0]
        port_var = f"${{BROKERLAB_BROKER{broker_id}_PORT:-1909{broker_id}}}"
        assert f"BROKERLAB_ADVERTISED_EXTERNAL_LISTENER: 127.0.0.1:{port_var}" in block
        assert f'"127.0.0.1:{port_var}:9093"' in block
        assert f"BROKERLAB_ADVERTISED_LISTENER: broker-{broker_id}:9092" in block
        assert f"broker-{broker_id}-data:/var/lib/brokerlab/data" in block
        assert ("profiles: [more-brokers]" in block) == (broker_id > 3)


def test_build_context_keeps_local_state_out() -> None:
    lines = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert lines[0] == "*"  # everything is out unless listed
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert {".venv", ".git", "runs", ".brokerlab"}.isdisjoint(allowed)
    assert {"pyproject.toml", "brokerlab", "node", "controller", "client", "lab", "cli"} <= allowed
