"""The failover scenarios (lab/sim/catalog.py) on the real cores, over many seeds.

Each scenario runs its default seeds (``--sim-seeds K`` / ``BROKERLAB_SIM_SEEDS`` for more,
``--sim-seed N`` for one); every run is checked by the invariants after every event and its
history by ``lab.checker`` plus the scenario's own checks. A failure prints the exact command
that replays it (and a bug it finds gets a reduced reproduction in test_sim_known_bugs.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from lab.sim.catalog import CATALOG
from lab.sim.failover import FailoverScenario
from lab.sim.scenarios import FAILOVER_SCENARIOS, failover_scenario, run_scenario
from lab.sim.steps import ACTIONS, Step, draw
from lab.sim.verdict import CHECKS
from lab.sim.workload import history_bytes

ROOT = Path(__file__).resolve().parents[2]


# Default seeds per scenario: 150 runs, together about 15 s of CPU (the heavy ones run fewer).
DEFAULT_SEEDS = {"leader-bounce-clean": 8, "leader-bounce-hard": 10, "rolling-restart": 10}
DEFAULT_SEED_COUNT = 14


@pytest.mark.parametrize("scenario", FAILOVER_SCENARIOS)
def test_failover_sweep(scenario: str, sim_seed_override: int | None, sim_seed_count: int | None) -> None:
    if sim_seed_override is not None:
        seeds = [sim_seed_override]
    else:
        seeds = list(range(sim_seed_count or DEFAULT_SEEDS.get(scenario, DEFAULT_SEED_COUNT)))
    started, cpu_started = time.perf_counter(), time.process_time()
    failures, virtual_ms, acked, lost = [], 0, 0, 0
    for seed in seeds:
        run = run_scenario(scenario, seed)
        virtual_ms += run.cluster.scheduler.elapsed_ms() if run.cluster else 0
        acked += run.report.acked
        lost += run.report.as_dict().get("failover", {}).get("lost", 0)
        if not run.ok:
            failures.append(
                f"{run.describe_failure()}\n"
                f"  or:     .venv/bin/python -m pytest tests/sim/test_sim_failover.py -k '{scenario}' --sim-seed {seed}\n"
                f"  steps: {run.report.as_dict().get('failover', {}).get('steps')}"
            )
    wall_s, cpu_s = time.perf_counter() - started, time.process_time() - cpu_started
    print(f"{scenario}: {len(seeds)} seeds, {acked} acknowledged, {lost} lost, {virtual_ms / 1000:.0f} s virtual "
          f"in {wall_s:.1f} s wall / {cpu_s:.1f} s CPU ({virtual_ms / 1000 / max(cpu_s, 1e-9):.0f}x CPU)")
    assert not failures, "\n".join(failures)


# -- the catalog is well-formed data --------------------------------------------------------------
def test_every_catalog_scenario_parses_with_known_actions_and_checks() -> None:
    names = [entry["name"] for entry in CATALOG]
    assert len(names) == len(set(names)) >= 12
    for entry in CATALOG:
        scenario = FailoverScenario.from_dict(entry)
        assert scenario.doc and scenario.steps
        stack = list(scenario.steps)
        while stack:
            step = stack.pop()
            assert step.action in ACTIONS
            stack.extend(step.block)
        for check in scenario.expect.checks:
            assert check.partition(":")[0] in CHECKS, check


def test_steps_parse_from_text_and_blocks_and_draw_from_the_seed() -> None:
    import random

    step = Step.parse("bounce leader mode=clean|hard down=0..1000  # a comment")
    assert (step.action, step.args, step.options) == ("bounce", ["leader"], {"mode": "clean|hard", "down": "0..1000"})
    block = Step.parse({"repeat": 5, "steps": ["wait 10", "kill leader as=victim"]})
    assert block.action == "repeat" and [s.action for s in block.block] == ["wait", "kill"]
    rng = random.Random(1)
    assert all(0 <= int(draw("0..1000", rng)) <= 1000 for _ in range(50))
    assert {draw("a|b", rng) for _ in range(50)} == {"a", "b"}
    assert draw("leader", rng) == "leader"
    with pytest.raises(ValueError, match="unknown step action"):
        Step.parse("explode leader")


# -- what the scenarios show, beyond "no anomaly" ------------------------------------------------
def test_acks1_loss_is_counted_exactly_from_the_truncation_log() -> None:
    run = run_scenario("acks1-loss", 3)
    assert run.ok, run.describe_failure()
    facts = run.report.as_dict()["failover"]
    # Every lost acknowledged record is one the ex-leader's LogTruncated ranges removed, and back.
    assert facts["lost"] == facts["truncated_acknowledged"] > 0
    assert facts["records_truncated"] >= facts["lost"]
    assert facts["anomalies"]["lost-write"] <= facts["lost"]


def test_a_zombie_leader_is_fenced_truncates_its_tail_and_nothing_it_wrote_alone_is_served() -> None:
    run = run_scenario("leader-pause", 2)
    assert run.ok, run.describe_failure()
    facts = run.report.as_dict()["failover"]
    assert facts["records_truncated_on_zombie"] >= facts["sent_by_tail"] > 0
    history = run.report.failover.history
    tail = {s.value for s in history.sends if s.process == "tail"}
    assert tail and not tail & history.read_values()


def test_a_bounded_burst_goes_on_after_its_bound_and_an_unbounded_one_waits() -> None:
    # The leader is cut from everyone, so no burst can settle: ``within`` goes on after exactly
    # its bound (the records stay in flight), a plain burst fails its step at its timeout.
    def scenario(burst: str) -> Any:
        return failover_scenario({
            "name": "bounded-burst", "doc": "", "topic": {"partitions": "1"},
            "producers": [{"name": "writer", "acks": "all"}, {"name": "tail", "acks": 1, "start": False, "partition": 0}],
            "steps": ["await isr-full", "isolate leader as=old", burst, "note after", "heal",
                      "await leader timeout=10000"],
            "expect": {"checks": []},
        })

    run = run_scenario(scenario("burst tail 3 within=300"), 5)
    steps = [(entry.now_ms, entry.get("step")) for entry in run.cluster.trace.named("StepRan", "scenario")]
    started = next(t for t, text in steps if text == "burst tail 3")
    assert (started + 300, "burst tail still in flight after 300 ms; going on") in steps
    assert (started + 300, "note after") in steps
    failed = run_scenario(scenario("burst tail 3 timeout=400"), 5)
    assert "timed out after 400 ms waiting for the burst of tail to settle" in str(failed.error)


def test_two_down_fails_with_not_enough_replicas_and_acknowledges_nothing_until_one_returns() -> None:
    run = run_scenario("two-down", 1)
    assert run.ok, run.describe_failure()
    facts = run.report.as_dict()["failover"]
    assert facts["failed_NOT_ENOUGH_REPLICAS"] > 0 and facts["acknowledged_in_one-back"] > 0


def test_a_rolling_restart_fails_no_produce_and_every_controlled_shutdown_completes() -> None:
    run = run_scenario("rolling-restart", 2)
    assert run.ok, run.describe_failure()
    facts = run.report.as_dict()["failover"]
    assert facts["failed_in_clean"] == 0 and facts["sends_in_clean"] > 20
    assert facts["controlled_shutdowns"] == 3 and facts["controlled_shutdown_max_ms"] <= 1_000


def test_power_loss_of_every_broker_loses_only_without_per_batch_flush() -> None:
    # A loss needs the power cut to land before a flush of the tail that was acknowledged: a
    # few seeds (which ones moves with anything that changes the traffic), so 8 of them.
    lost = {}
    for scenario in ("power-loss-all-batch", "power-loss-all-none"):
        total = 0
        for seed in range(8):
            run = run_scenario(scenario, seed)
            assert run.ok, run.describe_failure()
            total += run.report.as_dict()["failover"]["lost"]
        lost[scenario] = total
    assert lost["power-loss-all-batch"] == 0 and lost["power-loss-all-none"] > 0, lost


# -- a seed reproduces everything -------------------------------------------------------------------
def test_a_failover_seed_gives_the_same_trace_and_history_bytes_and_another_seed_others() -> None:
    first, second = run_scenario("leader-pause", 4), run_scenario("leader-pause", 4)
    assert first.ok and second.ok
    assert first.cluster.trace.serialize() == second.cluster.trace.serialize()
    history = history_bytes(first.report.failover.history)
    assert history == history_bytes(second.report.failover.history) and history.count(b"\n") > 50
    other = run_scenario("leader-pause", 5)
    assert other.cluster.trace.serialize() != first.cluster.trace.serialize()
    assert history_bytes(other.report.failover.history) != history


def test_failover_traces_and_histories_are_identical_across_processes(tmp_path: Path) -> None:
    outputs = []
    for hash_seed in ("1", "2"):
        trace, history = tmp_path / f"trace-{hash_seed}.jsonl", tmp_path / f"history-{hash_seed}.jsonl"
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        subprocess.run(
            [sys.executable, "-m", "lab.sim", "--scenario", "leader-kill", "--seed", "7",
             "--trace", str(trace), "--history", str(history)],
            cwd=ROOT, env=env, check=True, capture_output=True, timeout=120,
        )
        outputs.append((trace.read_bytes(), history.read_bytes()))
    assert outputs[0] == outputs[1] and len(outputs[0][1]) > 1_000


def test_a_failing_failover_seed_prints_its_replay_command(capsys: pytest.CaptureFixture[str]) -> None:
    from lab.sim.__main__ import main

    assert main(["--scenario", "leader-kill", "--seed", "3", "--brokers", "1"]) == 1  # RF 3 on one broker
    err = capsys.readouterr().err
    assert "replay: .venv/bin/python -m lab.sim --scenario leader-kill --seed 3 --brokers 1\n" in err
