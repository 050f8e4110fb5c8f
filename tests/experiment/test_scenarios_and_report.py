"""Scenario files parse (every built-in), times scale with the duration, expectations compare;
a hand-made run folder renders to results, summary, plots and a self-contained HTML report with
the failover timeline the events imply."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from lab.experiment import report
from lab.experiment.scenario import Expectation, ScenarioError, builtin_names, builtins, load, parse, parse_at
from lab.history import History

REQUIRED = {"leader-kill", "leader-pause", "leader-bounce", "controller-kill", "follower-slow", "two-down",
            "acks1-loss", "unclean-election-loss", "coordinator-kill", "consumer-kill", "rolling-restart-eager",
            "rolling-restart-cooperative", "rolling-restart-static", "crash-lost-unflushed", "leader-isolated"}


def test_every_builtin_scenario_parses_with_an_expected_verdict() -> None:
    assert REQUIRED <= set(builtin_names())
    for scenario in builtins():
        # The fault is a nemesis action, or a broker's test fault knob (a slow acknowledgement).
        knobs = [key for key in scenario.cluster.config if key.startswith("test.")]
        assert scenario.description and (scenario.faults or knobs), scenario.name
        assert scenario.expect.verdict in ("pass", "fail")
        for fault in scenario.faults:
            assert 0 <= fault.at_s < scenario.duration_s, (scenario.name, fault)


def test_times_percentages_sums_and_rescaling() -> None:
    assert parse_at("40%", 20) == 8.0
    assert parse_at("40% + 350ms", 20) == pytest.approx(8.35)
    assert parse_at("2m", 1) == 120.0
    scenario = load("acks1-loss").with_duration(10)
    assert [round(f.at_s, 2) for f in scenario.faults] == [4.0, 4.35]
    assert scenario.faults[0].duration_s == pytest.approx(0.6)
    unclean = load("unclean-election-loss").with_duration(10)
    assert unclean.faults[0].duration_s == pytest.approx(4.5)  # "45%" of the new duration


def test_bad_scenarios_are_refused_with_a_reason() -> None:
    with pytest.raises(ScenarioError, match="unknown fault action"):
        parse('name="x"\n[[faults]]\nat="1s"\naction="explode"\n')
    with pytest.raises(ScenarioError, match="unknown key"):
        parse('name="x"\n[workload]\nspeed=3\n')
    with pytest.raises(ScenarioError, match="acks"):
        parse('name="x"\n[workload]\nacks="2"\n')
    with pytest.raises(ScenarioError, match="no scenario"):
        load("no-such-scenario")


def test_expectations_compare_counts() -> None:
    expect = Expectation("pass", {"lost-write": ">0", "duplicate": "0"})
    assert expect.check(True, {"lost-write": 3}) == []
    assert expect.check(True, {}) == ["lost-write=0, expected >0"]
    assert expect.check(False, {"lost-write": 1, "duplicate": 2}) == [
        "verdict fail, expected pass", "duplicate=2, expected 0"]


def _run_folder(tmp_path: Path, acks: str = "all") -> Path:
    """A 3-second run by hand: broker-1 led partition 0, was killed at 1 s, broker-2 took over."""
    history = History()
    history.meta.update(
        scenario="hand-made", description="a fake run", target="local", seed=1, duration_s=3, run_id="r1",
        cluster={"brokers": 3, "config": {}}, topic={"name": "t", "partitions": 1, "replication_factor": 3,
                                                     "configs": {"min.insync.replicas": "2"}},
        workload={"acks": acks, "rate": 100, "idempotence": False, "max_in_flight": 1}, faults=[],
        expect={"verdict": "pass", "anomalies": {"lost-write": "0"}}, initial_leaders={"0": [1, 0]},
        load_end_ms=3000)
    offset = 0
    for i in range(30):
        at = i * 100.0
        send = history.invoke_send("producer-1", "t", 0, f"v{i}".encode())
        send.invoked_ms = at
        if 1000 <= at < 2000:
            history.complete_send(send, error=TimeoutError("timed out"))
            send.completed_ms = at + 500
            continue
        history.complete_send(send, offset)
        send.completed_ms = at + (100 if at == 2000 else 5)
        poll = history.record_poll("consumer-1", [("t", 0, offset, send.value)])
        poll.at_ms = at + 10
        offset += 1
    history.record_event("fault", "kill", "broker-1", at_ms=1000.0, role="leader", partition=0, signal="SIGKILL")
    history.record_event("cluster", "BrokerFenced", "controller", at_ms=1900.0, broker_id="1", reason="session_timeout")
    history.record_event("cluster", "LeaderChanged", "controller", at_ms=1950.0, topic="t", partition="0", leader="2",
                         previous_leader="1", leader_epoch="1", reason="session_timeout")
    history.record_event("cluster", "LogTruncated", "broker-1", at_ms=2500.0, topic="t", partition="0",
                         from_offset="24", to_offset="26", records_removed="2", reason="diverging_epoch")
    history.record_event("heal", "restart", "broker-1", at_ms=2400.0, role="leader", partition=0)
    run = tmp_path / "run"
    run.mkdir()
    history.save(run / report.HISTORY)
    return run


def test_a_run_folder_renders_self_contained_with_its_timeline(tmp_path: Path) -> None:
    run = _run_folder(tmp_path)
    results = report.render(run)
    for name in ("results.json", "summary.txt", "report.html", "throughput.png", "leaders.png", "acked_vs_read.png"):
        assert (run / name).is_file() and (run / name).stat().st_size > 0, name
    page = (run / "report.html").read_text()
    assert not re.search(r"https?://", page), "the report must not reach the network"
    assert page.count("data:image/png;base64,") == 3
    assert results["verdict"]["ok"] and results["expected"]["as_expected"]
    step = results["timeline"]["failovers"][0]
    assert (step["node"], step["partition"], step["fenced_after_ms"], step["new_leader"], step["new_epoch"]) == (
        "broker-1", 0, 900.0, 2, 1)
    assert step["new_leader_after_ms"] == 950.0 and step["first_ack_after_ms"] == 1100.0
    assert step["consumers_resumed_after_ms"] == 1010.0
    windows = results["timeline"]["unavailability"]["0"] if "0" in results["timeline"]["unavailability"] else \
        results["timeline"]["unavailability"][0]
    assert windows and windows[0]["start_ms"] == 905.0 and windows[0]["end_ms"] == 2100.0
    assert results["timeline"]["truncations"][0]["offsets"] == "24-25"
    assert results["lost"]["records_truncated"] == 2
    summary = (run / "summary.txt").read_text()
    assert "PASS" in summary and "AS EXPECTED" in summary and "new leader broker-2 (epoch 1)" in summary
    json.loads((run / "results.json").read_text())
    again = report.render(run)  # re-rendering a finished run gives the same verdict
    assert again["verdict"] == results["verdict"]


def test_the_report_cli_rerenders_a_run(tmp_path: Path, capsys) -> None:
    from cli.main import run as cli

    folder = _run_folder(tmp_path)
    assert cli(["experiment", "report", str(folder)]) == 0
    assert "re-rendered" in capsys.readouterr().out
    assert cli(["experiment", "report", str(tmp_path)]) == 2
    assert cli(["experiment", "list"]) == 0
    assert "leader-kill" in capsys.readouterr().out
