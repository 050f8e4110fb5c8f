"""The history ``meta`` of a catalog scenario run, as a real experiment writes it.

A run folder's report (``lab.experiment.report``: checker, verdict against the promise, failover
timeline, plots, report.html) is derived from ``history.jsonl`` alone; its meta line says what
ran: scenario, seed, cluster, topic, workload (acks, idempotence, in-flight: what
``report.promise_of`` turns back into the scenario's own ``Promise``), the steps taken. The
catalog judges a run with its own checks (``lab.sim.verdict``); ``expect`` only names them, and
``brokerlab sim run`` puts the catalog's judgement in the report's "expected" section.

Everything here is a function of the seed (no wall time), so the history stays byte-identical.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from brokerlab.ids import broker_id_of

from .catalog import CATALOG
from .failover import FailoverScenario
from .workload import SimHistory


def catalog_scenario(name: str) -> FailoverScenario | None:
    entry = next((entry for entry in CATALOG if entry["name"] == name), None)
    return FailoverScenario.from_dict(entry) if entry is not None else None


def catalog_meta(run: Any, run_id: str) -> dict[str, Any] | None:
    """The meta of ``run`` (a ``lab.sim.scenarios.Run`` of a catalog scenario), or None for a
    run without a failover history (produce-and-check, or one that failed before its start)."""
    scenario = catalog_scenario(run.scenario)
    failover = run.report.failover
    if scenario is None or failover is None:
        return None
    history: SimHistory = failover.history
    facts = failover.facts()
    promise = scenario.promise()
    partitions = failover.context.partitions
    drawn = {"log.flush.policy": facts.get("flush_policy")}
    config = {key: (drawn.get(key) or value) if "|" in str(value) else value
              for key, value in sorted(scenario.broker_config.items())}
    load_end_ms = max((send.invoked_ms for send in history.sends), default=0.0)
    tolerated = dict(scenario.expect.tolerate)
    notes = [f"judged by the simulator catalog's checks: {', '.join(scenario.expect.checks) or 'none'}"]
    notes += [f"tolerated {name}: {why}" for name, why in sorted(tolerated.items())]
    topic_configs = dict(scenario.topic.configs)
    topic_configs.setdefault("min.insync.replicas", str(promise.min_insync_replicas))
    return {
        "scenario": run.scenario, "description": scenario.doc, "target": "sim", "seed": run.seed,
        "duration_s": round(load_end_ms / 1000, 1), "run_id": run_id, "started_at": None,
        "cluster": {"brokers": run.brokers or scenario.brokers, "config": config,
                    "controller_config": dict(scenario.controller_config)},
        "topic": {"name": scenario.topic.name, "partitions": partitions,
                  "replication_factor": promise.replication_factor, "configs": topic_configs},
        "workload": {"producers": [asdict(spec) for spec in scenario.producers], "consumers": scenario.consumers,
                     "acks": promise.acks, "idempotence_effective": promise.idempotence,
                     "max_in_flight": promise.max_in_flight, "consumer_mode": "assign"},
        "faults": list(facts.get("steps", [])),
        "expect": {"verdict": "pass", "anomalies": {name: ">=0" for name in sorted(tolerated)},
                   "notes": "; ".join(notes)},
        "message_faults": run.faults,
        "network": asdict(run.cluster.network.config) if run.cluster is not None else None,
        "initial_leaders": initial_leaders(run.cluster.trace, scenario.topic.name) if run.cluster is not None else {},
        "load_end_ms": load_end_ms,
        "end_ms": history.now_ms(),
        "notes": notes,
        "trace_sha256": run.cluster.trace.digest() if run.cluster is not None else None,
    }


def initial_leaders(trace: Any, topic: str) -> dict[int, tuple[int, int]]:
    """partition -> (leader id, leader epoch) before the controller first moved its leadership
    (the failover timeline starts from it): the last broker to become its leader by then."""
    leaders: dict[int, tuple[int, int]] = {}
    moved: set[int] = set()
    for entry in trace.entries:
        if entry.get("topic") != topic:
            continue
        partition = entry.get("partition")
        if entry.name == "LeaderChanged" and entry.node == "controller":
            moved.add(partition)
        elif entry.name == "BecameLeader" and partition not in moved and entry.node.startswith("broker-"):
            leaders[partition] = (broker_id_of(entry.node), entry.get("leader_epoch"))
    return dict(sorted(leaders.items()))
