"""The brokerlab command without processes: parsing, bootstrap resolution, errors and exit codes."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from brokerlab.config import ConfigError
from brokerlab.errors import ErrorCode, KafkaError
from cli import main as cli_main
from cli.common import (
    BOOTSTRAP_ENV,
    CliError,
    describe_error,
    parse_acks,
    parse_key_values,
    resolve_bootstrap,
    split_addresses,
)
from lab.local_cluster import LocalCluster


def run(argv, capsys):
    code = cli_main.run(argv)
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(err: str, code_name: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"error: {code_name}: "), err
    assert "Traceback" not in err


def test_every_documented_command_parses() -> None:
    parser = cli_main.build_parser()
    commands = [
        ["cluster", "up", "--brokers", "3", "--data-dir", "d", "--config", "log.flush.policy=batch"],
        ["cluster", "status", "--json"], ["cluster", "down"], ["cluster", "stop", "broker-2", "--kill"],
        ["cluster", "start", "2"],
        ["topic", "create", "orders", "--partitions", "6", "--replication-factor", "3", "--config", "retention.ms=1"],
        ["topic", "list"], ["topic", "delete", "orders"], ["topic", "describe"], ["topic", "describe", "orders", "--json"],
        ["produce", "orders", "--key-separator", ":", "--acks", "all", "--partition", "1", "--header", "a=b",
         "--key-serializer", "str", "--value-serializer", "json"],
        ["consume", "orders", "--from-beginning", "--max-messages", "2", "--partition", "0", "--offset", "3",
         "--timeout-ms", "100", "--format", "{offset} {key} {value}"],
        ["bench", "produce", "--topic", "t", "--records", "10", "--record-size", "100", "--acks", "all",
         "--batch-size", "65536", "--linger-ms", "10", "--json"],
        ["bench", "consume", "--topic", "t", "--records", "10", "--json"],
        ["demo"],
        ["topic", "list", "--bootstrap", "127.0.0.1:9092", "--bootstrap", "127.0.0.1:9093"],
    ]
    for argv in commands:
        args = parser.parse_args(argv)
        assert callable(args.func), argv


def test_usage_errors_are_one_line_with_exit_2(capsys) -> None:
    for argv in (["nope"], ["topic", "create"], ["cluster", "up", "--brokers", "x"], []):
        code, out, err = run(argv, capsys)
        assert code == 2, argv
        one_error_line(err, "INVALID_REQUEST")


def test_help_exits_0(capsys) -> None:
    code, out, _ = run(["--help"], capsys)
    assert code == 0 and "cluster" in out and "Exit codes" in out


def test_errors_map_to_one_line_and_exit_codes(capsys, monkeypatch) -> None:
    def raising(exc):
        def func(args):
            raise exc
        return func

    cases = [
        (KafkaError(ErrorCode.INVALID_TOPIC_EXCEPTION, "bad name 'a b'\nsecond line"), 1, "INVALID_TOPIC_EXCEPTION"),
        (CliError(ErrorCode.BROKER_NOT_AVAILABLE, "no cluster", 2), 2, "BROKER_NOT_AVAILABLE"),
        (ConfigError("unknown configuration key(s): x"), 2, "INVALID_CONFIG"),
        (PermissionError(13, "Permission denied"), 1, "KAFKA_STORAGE_ERROR"),
        (ConnectionRefusedError("refused"), 1, "NETWORK_EXCEPTION"),
        (TimeoutError(), 1, "REQUEST_TIMED_OUT"),
        (ValueError("boom"), 1, "UNKNOWN_SERVER_ERROR"),
    ]
    for exc, exit_code, code_name in cases:
        monkeypatch.setattr(cli_main, "build_parser", lambda exc=exc: _parser_with(raising(exc)))
        code, out, err = run(["x"], capsys)
        assert code == exit_code, exc
        one_error_line(err, code_name)

    monkeypatch.setattr(cli_main, "build_parser", lambda: _parser_with(raising(KeyboardInterrupt())))
    code, _, err = run(["x"], capsys)
    assert code == 130 and "Traceback" not in err


def _parser_with(func):
    parser = argparse.ArgumentParser()
    parser.add_argument("x")
    parser.set_defaults(func=func)
    return parser


class FakeRpcError(Exception):
    class _Code:
        name = "UNAVAILABLE"

    def code(self):
        return self._Code()

    def details(self):
        return "failed to connect to all addresses"


def test_grpc_errors_are_reported_by_status_name() -> None:
    code_name, message, exit_code = describe_error(FakeRpcError())
    assert code_name == "NETWORK_EXCEPTION" and "UNAVAILABLE" in message and exit_code == 1


def test_bootstrap_resolution_order(tmp_path: Path) -> None:
    env = {BOOTSTRAP_ENV: "h1:1,h2:2"}
    assert resolve_bootstrap(["a:1", "b:2,c:3"], env, tmp_path) == (["a:1", "b:2", "c:3"], "--bootstrap")
    assert resolve_bootstrap(None, env, tmp_path) == (["h1:1", "h2:2"], BOOTSTRAP_ENV)
    with pytest.raises(CliError) as info:
        resolve_bootstrap(None, {}, tmp_path)
    assert info.value.exit_code == 2 and info.value.code == ErrorCode.BROKER_NOT_AVAILABLE
    assert "brokerlab cluster up" in info.value.message


def test_bootstrap_from_the_local_cluster_pointer(tmp_path: Path, monkeypatch) -> None:
    cluster = LocalCluster.plan(brokers=2, data_dir=tmp_path / "run", controller_command=["true"],
                                broker_command=["true"])
    cluster.write_pointer(tmp_path)
    with pytest.raises(CliError) as info:  # planned but not running
        resolve_bootstrap(None, {}, tmp_path)
    assert "not running" in info.value.message and info.value.exit_code == 2
    monkeypatch.setattr(LocalCluster, "any_running", lambda self: True)
    addresses, source = resolve_bootstrap(None, {}, tmp_path / "sub")
    assert addresses == cluster.bootstrap_servers() and source == str(cluster.data_dir)


def test_client_command_without_cluster_exits_2(capsys, monkeypatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(BOOTSTRAP_ENV, raising=False)
    for argv in (["topic", "list"], ["consume", "t"], ["cluster", "status"], ["cluster", "down"]):
        code, _, err = run(argv, capsys)
        assert code == 2, argv
        one_error_line(err, "BROKER_NOT_AVAILABLE")


def test_bad_addresses_and_pairs_and_acks() -> None:
    for bad in ("localhost", "h:", ":1", "h:x", "h:70000"):
        with pytest.raises(CliError):
            split_addresses(bad)
    assert parse_key_values(["a.b=1", "c=x=y"]) == {"a.b": "1", "c": "x=y"}
    with pytest.raises(CliError):
        parse_key_values(["novalue"])
    assert [parse_acks(a) for a in ("0", "1", "all", "-1")] == ["0", "1", "all", "all"]
    with pytest.raises(CliError) as info:
        parse_acks("2")
    assert info.value.code == ErrorCode.INVALID_REQUIRED_ACKS


def test_cluster_status_json_shape(tmp_path: Path, capsys, monkeypatch) -> None:
    LocalCluster.plan(brokers=1, data_dir=tmp_path / "run", controller_command=["true"], broker_command=["true"])
    code, out, err = run(["cluster", "status", "--json", "--data-dir", str(tmp_path / "run")], capsys)
    assert code == 1  # nothing running: not healthy
    data = json.loads(out)
    assert set(data) == {"data_dir", "created_at", "config", "bootstrap", "healthy", "nodes"}
    assert data["healthy"] is False
    node = data["nodes"][0]
    assert set(node) == {"id", "name", "role", "address", "pid", "alive", "health", "healthy", "log"}
    assert (node["id"], node["role"], node["health"], node["alive"]) == (0, "controller", "UNREACHABLE", False)
