"""A catalog scenario's run folder is an experiment's: history.jsonl with the experiments' meta,
results.json, summary.txt, the PNG plots and a self-contained report.html; the simulation's speed
(virtual time, wall time, ratio) is in it and in what ``brokerlab sim run`` prints."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from lab.experiment import report
from lab.sim.scenarios import run_scenario
from lab.sim.workload import history_bytes
from lab.sim_runs import run_one, write_folder

FOLDER_FILES = {"history.jsonl", "results.json", "summary.txt", "report.html", "throughput.png", "leaders.png",
                "acked_vs_read.png"}


def test_a_catalog_run_folder_has_the_experiment_report(tmp_path: Path) -> None:
    run = run_one("leader-kill", 42)
    assert run.as_expected, run.problem
    folder = write_folder(run, tmp_path)
    assert {p.name for p in folder.iterdir()} == FOLDER_FILES
    history = (folder / "history.jsonl").read_bytes()
    results = json.loads((folder / "results.json").read_text())
    # The catalog's judgement is the report's "expected"; the checker and timeline are the experiments'.
    assert results["expected"]["as_expected"] is True and results["seed"] == 42 and results["target"] == "sim"
    assert results["verdict"]["ok"] is True and results["anomalies"] == {}
    assert results["catalog"]["history_sha256"] == hashlib.sha256(history).hexdigest()
    (failover,) = results["timeline"]["failovers"]  # the leader kill, seen from the history alone
    assert failover["fault"] == "kill" and failover["new_leader"] is not None
    assert failover["new_epoch"] == 1 and failover["first_ack_after_ms"] is not None
    assert results["sim"]["virtual_ms"] > 1_000 and results["sim"]["events"] > 100
    assert results["sim"]["speed_x"] > 0
    page = (folder / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 3 and "http://" not in page and "https://" not in page
    summary = (folder / "summary.txt").read_text()
    assert "experiment leader-kill (sim, seed 42" in summary and "s simulated in" in summary
    assert "x real time" in summary and "steps:" in summary


def test_the_folder_history_is_the_runs_history_plus_its_meta_and_rerenders_alike(tmp_path: Path) -> None:
    first = write_folder(run_one("leader-pause", 3), tmp_path / "a")
    second = write_folder(run_one("leader-pause", 3), tmp_path / "b")
    written = (first / "history.jsonl").read_bytes()
    assert written == (second / "history.jsonl").read_bytes()
    # The records are exactly what the scenario's own run recorded; only the meta line is new.
    plain = history_bytes(run_scenario("leader-pause", 3).report.failover.history)
    assert written.splitlines()[1:] == plain.splitlines()[1:]
    meta = json.loads(written.splitlines()[0])
    assert meta["topic"]["name"] == "events" and meta["workload"]["acks"] == "1"  # the tail's acks=1
    assert meta["initial_leaders"] and meta["trace_sha256"]
    # `brokerlab experiment report` re-renders it from the history alone.
    before = json.loads((first / "results.json").read_text())
    again = json.loads(json.dumps(report.render(first), default=str))
    assert again["stats"] == before["stats"] and again["timeline"] == before["timeline"]
    assert again["plots"] == before["plots"]


def test_produce_and_check_has_no_history_to_report_on(tmp_path: Path) -> None:
    folder = write_folder(run_one("produce-and-check", 3), tmp_path)
    assert {p.name for p in folder.iterdir()} == {"results.json", "summary.txt"}
    results = json.loads((folder / "results.json").read_text())
    assert results["expected"]["as_expected"] is True and results["sim"]["virtual_ms"] > 0
