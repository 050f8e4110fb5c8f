"""lab.compose_cluster without Docker: addresses, the environment handed to compose, the commands."""

from __future__ import annotations

import pytest

from brokerlab.errors import KafkaError
from lab.compose_cluster import COMPOSE_FILE, ComposeCluster


@pytest.fixture(autouse=True)
def compose_client(monkeypatch):
    monkeypatch.setenv("BROKERLAB_COMPOSE", "docker-compose")


def test_default_addresses_are_the_published_loopback_ports() -> None:
    cluster = ComposeCluster()
    assert cluster.node_names == ["controller", "broker-1", "broker-2", "broker-3"]
    assert cluster.bootstrap_servers() == ["127.0.0.1:19091", "127.0.0.1:19092", "127.0.0.1:19093"]
    assert cluster.controller_address() == "127.0.0.1:19090"


def test_environment_carries_ports_image_and_configs() -> None:
    cluster = ComposeCluster(ports={"controller": 29000, "broker-2": 29002}, image="brokerlab:test",
                             broker_config={"replica.lag.time.max.ms": "2000", "min.insync.replicas": "2"})
    env = cluster.environment()
    assert env["BROKERLAB_CONTROLLER_PORT"] == "29000"
    assert (env["BROKERLAB_BROKER1_PORT"], env["BROKERLAB_BROKER2_PORT"]) == ("19091", "29002")
    assert env["BROKERLAB_IMAGE"] == "brokerlab:test"
    assert env["BROKERLAB_BROKER_CONFIG"] == "replica.lag.time.max.ms=2000 min.insync.replicas=2"
    assert cluster.address("broker-2") == "127.0.0.1:29002"


def test_commands_name_the_file_and_project_and_the_profile_when_needed() -> None:
    three, five = ComposeCluster(project="p"), ComposeCluster(project="p", brokers=5)
    assert three.compose_command("up", "-d") == ["docker-compose", "-f", str(COMPOSE_FILE), "-p", "p", "up", "-d"]
    assert "--profile" in five.compose_command("up", "-d")
    assert "--profile" in three.compose_command("down")  # down removes brokers 4-5 too
    assert five.node_names[-1] == "broker-5"


def test_bad_sizes_and_names_are_errors() -> None:
    with pytest.raises(KafkaError):
        ComposeCluster(brokers=6)
    with pytest.raises(KafkaError, match="no node 'broker-4'"):
        ComposeCluster().address("broker-4")
