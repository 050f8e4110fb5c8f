"""``brokerlab sim``: run folders, byte-identical histories per seed, swarms and usage errors."""

from __future__ import annotations

import json
from pathlib import Path

from cli import main as cli_main


def run(argv, capsys):
    code = cli_main.run(argv)
    out, err = capsys.readouterr()
    return code, out, err


def sim_run(tmp_path: Path, capsys, seed: int, out: str) -> tuple[int, str, Path]:
    code, stdout, _ = run(["sim", "run", "--scenario", "leader-kill", "--seed", str(seed), "--out",
                           str(tmp_path / out)], capsys)
    return code, stdout, tmp_path / out / f"sim-leader-kill-{seed}"


def test_same_seed_gives_a_byte_identical_history_and_another_seed_differs(tmp_path: Path, capsys) -> None:
    code, out, folder = sim_run(tmp_path, capsys, 42, "a")
    assert code == 0, out
    assert "AS EXPECTED: scenario leader-kill seed 42" in out
    assert "replay: brokerlab sim run --scenario leader-kill --seed 42" in out
    assert {"history.jsonl", "results.json", "summary.txt"} <= {p.name for p in folder.iterdir()}
    results = json.loads((folder / "results.json").read_text())
    assert results["expected"]["as_expected"] is True and results["seed"] == 42

    code_again, _, folder_again = sim_run(tmp_path, capsys, 42, "b")
    assert code_again == 0
    first = (folder / "history.jsonl").read_bytes()
    assert len(first.splitlines()) > 10
    assert first == (folder_again / "history.jsonl").read_bytes()

    _, _, other = sim_run(tmp_path, capsys, 43, "c")
    assert (other / "history.jsonl").read_bytes() != first


def test_experiment_run_writes_the_experiment_report(tmp_path: Path, capsys) -> None:
    code, out, _ = run(["sim", "run", "--experiment", "leader-kill", "--seed", "3", "--duration", "3",
                        "--out", str(tmp_path)], capsys)
    folder = tmp_path / "sim-experiment-leader-kill-3"
    assert code == 0, out
    assert {"history.jsonl", "results.json", "summary.txt", "report.html"} <= {p.name for p in folder.iterdir()}
    assert "replay: brokerlab sim run --experiment leader-kill --seed 3 --duration 3" in out


def test_swarm_of_five_seeds_passes_and_prints_the_summary(capsys) -> None:
    code, out, _ = run(["sim", "swarm", "--seeds", "5", "--scenario", "leader-kill"], capsys)
    assert code == 0, out
    assert "swarm: 5 seeds x 1 scenario(s) = 5 runs, 0 failed; wall time" in out
    assert "simulated s per wall s" in out


def test_list_names_scenarios_and_experiments(capsys) -> None:
    code, out, _ = run(["sim", "list"], capsys)
    assert code == 0
    assert "leader-kill" in out and "EXPERIMENTS" in out and "two-down" in out


def test_unknown_scenario_is_one_error_line_with_exit_2(tmp_path: Path, capsys) -> None:
    for argv in (["sim", "run", "--scenario", "no-such", "--seed", "1", "--out", str(tmp_path)],
                 ["sim", "swarm", "--seeds", "1", "--scenario", "no-such"],
                 ["sim", "run", "--experiment", "no-such", "--seed", "1", "--out", str(tmp_path)]):
        code, out, err = run(argv, capsys)
        assert code == 2, argv
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: INVALID_REQUEST: ") and "no-such" in lines[0], err
