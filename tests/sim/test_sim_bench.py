"""``brokerlab sim bench``: the simulator's steady-state speed under load.

Times are this machine's, so nothing here asserts one; event counts are a property of the seed,
so the background chatter of an idle cluster (heartbeats, long-polls, ISR checks) has a pinned
budget: a new chatty timer shows up here before it shows up as a slower swarm.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from lab.processes import brokerlab_command
from lab.sim_bench import measure

# Measured: 276-287 events per simulated second at 1 record/s (3 brokers, 3 partitions, a
# consumer, the lab's failover timings); each record then costs about 6-7 more (produce,
# two follower fetches and the consumer's, each a request and an answer).
IDLE_EVENTS_PER_S_BUDGET = 320


def test_the_same_seed_costs_the_same_events_twice() -> None:
    first, second = measure(20, 2.0, seed=3), measure(20, 2.0, seed=3)
    assert first.events == second.events > 0
    assert first.simulated_s == second.simulated_s == pytest.approx(2.0, abs=0.05)
    assert first.cpu_s > 0 and first.times_real_time_cpu > 0


def test_an_idle_cluster_stays_within_its_event_budget_and_load_adds_events_per_record() -> None:
    idle, loaded = measure(1, 3.0, seed=1), measure(100, 3.0, seed=1)
    assert idle.events_per_s < IDLE_EVENTS_PER_S_BUDGET, idle.as_dict()
    per_record = (loaded.events_per_s - idle.events_per_s) / (100 - 1)
    # At least a produce, its answer and the followers' fetches; at most a few round trips more.
    assert 4 <= per_record <= 12, (idle.as_dict(), loaded.as_dict())


def test_the_cli_prints_one_json_line_per_measurement() -> None:
    done = subprocess.run([*brokerlab_command(), "sim", "bench", "--rates", "10,30", "--seconds", "1", "--json"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [line["rate_per_s"] for line in lines] == [10, 30]
    assert all(line["events"] > 0 and line["times_real_time_cpu"] > 0 for line in lines)


@pytest.mark.parametrize("argv", [["--rates", "0"], ["--rates", "1,x"], ["--seconds", "-1"]])
def test_bad_input_is_one_line_and_exit_2(argv: list[str]) -> None:
    done = subprocess.run([*brokerlab_command(), "sim", "bench", *argv], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
