"""Analysis and rendering of a run folder: ``history.jsonl`` in, ``results.json``, ``summary.txt``,
PNG plots and a self-contained ``report.html`` (plots inlined as data URIs, no network) out.

Everything is derived from ``history.jsonl`` alone (its meta line carries the scenario's settings),
so ``brokerlab experiment report runs/<id>`` re-renders any finished run.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

from lab.checker import MAX_EXAMPLES, Promise, check, judge
from lab.experiment import plots
from lab.experiment import timeline as timelines
from lab.experiment.scenario import Expectation
from lab.history import FAIL, OK, History

HISTORY = "history.jsonl"


def promise_of(meta: dict) -> Promise:
    workload, topic = meta["workload"], meta["topic"]
    cluster_config = meta.get("cluster", {}).get("config", {})
    unclean = str(topic.get("configs", {}).get("unclean.leader.election.enable",
                                               cluster_config.get("unclean.leader.election.enable", "false")))
    idempotence = workload.get("idempotence_effective", bool(workload.get("idempotence")))
    return Promise(acks=str(workload["acks"]), min_insync_replicas=int(topic.get("configs", {}).get(
        "min.insync.replicas", cluster_config.get("min.insync.replicas", 1))),
        replication_factor=int(topic["replication_factor"]), idempotence=bool(idempotence),
        unclean_leader_election=unclean.lower() == "true", max_in_flight=int(workload.get("max_in_flight", 5)))


def _latency(history: History) -> dict[str, float]:
    values = sorted(s.completed_ms - s.invoked_ms for s in history.sends if s.outcome == OK and s.completed_ms)
    if not values:
        return {}
    pick = lambda q: round(values[min(len(values) - 1, int(len(values) * q))], 1)  # noqa: E731
    return {"p50_ms": pick(0.5), "p99_ms": pick(0.99), "max_ms": round(values[-1], 1)}


def analyze(history: History) -> dict[str, Any]:
    meta = history.meta
    topic, partitions = meta["topic"]["name"], int(meta["topic"]["partitions"])
    result = check(history)
    promise = promise_of(meta)
    verdict = judge(result, promise)
    initial = {int(p): tuple(v) for p, v in meta.get("initial_leaders", {}).items()}
    load_end_ms = float(meta.get("load_end_ms", max((s.invoked_ms for s in history.sends), default=0.0)))
    rate = float(meta["workload"].get("rate", 100)) or 100
    gap_ms = max(500.0, 10_000.0 * partitions / rate)
    timeline = timelines.build(history, topic, partitions, initial, load_end_ms, gap_ms)
    expect = Expectation(**meta.get("expect", {}))
    counts = result.counts()
    problems = expect.check(verdict.ok, counts)
    acked = [s for s in history.sends if s.outcome == OK]
    final = {v for poll in history.polls if poll.process == timelines.READ_BACK for (_, _, _, v) in poll.records}
    missing = sum(1 for s in acked if s.value not in final) if any(
        p.process == timelines.READ_BACK for p in history.polls) else None
    return {
        "scenario": meta.get("scenario"), "description": meta.get("description", ""), "target": meta.get("target"),
        "seed": meta.get("seed"), "duration_s": meta.get("duration_s"), "run_id": meta.get("run_id"),
        "started_at": meta.get("started_at"), "wall_time_s": meta.get("wall_time_s"),
        "settings": {k: meta.get(k) for k in ("cluster", "topic", "workload", "faults")},
        "stats": {**result.stats, "throughput_acked_per_s": round(len(acked) / max(load_end_ms / 1000, 0.001), 1),
                  **_latency(history)},
        "anomalies": {name: {"count": len(cases), "examples": cases[:MAX_EXAMPLES]}
                      for name, cases in result.anomalies.items() if cases},
        "verdict": verdict.to_json(), "verdict_lines": verdict.lines(),
        "expected": {"verdict": expect.verdict, "anomalies": expect.anomalies, "notes": expect.notes,
                     "as_expected": not problems, "differences": problems},
        "lost": {"acknowledged_lost": result.count("lost-write"), "unseen": result.count("unseen"),
                 "acknowledged_missing_at_end": missing,
                 "records_truncated": timeline.records_truncated()},
        "timeline": timeline.to_json(),
        "notes": meta.get("notes", []),
    }, history, result, timeline


def render(run_dir: Path) -> dict[str, Any]:
    """(Re)compute results.json, summary.txt, plots and report.html of a run folder."""
    run_dir = Path(run_dir)
    history = History.load(run_dir / HISTORY)
    results, history, result, timeline = analyze(history)
    meta = history.meta
    pngs = plots.render_all(history, timeline, result, meta["topic"]["name"], int(meta["topic"]["partitions"]), run_dir)
    results["plots"] = [p.name for p in pngs]
    (run_dir / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    (run_dir / "summary.txt").write_text(summary_text(results) + "\n")
    (run_dir / "report.html").write_text(html_report(results, pngs))
    return results


# ---- text ------------------------------------------------------------------------------------------


def _ms(value: Any) -> str:
    return "-" if value is None else f"{value:,.0f} ms"


def summary_text(r: dict) -> str:
    s = r["stats"]
    lines = [f"experiment {r['scenario']} ({r['target']}, seed {r['seed']}, {r['duration_s']:g} s of load) run {r['run_id']}",
             f"  {r['description']}" if r["description"] else "",
             "",
             f"sends {s['sends']}: acknowledged {s['acknowledged']}, failed {s['failed']}, unknown {s['indeterminate']}; "
             f"{s['throughput_acked_per_s']}/s acknowledged; latency p50 {s.get('p50_ms', '-')} ms, "
             f"p99 {s.get('p99_ms', '-')} ms, max {s.get('max_ms', '-')} ms",
             f"read: {s['values_read']} distinct values in {s['polls']} polls",
             "", *r["verdict_lines"], ""]
    exp = r["expected"]
    lines.append(f"expected: {exp['verdict']}" + (f" with {exp['anomalies']}" if exp["anomalies"] else "")
                 + (" -> AS EXPECTED" if exp["as_expected"] else f" -> NOT AS EXPECTED: {'; '.join(exp['differences'])}"))
    lost = r["lost"]
    if lost["acknowledged_lost"] or lost["records_truncated"] or lost.get("acknowledged_missing_at_end"):
        lines.append(f"lost: {lost['acknowledged_lost']} acknowledged records never read (lost-write); "
                     f"{lost.get('acknowledged_missing_at_end')} acknowledged records missing from the final "
                     f"read-back (read earlier and then rewritten count here: inconsistent-offsets); "
                     f"truncations removed {lost['records_truncated']} records in total")
    lines += ["", "anomalies:"]
    if not r["anomalies"]:
        lines.append("  none")
    for name, data in r["anomalies"].items():
        lines.append(f"  {name}: {data['count']}")
        for case in data["examples"][:5]:
            lines.append(f"    {json.dumps(case, default=str)}")
    t = r["timeline"]
    lines += ["", "failover timeline (ms after the fault):"]
    if not t["failovers"]:
        lines.append("  no leader was hit")
    for f in t["failovers"]:
        lines.append(f"  {f['fault']} {f['node']} @ {f['at_ms'] / 1000:.2f}s, partition {f['partition']}: "
                     f"fenced {_ms(f['fenced_after_ms'])}, new leader "
                     f"{'broker-' + str(f['new_leader']) if f['new_leader'] is not None else '-'} "
                     f"(epoch {f['new_epoch'] if f['new_epoch'] is not None else '-'}) {_ms(f['new_leader_after_ms'])}, "
                     f"first ack {_ms(f['first_ack_after_ms'])}, consumers resumed {_ms(f['consumers_resumed_after_ms'])}")
    lines.append("unavailability windows (no acknowledgement):")
    any_window = False
    for p, windows in t["unavailability"].items():
        for w in windows:
            any_window = True
            lines.append(f"  partition {p}: {w['start_ms'] / 1000:.2f}s - {w['end_ms'] / 1000:.2f}s ({w['ms']:,.0f} ms)")
    if not any_window:
        lines.append("  none")
    lines.append("faults and heals:")
    for f in t["faults"]:
        lines.append(f"  {f['at_ms'] / 1000:7.2f}s {f['kind']:5} {f['action']} {f['node']}"
                     + (f" {f.get('signal', '')}" if f.get("signal") else ""))
    if t["truncations"]:
        lines.append("truncations:")
        for tr in t["truncations"]:
            lines.append(f"  {tr['at_ms'] / 1000:7.2f}s {tr['node']} partition {tr['partition']} offsets {tr['offsets'] or '-'}: "
                         f"{tr['records_removed']} records ({tr['reason']})")
    if t["isr_changes"]:
        lines.append("ISR changes:")
        for c in t["isr_changes"]:
            lines.append(f"  {c['at_ms'] / 1000:7.2f}s partition {c['partition']} {c['change']} "
                         f"{c['previous_isr']} -> {c['isr']} ({c['reason']})")
    if t["rebalances"]:
        lines.append("rebalances:")
        for rb in t["rebalances"][:40]:
            lines.append(f"  {rb['at_ms'] / 1000:7.2f}s {rb['event']} {rb['node']} gen {rb['generation_id']} {rb['cause']}")
    for note in r.get("notes", []):
        lines.append(f"note: {note}")
    return "\n".join(line for line in lines if line is not None)


# ---- HTML ------------------------------------------------------------------------------------------

_STYLE = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}
h1{font-size:1.4em} h2{font-size:1.1em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.85em} td,th{border:1px solid #ddd;padding:3px 8px;text-align:left}
.pass{color:#2a7a2a;font-weight:bold} .fail{color:#b22;font-weight:bold} pre{background:#f6f6f6;padding:8px;
font-size:.8em;overflow-x:auto} img{max-width:100%;border:1px solid #eee}"""


