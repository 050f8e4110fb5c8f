"""PNG plots of a run (matplotlib, Agg backend: no display needed).

- ``throughput.png``: acknowledged / failed / unknown sends per interval and the p50/p99 send
  latency, fault windows shaded;
- ``leaders.png``: which broker led each partition when, truncations and faults marked;
- ``acked_vs_read.png``: per partition, acknowledged vs read back vs lost/unseen.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from lab.checker import CheckResult  # noqa: E402
from lab.experiment.timeline import Timeline  # noqa: E402
from lab.history import FAIL, OK, History  # noqa: E402

COLORS = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860"]


def fault_windows(timeline: Timeline) -> list[tuple[float, float, str]]:
    """(start s, end s, label) of every fault, closed by the next heal of the same node."""
    out = []
    faults = timeline.faults
    for i, f in enumerate(faults):
        if f["kind"] != "fault":
            continue
        heal = next((h for h in faults[i + 1:] if h["kind"] == "heal" and h["node"] == f["node"]), None)
        end = heal["at_ms"] if heal is not None else timeline.end_ms
        out.append((f["at_ms"] / 1000, max(end, f["at_ms"] + 50) / 1000, f"{f['action']} {f['node']}"))
    return out


def _shade(ax, windows) -> None:
    for start, end, _ in windows:
        ax.axvspan(start, end, color="#c44e52", alpha=0.12, lw=0)


def throughput(history: History, timeline: Timeline, path: Path, bucket_s: float = 0.5) -> None:
    end_s = max(timeline.end_ms / 1000, 1.0)
    n = int(end_s / bucket_s) + 1
    counts = {OK: [0] * n, FAIL: [0] * n, "info": [0] * n}
    latencies: list[list[float]] = [[] for _ in range(n)]
    for send in history.sends:
        if send.completed_ms is None:
            continue
        b = min(n - 1, int(send.completed_ms / 1000 / bucket_s))
        counts[send.outcome if send.outcome in counts else "info"][b] += 1
        if send.outcome == OK:
            latencies[b].append(send.completed_ms - send.invoked_ms)
    xs = [i * bucket_s for i in range(n)]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 6), sharex=True)
    windows = fault_windows(timeline)
    top.plot(xs, [c / bucket_s for c in counts[OK]], color=COLORS[0], label="acknowledged/s")
    top.plot(xs, [c / bucket_s for c in counts[FAIL]], color=COLORS[3], label="failed/s")
    top.plot(xs, [c / bucket_s for c in counts["info"]], color=COLORS[1], label="unknown/s")
    top.set_ylabel("sends per second")
    top.legend(loc="upper right", fontsize=8)
    _shade(top, windows)
    for start, _, label in windows:
        top.annotate(label, (start, top.get_ylim()[1] * 0.95), fontsize=7, rotation=90, va="top", color="#c44e52")
    p50 = [_pct(v, 50) for v in latencies]
    p99 = [_pct(v, 99) for v in latencies]
    bottom.plot(xs, p50, color=COLORS[0], label="p50")
    bottom.plot(xs, p99, color=COLORS[3], label="p99")
    bottom.set_yscale("symlog", linthresh=10)
    bottom.set_ylabel("send latency (ms)")
    bottom.set_xlabel("seconds since the load started")
    bottom.legend(loc="upper right", fontsize=8)
    _shade(bottom, windows)
    fig.suptitle("throughput and latency (fault windows shaded)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q / 100))]


def leaders(timeline: Timeline, path: Path) -> None:
    partitions = sorted(timeline.leaders)
    fig, ax = plt.subplots(figsize=(10, 1.2 + 0.6 * len(partitions)))
    seen = {}
    for row, p in enumerate(partitions):
        for span in timeline.leaders[p]:
            color = "#bbbbbb" if span.leader < 0 else COLORS[span.leader % len(COLORS)]
            label = "no leader" if span.leader < 0 else f"broker-{span.leader}"
            bar = ax.barh(row, (span.end_ms - span.start_ms) / 1000, left=span.start_ms / 1000, color=color,
                          edgecolor="white", label=None if label in seen else label)
            seen[label] = bar
            if span.end_ms - span.start_ms > 600:
                ax.text(span.start_ms / 1000 + 0.05, row, f"e{span.epoch}", va="center", fontsize=7, color="white")
        for t in timeline.truncations:
            if t["partition"] == p and t["records_removed"]:
                ax.plot(t["at_ms"] / 1000, row + 0.35, marker="v", color="black")
                ax.annotate(f"-{t['records_removed']}", (t["at_ms"] / 1000, row + 0.42), fontsize=7)
    _shade(ax, fault_windows(timeline))
    ax.set_yticks(range(len(partitions)), [f"partition {p}" for p in partitions])
    ax.set_xlabel("seconds since the load started (▼ truncation: records removed)")
    ax.legend(loc="upper right", fontsize=7, ncol=4)
    ax.set_title("leader of each partition (epoch in the bar)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def acked_vs_read(history: History, result: CheckResult, topic: str, partitions: int, path: Path) -> None:
    read = history.read_values()
    rows = []
    for p in range(partitions):
        acked = [s for s in history.sends if s.topic == topic and s.partition == p and s.outcome == OK]
        rows.append((len(acked), sum(1 for s in acked if s.value in read),
                     sum(1 for c in result.anomalies.get("lost-write", []) if c["partition"] == p),
                     sum(1 for c in result.anomalies.get("unseen", []) if c["partition"] == p)))
    fig, ax = plt.subplots(figsize=(8, 3.5))
    width = 0.2
    xs = range(partitions)
    for i, (label, color) in enumerate([("acknowledged", COLORS[0]), ("acknowledged and read", COLORS[2]),
                                        ("lost-write", COLORS[3]), ("unseen", COLORS[1])]):
        values = [r[i] for r in rows]
        bars = ax.bar([x + (i - 1.5) * width for x in xs], values, width, label=label, color=color)
        ax.bar_label(bars, fontsize=7)
    ax.set_xticks(list(xs), [f"partition {p}" for p in xs])
    ax.set_ylabel("records")
    ax.legend(fontsize=8)
    ax.set_title("acknowledged vs read")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def render_all(history: History, timeline: Timeline, result: CheckResult, topic: str, partitions: int,
               out_dir: Path) -> list[Path]:
    paths = [out_dir / "throughput.png", out_dir / "leaders.png", out_dir / "acked_vs_read.png"]
    throughput(history, timeline, paths[0])
    leaders(timeline, paths[1])
    acked_vs_read(history, result, topic, partitions, paths[2])
    return paths
