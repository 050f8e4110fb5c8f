"""The lab's experiment scenarios (lab/scenarios/*.toml) on the simulator: the same files the
real-process experiments run, judged by the experiments' own analysis (verdict against the
configuration's promise, expected anomaly counts, failover timeline).

By default the five issue 5 calls the main ones run, shortened (their fault times are mostly
percentages of the duration), for one seed; ``--sim-seeds K`` runs every scenario the simulator
can model for K seeds, ``--sim-seed N`` for that seed.
"""

from __future__ import annotations

import pytest

from lab.experiment.scenario import builtin_names, load
from lab.sim.experiments import ExperimentUnsupported, check_supported, run_experiment
from lab.sim.workload import history_bytes

DURATION_S = 5.0
MAIN = {"leader-kill", "leader-pause", "controller-kill", "two-down", "acks1-loss"}


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


def test_what_the_simulator_cannot_model_is_refused_by_name() -> None:
    assert {"leader-kill", "leader-pause", "controller-kill", "two-down", "acks1-loss"} <= set(SUPPORTED)
    for name in set(builtin_names()) - set(SUPPORTED):
        with pytest.raises(ExperimentUnsupported, match="not (simulated|modelled)"):
            run_experiment(name, 1)


@pytest.mark.parametrize("name", SUPPORTED)
def test_experiment_scenario_in_the_simulator(name: str, sim_seed_override: int | None,
                                              sim_seed_count: int | None) -> None:
    widened = sim_seed_override is not None or sim_seed_count is not None
    if name not in MAIN and not widened:
        pytest.skip("not one of the main scenarios: widen with --sim-seeds K (or BROKERLAB_SIM_SEEDS=K)")
    scenario = load(name).with_duration(DURATION_S)
    seeds = [sim_seed_override] if sim_seed_override is not None else list(range(sim_seed_count or 1))
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
