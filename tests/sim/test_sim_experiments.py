"""The lab's experiment scenarios (lab/scenarios/*.toml) on the simulator: the same files the
real-process experiments run, judged by the experiments' own analysis (verdict against the
configuration's promise, expected anomaly counts, failover timeline).

Every scenario runs, shortened (their fault times are mostly percentages of the duration), for
``DEFAULT_SEEDS`` seeds (about 40 s for all of them); ``--sim-seeds K`` widens that to K seeds,
``--sim-seed N`` runs seed N only.
"""

from __future__ import annotations

import pytest

from lab.experiment.scenario import builtin_names, load
from lab.sim.experiments import ExperimentUnsupported, check_supported, run_experiment
from lab.sim.workload import history_bytes

DURATION_S = 5.0
DEFAULT_SEEDS = 3
MAIN = {"leader-kill", "leader-pause", "controller-kill", "two-down", "acks1-loss"}
# Run for as many seeds, with checks of what each fault must show, in test_sim_group_experiments.py.
CHECKED_ELSEWHERE = {"consumer-kill", "coordinator-kill", "rolling-restart-eager", "rolling-restart-cooperative",
                     "rolling-restart-static", "follower-slow"}


def _supported() -> list[str]:
    names = []
    for name in builtin_names():
        try:
            check_supported(load(name))
        except ExperimentUnsupported:
            continue
        names.append(name)
    return names


SUPPORTED = _supported()


def test_every_builtin_scenario_runs_in_the_simulator() -> None:
    assert MAIN <= set(SUPPORTED)
    assert set(SUPPORTED) == set(builtin_names()), set(builtin_names()) - set(SUPPORTED)


@pytest.mark.parametrize("name", SUPPORTED)
def test_experiment_scenario_in_the_simulator(name: str, sim_seed_override: int | None,
                                              sim_seed_count: int | None) -> None:
    if name in CHECKED_ELSEWHERE and sim_seed_override is None and sim_seed_count is None:
        pytest.skip("runs in test_sim_group_experiments.py; widen with --sim-seeds K to run it here too")
    scenario = load(name).with_duration(DURATION_S)
    seeds = [sim_seed_override] if sim_seed_override is not None else list(range(sim_seed_count or DEFAULT_SEEDS))
    failures = []
    for seed in seeds:
        run = run_experiment(scenario, seed)
        if not run.as_expected:
            problem = run.error if run.error is not None else run.analysis["expected"]["differences"]
            failures.append(f"seed {seed}: {problem}\n  replay: {run.replay_command()}")
            continue
        analysis = run.analysis
        assert analysis["target"] == "sim" and analysis["stats"]["acknowledged"] > 0
        print(f"{name} seed {seed}: {analysis['verdict_lines'][0]}; acknowledged "
              f"{analysis['stats']['acknowledged']}, lost {analysis['lost']['acknowledged_lost']}")
    assert not failures, "\n".join(failures)


def test_acks1_loss_counts_the_loss_and_its_timeline_shows_the_truncation() -> None:
    run = run_experiment(load("acks1-loss").with_duration(DURATION_S), 0)
    assert run.as_expected, run.analysis and run.analysis["expected"]
    lost = run.analysis["lost"]
    assert lost["acknowledged_lost"] > 0 and lost["records_truncated"] >= lost["acknowledged_lost"]
    failovers = run.analysis["timeline"]["failovers"]
    assert any(step["fault"] == "kill" and step.get("new_leader") is not None for step in failovers)


def test_an_experiment_seed_gives_the_same_history_bytes() -> None:
    scenario = load("leader-pause").with_duration(4.0)
    first, second = run_experiment(scenario, 9), run_experiment(scenario, 9)
    assert history_bytes(first.history) == history_bytes(second.history)
    assert first.cluster.trace.digest() == second.cluster.trace.digest()