def _table(rows: list[dict], columns: list[str]) -> str:
    if not rows:
        return "<p>none</p>"
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(row.get(c, '')))}</td>" for c in columns) + "</tr>"
                   for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def html_report(r: dict, pngs: list[Path]) -> str:
    ok = r["verdict"]["ok"]
    exp = r["expected"]
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>brokerlab {html.escape(str(r['scenario']))}"
             f"</title><style>{_STYLE}</style></head><body>",
             f"<h1>brokerlab experiment: {html.escape(str(r['scenario']))}</h1>",
             f"<p>{html.escape(r['description'])}</p>",
             f"<p>target {html.escape(str(r['target']))}, seed {r['seed']}, {r['duration_s']} s of load, run "
             f"{html.escape(str(r['run_id']))}</p>",
             f"<h2>Verdict</h2><p class='{'pass' if ok else 'fail'}'>{html.escape(r['verdict_lines'][0])}</p>",
             "<pre>" + html.escape("\n".join(r["verdict_lines"][1:])) + "</pre>",
             f"<p class='{'pass' if exp['as_expected'] else 'fail'}'>expected {html.escape(exp['verdict'])} "
             f"{html.escape(json.dumps(exp['anomalies']))}: "
             f"{'as expected' if exp['as_expected'] else 'NOT as expected: ' + html.escape('; '.join(exp['differences']))}"
             "</p>",
             "<h2>Anomalies</h2>",
             _table([{"anomaly": n, "count": d["count"], "first examples": json.dumps(d["examples"][:3], default=str)}
                     for n, d in r["anomalies"].items()], ["anomaly", "count", "first examples"]),
             "<h2>Numbers</h2>", _table([r["stats"]], list(r["stats"])),
             "<h2>Plots</h2>"]
    for png in pngs:
        data = base64.b64encode(png.read_bytes()).decode("ascii")
        parts.append(f"<p><img alt='{png.stem}' src='data:image/png;base64,{data}'></p>")
    t = r["timeline"]
    parts += ["<h2>Failover timeline (ms after the fault)</h2>",
              _table(t["failovers"], ["fault", "node", "partition", "at_ms", "fenced_after_ms", "new_leader", "new_epoch",
                                      "new_leader_after_ms", "first_ack_after_ms", "consumers_resumed_after_ms"]),
              "<h2>Unavailability windows</h2>",
              _table([{"partition": p, **w} for p, ws in t["unavailability"].items() for w in ws],
                     ["partition", "start_ms", "end_ms", "ms"]),
              "<h2>Faults and heals</h2>", _table(t["faults"], ["at_ms", "kind", "action", "node", "role", "signal",
                                                                  "peers", "rule", "skew_ms", "disk"]),
              "<h2>Truncations</h2>", _table(t["truncations"], ["at_ms", "node", "partition", "offsets",
                                                                "records_removed", "reason"]),
              "<h2>ISR changes</h2>", _table(t["isr_changes"], ["at_ms", "partition", "change", "previous_isr", "isr",
                                                                "reason"]),
              "<h2>Rebalances</h2>", _table(t["rebalances"], ["at_ms", "event", "node", "generation_id", "cause"]),
              "<h2>Settings</h2><pre>" + html.escape(json.dumps(r["settings"], indent=2, default=str)) + "</pre>",
              "<h2>Summary</h2><pre>" + html.escape(summary_text(r)) + "</pre>",
              "</body></html>"]
    return "\n".join(parts)


__all__ = ["analyze", "render", "summary_text", "html_report", "promise_of", "FAIL"]
