"""The seed swarm in CI: what ``brokerlab sim swarm --seeds 200`` runs (every catalog scenario,
each seed drawing its own fault schedule, timings and network knobs), over every core the machine
has. Any failing seed fails the test with the command that replays it. The test prints the wall
time and the simulated seconds per wall second (issue 5: a 200-seed sweep in under 3 minutes on
a 2-core CI machine); it asserts no time: a loaded machine must not turn it red.

``--sim-seeds K`` (or ``BROKERLAB_SIM_SEEDS``) runs K seeds instead, ``--sim-seed N`` one;
``BROKERLAB_SIM_JOBS`` sets the worker processes.
"""

from __future__ import annotations

import os
import time

import pytest

from lab.sim_runs import swarm, swarm_names

SWARM_SEEDS = 200


def _jobs() -> int:
    if os.environ.get("BROKERLAB_SIM_JOBS"):
        return max(1, int(os.environ["BROKERLAB_SIM_JOBS"]))
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_a_swarm_of_200_seeds_fails_on_no_seed(sim_seed_override: int | None, sim_seed_count: int | None) -> None:
    if sim_seed_override is not None:
        seeds = range(sim_seed_override, sim_seed_override + 1)
    else:
        seeds = range(sim_seed_count or SWARM_SEEDS)
    names, jobs = swarm_names("all"), _jobs()
    started = time.perf_counter()
    failures, virtual_ms, runs = [], 0, 0
    for run in swarm(names, seeds, jobs=jobs):
        runs += 1
        virtual_ms += run.virtual_ms
        if not run.as_expected:
            failures.append(f"{run.name} seed {run.seed}: {(run.problem or run.verdict).splitlines()[0][:300]}\n"
                            f"  replay: {run.replay_command()}")
    wall_s = time.perf_counter() - started
    print(f"swarm: {len(seeds)} seeds x {len(names)} scenarios = {runs} runs on {jobs} job(s), "
          f"{len(failures)} failed; wall time {wall_s:.1f} s, {virtual_ms / 1000:.0f} s simulated "
          f"({virtual_ms / 1000 / max(wall_s, 1e-9):.0f} simulated s per wall s)")
    assert runs == len(seeds) * len(names)
    assert not failures, f"{len(failures)} failing run(s):\n" + "\n".join(failures)


def test_a_failing_run_in_a_swarm_comes_back_with_its_replay_command() -> None:
    # A harness crash (here: no such scenario) is a failing seed too, in a worker process as well.
    for jobs in (1, 2):
        (run,) = list(swarm(["no-such-scenario"], range(7, 8), jobs=jobs))
        assert not run.as_expected and "KeyError" in run.problem
        assert run.replay_command() == "brokerlab sim run --scenario no-such-scenario --seed 7"
