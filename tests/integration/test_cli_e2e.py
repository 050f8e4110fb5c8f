"""End to end through the real ``brokerlab`` command in subprocesses and real node processes.

cluster up -> topic create -> produce (stdin, keys) -> consume -> topic describe --json ->
bad input errors -> cluster down, and no process left behind.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from lab.processes import brokerlab_command, pid_alive

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


class Cli:
    def __init__(self, cwd: Path) -> None:
        self.cwd = cwd
        self.env = {k: v for k, v in os.environ.items() if k != "BROKERLAB_BOOTSTRAP"}

    def __call__(self, *args: str, stdin: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run([*brokerlab_command(), *args], cwd=self.cwd, env=self.env, input=stdin,
                              capture_output=True, text=True, timeout=timeout)


def assert_one_error_line(result: subprocess.CompletedProcess, code_name: str) -> None:
    assert result.returncode != 0, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: {code_name}: "), result.stderr


@pytest.fixture(scope="module")
def cli_cluster(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("cli-e2e")
    cli = Cli(cwd)
    up = cli("cluster", "up", "--brokers", "3", "--data-dir", str(cwd / "cluster"), timeout=90)
    assert up.returncode == 0, up.stdout + up.stderr
    assert "all healthy" in up.stdout
    status = cli("cluster", "status", "--json")
    pids = [node["pid"] for node in json.loads(status.stdout)["nodes"]]
    try:
        yield cli, pids
    finally:
        down = cli("cluster", "down")
        assert down.returncode == 0, down.stderr
        assert not any(pid_alive(pid) for pid in pids)


def test_status_json(cli_cluster) -> None:
    cli, _ = cli_cluster
    result = cli("cluster", "status", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["healthy"] is True
    assert [(n["id"], n["role"]) for n in data["nodes"]] == [(0, "controller"), (1, "broker"), (2, "broker"),
                                                            (3, "broker")]
    for node in data["nodes"]:
        assert node["health"] == "SERVING" and node["healthy"] and node["address"].startswith("127.0.0.1:")
        assert isinstance(node["pid"], int)


def test_topic_produce_consume_describe(cli_cluster) -> None:
    cli, _ = cli_cluster
    created = cli("topic", "create", "orders", "--partitions", "3", "--replication-factor", "3")
    assert created.returncode == 0, created.stderr
    assert "orders" in cli("topic", "list").stdout.split()

    produced = cli("produce", "orders", "--key-separator", ":", "--acks", "1",
                   stdin="k1:hello\nk2:world\nk1:again\nk3:x:y\n")
    assert produced.returncode == 0, produced.stderr
    assert "4 records acknowledged" in produced.stdout

    consumed = cli("consume", "orders", "--from-beginning", "--max-messages", "4", "--timeout-ms", "20000",
                   "--format", "{partition} {offset} {key} {value}")
    assert consumed.returncode == 0, consumed.stderr
    rows = [line.split(" ", 3) for line in consumed.stdout.splitlines()]
    assert sorted((key, value) for _, _, key, value in rows) == [
        ("k1", "again"), ("k1", "hello"), ("k2", "world"), ("k3", "x:y")]
    k1 = [(int(p), int(o), v) for p, o, k, v in rows if k == "k1"]
    assert k1[0][0] == k1[1][0] and k1[0][1] < k1[1][1] and [v for *_, v in k1] == ["hello", "again"]

    as_json = cli("consume", "orders", "--from-beginning", "--max-messages", "1", "--partition", k1[0][0].__str__(),
                  "--format", "json", "--timeout-ms", "20000")
    record = json.loads(as_json.stdout)
    assert set(record) == {"topic", "partition", "offset", "timestamp_ms", "key", "value", "headers"}

    # k1:hello was the first line, so it is offset 0 of its partition (offset 0 is a real offset).
    first = cli("consume", "orders", "--partition", str(k1[0][0]), "--offset", "0", "--max-messages", "1",
                "--timeout-ms", "20000", "--format", "{offset} {key} {value}")
    assert first.stdout.split() == ["0", "k1", "hello"], first.stderr

    described = cli("topic", "describe", "orders", "--json")
    assert described.returncode == 0, described.stderr
    topic = json.loads(described.stdout)["topics"][0]
    assert topic["name"] == "orders" and topic["partition_count"] == 3
    for partition in topic["partitions"]:
        assert set(partition) >= {"partition", "leader", "leader_epoch", "replicas", "isr", "log_end_offset",
                                  "high_watermark"}
        assert len(partition["replicas"]) == 3 and partition["leader"] in partition["replicas"]
    assert sum(p["log_end_offset"] for p in topic["partitions"]) == 4
    assert "LOG_END_OFFSET" in cli("topic", "describe").stdout


def test_bad_input_gets_one_clear_error_line(cli_cluster) -> None:
    cli, _ = cli_cluster
    assert_one_error_line(cli("topic", "create", "bad name!", "--partitions", "1", "--replication-factor", "1"),
                          "INVALID_TOPIC_EXCEPTION")
    assert_one_error_line(cli("produce", "missing-topic", stdin="a\n"), "UNKNOWN_TOPIC_OR_PARTITION")
    assert_one_error_line(cli("topic", "create", "orders", "--partitions", "1", "--replication-factor", "1"),
                          "TOPIC_ALREADY_EXISTS")
    assert_one_error_line(cli("topic", "create", "big", "--partitions", "1", "--replication-factor", "4"),
                          "INVALID_REPLICATION_FACTOR")
    bad_acks = cli("produce", "orders", "--acks", "2", stdin="a\n")
    assert bad_acks.returncode == 2
    assert_one_error_line(bad_acks, "INVALID_REQUIRED_ACKS")

    partial = cli("produce", "orders", "--key-separator", ":", "--acks", "1", stdin="k:fine\nno separator here\n")
    assert partial.returncode == 1
    assert_one_error_line(partial, "INVALID_REQUEST")
    assert "1 of 2 records failed" in partial.stderr

    timed_out = cli("consume", "orders", "--partition", "0", "--max-messages", "1", "--timeout-ms", "300")
    assert_one_error_line(timed_out, "REQUEST_TIMED_OUT")


def test_no_cluster_anywhere_is_exit_2(tmp_path: Path) -> None:
    result = Cli(tmp_path)("topic", "list")
    assert result.returncode == 2
    assert_one_error_line(result, "BROKER_NOT_AVAILABLE")


def test_demo_runs_start_to_finish(tmp_path: Path) -> None:
    result = Cli(tmp_path)("demo", timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "9 of 9 records read back" in result.stdout
    assert "processes left behind: none" in result.stdout
    assert "LOG_END_OFFSET" in result.stdout


def test_demo_with_a_closed_stdout_still_stops_its_cluster(tmp_path: Path) -> None:
    """`brokerlab demo | head -3`: the reader leaves early; no node may outlive the demo."""
    cli = Cli(tmp_path)
    process = subprocess.Popen([*brokerlab_command(), "demo"], cwd=tmp_path, env=cli.env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    lines = [process.stdout.readline() for _ in range(3)]
    process.stdout.close()
    process.wait(timeout=60)
    data_dir = lines[2].split("(data in ", 1)[1].split(")", 1)[0]
    leftovers = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if data_dir in cmdline.read_bytes().decode(errors="replace"):
                leftovers.append(cmdline.parent.name)
        except OSError:
            continue
    assert not leftovers, f"processes of {data_dir} left running: {leftovers}"
