"""The lab's consumer-group and slow-link experiments on the simulator, over seeds, in CI.

consumer-kill, coordinator-kill, rolling-restart-eager/-cooperative/-static (group members are
sim nodes running the real client GroupMembership and FetchCore against the real coordinators)
and follower-slow (the simulated network's slow links), each for ``SEEDS`` seeds by default
(``--sim-seeds K`` widens, ``--sim-seed N`` replays one), shortened to a few seconds of load
(fault times are percentages of it). Each run must end with the verdict its file expects, and
show that its fault did what the scenario says, not just that nothing went wrong: the killed
member is removed at the session timeout and its partitions handed over, members find the new
coordinator and read on, eager members give everything up at each step, cooperative ones keep
what does not move, static ones come back without a rebalance, the slow follower slows acks=all.
Throughout, no two members of one generation own the same partition, and the group owns every
partition exactly once at the end.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import replace
from typing import Callable

import pytest

from lab.experiment.scenario import load
from lab.history import History
from lab.sim.experiments import ExperimentUnsupported, SimExperiment, check_supported, run_experiment
from lab.sim.workload import history_bytes

SEEDS = 3
# Seconds of load: the kills last 5 s from 30 %, and the rejoin after them must fit in the run.
DURATION_S = {"consumer-kill": 10.0, "coordinator-kill": 10.0, "rolling-restart-eager": 6.0,
              "rolling-restart-cooperative": 6.0, "rolling-restart-static": 6.0, "follower-slow": 8.0}
GROUP_SCENARIOS = [name for name in DURATION_S if name != "follower-slow"]


# ---- reading a run's history --------------------------------------------------------------------

def _events(history: History, kind: str | None = None, name: str | None = None) -> list:
    return sorted((e for e in history.events if (kind is None or e.kind == kind) and (name is None or e.name == name)),
                  key=lambda e: (e.at_ms, e.index))


def _fault(run: SimExperiment) -> tuple:
    faults = _events(run.history, "fault")
    assert faults and all(f.name != "fault-failed" for f in faults), [(f.name, f.fields) for f in faults]
    return faults[0]


def ownership(history: History) -> tuple[dict[int, dict[str, set[int]]], dict[str, set[int]], list, list]:
    """Replays the members' PartitionsAssigned/Revoked/Lost (a stopped member owns nothing from its
    stop on: a crash gives nothing back, a clean close revokes first). Returns what each member
    owned right after each assignment, per generation; what each owns at the end; per assignment
    (time, member, generation, owned before it, added, protocol); per revocation while running
    (member, revoked, what it owned right after its next assignment)."""
    owned: dict[str, set[int]] = defaultdict(set)
    by_generation: dict[int, dict[str, set[int]]] = defaultdict(dict)
    assignments, revocations = [], []
    stopping: set[str] = set()
    waiting: dict[str, list] = defaultdict(list)  # revocations waiting for the member's next assignment
    for event in sorted(history.events, key=lambda e: e.index):
        parts = set(event.fields.get("partitions", []))
        member = event.node
        if event.kind == "fault" and event.fields.get("role", "").startswith("consumer"):
            stopping.add(member)
        elif event.kind == "heal" and member in stopping:
            stopping.discard(member)
            owned[member] = set()
            waiting.pop(member, None)
        elif event.name == "PartitionsAssigned":
            generation = event.fields["generation_id"]
            assignments.append((event.at_ms, member, generation, set(owned[member]), parts, event.fields["protocol"]))
            owned[member] |= parts
            by_generation[generation][member] = set(owned[member])
            revocations += [(member, revoked, set(owned[member])) for revoked in waiting.pop(member, [])]
        elif event.name in ("PartitionsRevoked", "PartitionsLost"):
            owned[member] -= parts
            if event.name == "PartitionsRevoked" and member not in stopping:
                waiting[member].append(parts)
    return by_generation, dict(owned), assignments, revocations


def group_problems(run: SimExperiment) -> list[str]:
    """No two members of one generation own a partition; every partition owned once at the end."""
    partitions = set(range(run.scenario.topic.partitions))
    by_generation, final, _, _ = ownership(run.history)
    problems = []
    for generation, members in sorted(by_generation.items()):
        seen: dict[int, str] = {}
        for member, parts in sorted(members.items()):
            for p in parts & set(seen):
                problems.append(f"generation {generation}: partition {p} owned by {seen[p]} and {member}")
            seen.update({p: member for p in parts})
    owners = sorted(p for parts in final.values() for p in parts)
    if owners != sorted(partitions):
        problems.append(f"at the end the members own {final}, not every partition once")
    return problems


# ---- what each scenario must show ----------------------------------------------------------------

def _consumer_kill(run: SimExperiment) -> list[str]:
    fault, history = _fault(run), run.history
    victim = fault.node
    restart = next(e for e in _events(history, "heal", "restart") if e.node == victim)
    removed = [e for e in _events(history, "cluster", "GroupMemberRemoved")
               if fault.at_ms < e.at_ms < restart.at_ms and "session-timeout" in e.fields.get("reason", "")]
    if not removed:
        return [f"{victim} was never removed at the session timeout"]
    if removed[0].at_ms - fault.at_ms < run.scenario.workload.session_timeout_ms - 600:  # a heartbeat interval or so
        return [f"{victim} removed {removed[0].at_ms - fault.at_ms:.0f} ms after its crash: before its session ended"]
    handed_over = [(member, parts) for at, member, _, _, parts, _ in ownership(history)[2]
                   if removed[0].at_ms <= at < restart.at_ms]
    survivors = {p for member, parts in handed_over if member != victim for p in parts}
    problems = [] if survivors == set(range(run.scenario.topic.partitions)) else [
        f"between the removal and the restart the others got {handed_over}, not every partition"]
    if not any(member == victim and at > restart.at_ms for at, member, *_ in ownership(history)[2]):
        problems.append(f"{victim} never rejoined after its restart")
    return problems


def _coordinator_kill(run: SimExperiment) -> list[str]:
    fault = _fault(run)
    victim = int(fault.node.removeprefix("broker-"))
    found = [e for e in run.cluster.trace.named("CoordinatorDiscovered")
             if e.node.startswith("client-consumer") and run.history.at(e.now_ms) > fault.at_ms]
    moved = {e.node for e in found if e.get("coordinator_id") != victim}
    problems = [] if len(moved) == run.scenario.workload.consumers else [
        f"only {sorted(moved)} found a coordinator other than the killed broker-{victim}"]
    read_after = {p for poll in run.history.polls if poll.process.startswith("consumer") and poll.at_ms > fault.at_ms
                  for _, p, _, _ in poll.records}
    if read_after != set(range(run.scenario.topic.partitions)):
        problems.append(f"after the kill the members read only partitions {sorted(read_after)}")
    return problems


def _left(run: SimExperiment) -> list:
    return [e for e in _events(run.history, "cluster", "GroupMemberRemoved") if "member-left" in e.fields.get("reason", "")]


def _rolling_restart(run: SimExperiment, protocol: str) -> list[str]:
    """Every closed member left the group (LeaveGroup: no wait for its session), and every
    assignment was made by ``protocol``. (Whether a member that stayed goes through a rebalance
    depends on how the restarts and the joins interleave: the next member's close does not wait
    for the previous one's join, as in the real nemesis.)"""
    _fault(run)
    problems = []
    if len(_left(run)) < run.scenario.workload.consumers:
        problems.append(f"not every closed member left the group: {len(_left(run))} LeaveGroup removals")
    protocols = {a[5] for a in ownership(run.history)[2]}
    if protocols != {protocol}:
        problems.append(f"assignments made by {protocols}, not {protocol}")
    return problems


def _rolling_restart_eager(run: SimExperiment) -> list[str]:
    """Eager: a member gives up everything before it joins, so it never owns anything when an
    assignment arrives."""
    kept = [a[:5] for a in ownership(run.history)[2] if a[3]]
    return _rolling_restart(run, "range") + ([f"eager members kept partitions across a rebalance: {kept}"]
                                             if kept else [])


def _rolling_restart_cooperative(run: SimExperiment) -> list[str]:
    """Cooperative: a running member only revokes partitions that move away from it."""
    taken_back = [(member, revoked & after) for member, revoked, after in ownership(run.history)[3] if revoked & after]
    return _rolling_restart(run, "cooperative-sticky") + (
        [f"cooperative members revoked partitions they kept: {taken_back}"] if taken_back else [])


def _rolling_restart_static(run: SimExperiment) -> list[str]:
    """Static members restarted within the session timeout take their place back: no rebalance
    from the first restart on (the group may have formed in more than one step before)."""
    history, fault = run.history, _fault(run)
    started = [e for e in _events(history, "cluster", "GroupRebalanceStarted") if e.at_ms >= fault.at_ms]
    replaced = _events(history, "cluster", "GroupStaticMemberReplaced")
    problems = [f"static members rebalanced: {[e.fields for e in started]}"] if started else []
    if len(replaced) != run.scenario.workload.consumers:
        problems.append(f"{len(replaced)} static members replaced, expected one per restart")
    return problems


def _follower_slow(run: SimExperiment) -> list[str]:
    fault = _fault(run)
    delay_ms = 150
    problems = [] if fault.name == "slow" and fault.node.startswith("broker-") else [f"unexpected fault {fault}"]
    stats = run.cluster.network.stats
    if stats.get("slowed", 0) < 100:
        problems.append(f"only {stats.get('slowed', 0)} calls were slowed")
    p99 = run.analysis["stats"].get("p99_ms", 0)
    if p99 < delay_ms:  # every acks=all produce waits for the slow follower while it is in the ISR
        problems.append(f"acks=all p99 latency {p99} ms did not rise past the {delay_ms} ms delay")
    return problems


CHECKS: dict[str, Callable[[SimExperiment], list[str]]] = {
    "consumer-kill": _consumer_kill, "coordinator-kill": _coordinator_kill,
    "rolling-restart-eager": _rolling_restart_eager, "rolling-restart-cooperative": _rolling_restart_cooperative,
    "rolling-restart-static": _rolling_restart_static, "follower-slow": _follower_slow,
}


@pytest.mark.parametrize("name", list(DURATION_S))
def test_scenario_runs_in_the_simulator_with_its_verdict(name: str, sim_seed_override: int | None,
                                                         sim_seed_count: int | None) -> None:
    check_supported(load(name))
    scenario = load(name).with_duration(DURATION_S[name])
    seeds = [sim_seed_override] if sim_seed_override is not None else list(range(sim_seed_count or SEEDS))
    failures = []
    started = time.process_time()
    for seed in seeds:
        run = run_experiment(scenario, seed)
        replay = f"\n  replay: {run.replay_command()}"
        if not run.as_expected:
            problem = run.error if run.error is not None else run.analysis["expected"]["differences"]
            failures.append(f"seed {seed}: {problem}{replay}")
            continue
        problems = run.notes + CHECKS[name](run) + (group_problems(run) if name in GROUP_SCENARIOS else [])
        if problems:
            failures.append(f"seed {seed}: " + "; ".join(problems) + replay)
    print(f"{name}: {len(seeds)} seeds, {time.process_time() - started:.1f} s of CPU")
    assert not failures, "\n".join(failures)


def test_a_group_experiment_seed_gives_the_same_history_bytes() -> None:
    scenario = load("consumer-kill").with_duration(6.0)
    first, second = run_experiment(scenario, 5), run_experiment(scenario, 5)
    assert first.as_expected and _events(first.history, "client", "PartitionsAssigned")
    assert history_bytes(first.history) == history_bytes(second.history)
    assert first.cluster.trace.digest() == second.cluster.trace.digest()


def test_what_is_still_not_modelled_is_refused_by_name() -> None:
    """Consumers reading by assignment are not fault targets in the simulator."""
    scenario = load("consumer-kill")
    assigned = replace(scenario, workload=replace(scenario.workload, consumer_mode="assign"))
    with pytest.raises(ExperimentUnsupported, match="not modelled"):
        check_supported(assigned)
