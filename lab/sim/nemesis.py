"""The experiments' nemesis (lab/experiment/nemesis.py) on simulated nodes, at virtual times.

The same actions and targets as the real one, resolved when a fault strikes: brokers and the
controller are crashed (SIGKILL), stopped with the broker's real controlled shutdown (SIGTERM),
paused, cut off (``partition``) or slowed (``slow``: the network's slow links, per call and
both ways, as the FaultService's rules act), their clocks skewed and their disks damaged; the
``coordinator`` is the broker leading the group's ``__consumer_offsets`` partition; a
``consumer`` is a group member node, crashed (no commit, no LeaveGroup) or closed cleanly and
started again as a new consumer. Every fault and heal goes into the history with its time, under
the names the real nemesis uses.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from typing import Any

from brokerlab.ids import CONTROLLER_NODE, broker_node
from brokerlab.record_batch import BATCH_HEADER_BYTES, iter_headers
from lab.experiment.scenario import FaultSpec, ScenarioError, parse_seconds
from node.group.config import OFFSETS_TOPIC
from node.group.records import partition_for

from .scheduler import SimulationError
from .steps import StepContext
from .workload import SimHistory

READY_TIMEOUT_MS = 20_000


@dataclass
class _Active:
    spec: FaultSpec
    nodes: list[str]
    heal: Any = None  # () -> None
    healed: bool = False


class SimNemesis:
    """lab/experiment/nemesis.py's faults, on simulated nodes, at virtual times.

    ``members``: the group consumers, history name ("consumer-1") -> sim node; ``group``: their
    group id (for the ``coordinator`` target)."""

    def __init__(self, context: StepContext, history: SimHistory, rng: random.Random, notes: list[str],
                 members: dict[str, str] | None = None, group: str = "") -> None:
        self.context = context
        self.cluster = context.cluster
        self.history = history
        self.rng = rng
        self.notes = notes
        self.members = dict(members or {})
        self.group = group
        self.active: list[_Active] = []

    def run(self, faults: list[FaultSpec], started_ms: int, end_ms: int) -> None:
        """Strike and heal at their times (in order; a late one runs as soon as it can)."""
        agenda: list[tuple[int, int, str, Any]] = []
        for index, spec in enumerate(faults):
            agenda.append((started_ms + round(spec.at_s * 1000), index, "strike", spec))
        agenda.sort(key=lambda item: (item[0], item[1]))
        while agenda:
            due, index, what, item = agenda.pop(0)
            if due >= end_ms:
                break
            self.cluster.run_for(max(0, due - self.cluster.now_ms))
            if what == "strike":
                try:
                    fault = self.strike(item)
                except (SimulationError, ScenarioError) as exc:
                    self.notes.append(f"fault {item.describe()} at {item.at_s:g}s failed: {exc}")
                    self.history.record_event("fault", "fault-failed", None, action=item.action, error=str(exc))
                    continue
                if item.duration_s is not None and not fault.healed:
                    agenda.append((due + round(item.duration_s * 1000), index, "heal", fault))
                    agenda.sort(key=lambda entry: (entry[0], entry[1]))
            else:
                self.heal(item)
        self.cluster.run_for(max(0, end_ms - self.cluster.now_ms))

    # -- targets ------------------------------------------------------------------------------
    def resolve(self, spec: FaultSpec) -> list[str]:
        role, context = spec.target, self.context
        if role.startswith("broker-") or role == CONTROLLER_NODE:
            return [role]
        if role == "random-broker":
            return [self.rng.choice(context.brokers())]
        if role == "brokers":
            return context.brokers()
        if role in ("consumer", "consumers"):
            names = sorted(self.members)
            if not names:
                raise ScenarioError("the scenario has no group consumers to target")
            return names if role == "consumers" else [self.rng.choice(names)]
        if role == "coordinator":
            return [self.coordinator()]
        view = context.partition_view(spec.partition)
        if role == "leader":
            context.wait_until(lambda: context.live_leader(spec.partition) is not None, READY_TIMEOUT_MS,
                               f"a leader of partition {spec.partition}")
            return [context.live_leader(spec.partition)]
        others = [broker_node(r) for r in (view[1] if view else []) if view is None or r != view[0]]
        if role == "followers":
            return others
        if role == "follower" and others:
            return [self.rng.choice(others)]
        raise ScenarioError(f"cannot resolve fault target {role!r}")

    def coordinator(self) -> str:
        """The broker coordinating the group: the leader of its ``__consumer_offsets`` partition
        (what FindCoordinator answers), as the controller sees it."""
        controller = self.cluster.core(CONTROLLER_NODE)
        topic = controller.state.topic_by_name(OFFSETS_TOPIC) if controller is not None else None
        if topic is None or not topic.partitions:
            raise ScenarioError(f"no coordinator for group {self.group!r}: {OFFSETS_TOPIC} is not there")
        leader = topic.partitions[partition_for(self.group, len(topic.partitions))].leader_id
        if leader < 0:
            raise ScenarioError(f"no coordinator for group {self.group!r}: its {OFFSETS_TOPIC} partition has no leader")
        return broker_node(leader)

    # -- strike and heal ----------------------------------------------------------------------
    def strike(self, spec: FaultSpec) -> _Active:
        fault = _Active(spec, self.resolve(spec))
        getattr(self, "_" + spec.action.replace("-", "_"))(fault)
        self.active.append(fault)
        return fault

    def heal(self, fault: _Active) -> None:
        if not fault.healed:
            fault.healed = True
            if fault.heal is not None:
                fault.heal()

    def heal_all(self) -> None:
        for fault in reversed(self.active):
            self.heal(fault)
        processes = {node: process for process, node in self.members.items()}
        for name, node in sorted(self.cluster.nodes.items()):  # nothing left down or stopped
            if node.alive and node.paused:
                self.cluster.resume(name)
                self._record("heal", "resume", name, role="cleanup")
            elif not node.alive:
                self._start(processes.get(name, name), role="cleanup")

    def _record(self, kind: str, name: str, node: str | None, **fields: Any) -> None:
        self.history.record_event(kind, name, node, **fields)

    def _stop(self, fault: _Active, signal: str, nodes: list[str] | None = None, lose_unflushed: bool = False) -> None:
        for node in nodes or fault.nodes:
            self._record("fault", fault.spec.action, node, role=fault.spec.target, partition=fault.spec.partition,
                         signal=f"SIG{signal}")
            sim_node = self.members.get(node, node)  # a consumer's process is a sim node of its own
            if signal == "TERM":
                self.cluster.stop(sim_node)  # a consumer's clean close: commit, revoke, LeaveGroup
            else:
                self.cluster.crash(sim_node, lose_unflushed=lose_unflushed)
        fault.heal = lambda: self._restart(fault)

    def _restart(self, fault: _Active, nodes: list[str] | None = None) -> None:
        for node in nodes or fault.nodes:
            self._start(node, role=fault.spec.target)

    def _start(self, node: str, role: str) -> None:
        sim_node = self.members.get(node, node)
        if self.cluster.nodes[sim_node].alive:
            return
        self._record("heal", "restart", node, role=role)
        self.cluster.start(sim_node)
        if node.startswith("broker-"):  # the real target waits for the node's health check
            core = lambda: self.cluster.core(node)  # noqa: E731
            self.cluster.run_until(lambda: core() is not None and core().is_ready, READY_TIMEOUT_MS)

    def _terminate(self, fault: _Active) -> None:
        self._stop(fault, "TERM")

    def _kill(self, fault: _Active) -> None:
        self._stop(fault, "KILL")

    def _bounce(self, fault: _Active) -> None:
        args = fault.spec.args
        count = int(args.get("count", 5))
        signal = str(args.get("signal", "KILL")).upper().removeprefix("SIG")
        interval_ms = round(float(_seconds(args.get("interval", "1s"))) * 1000)
        for round_number in range(count):
            one = _Active(fault.spec, fault.nodes if round_number == 0 else self.resolve(fault.spec))
            self._stop(one, signal)
            self._restart(one)
            if round_number + 1 < count:
                self.cluster.run_for(interval_ms)
        fault.healed = True

    def _rolling_restart(self, fault: _Active) -> None:
        settle_ms = round(float(_seconds(fault.spec.args.get("settle", "30s"))) * 1000)
        signal = str(fault.spec.args.get("signal", "TERM")).upper().removeprefix("SIG")
        for node in fault.nodes:
            one = _Active(fault.spec, [node])
            self._stop(one, signal)
            self._restart(one)
            if node not in self.members:  # consumers go one after the other without a wait
                self.cluster.run_until(self.context.isr_full, settle_ms)
        fault.healed = True

    def _pause(self, fault: _Active) -> None:
        for node in fault.nodes:
            self._record("fault", "pause", node, role=fault.spec.target, partition=fault.spec.partition,
                         signal="SIGSTOP")
            self.cluster.pause(node)

        def resume() -> None:
            for node in fault.nodes:
                if self.cluster.nodes[node].paused:
                    self.cluster.resume(node)
                self._record("heal", "resume", node, role=fault.spec.target, signal="SIGCONT")

        fault.heal = resume

    def _peers(self, fault: _Active, node: str) -> list[str]:
        peers = fault.spec.args.get("peers", ["nodes"])
        out: list[str] = []
        for peer in [peers] if isinstance(peers, str) else peers:
            if peer == "nodes":  # the cluster's nodes: the controller and the brokers
                out += [n for n in [CONTROLLER_NODE, *self.context.brokers()] if n != node]
            elif peer in ("*", "all"):
                out += [n for n in sorted(self.cluster.network.endpoints) if n != node]
            else:
                out.append(str(peer))
        return out

    def _partition(self, fault: _Active) -> None:
        network = self.cluster.network
        cuts = [(node, peer) for node in fault.nodes for peer in self._peers(fault, node)]
        for node in fault.nodes:
            peers = [peer for n, peer in cuts if n == node]
            self._record("fault", "partition", node, role=fault.spec.target, peers=peers, rule="drop all")
        for node, peer in cuts:
            network.cut(node, peer)
        self._heal_links_with(fault, cuts, network.uncut)

    def _slow(self, fault: _Active) -> None:
        """The FaultService's slow rule on each node towards each peer: every call between them,
        either way, waits ``delay`` (+ up to ``jitter``) or is lost with chance ``loss``."""
        args = fault.spec.args
        delay_ms = round(_seconds(args.get("delay", "200ms")) * 1000)
        jitter_ms = round(_seconds(args.get("jitter", "0ms")) * 1000)
        loss = float(args.get("loss", 0.0))
        network = self.cluster.network
        links = []
        for node in fault.nodes:
            peers = self._peers(fault, node)
            links += [link for peer in peers for link in ((node, peer), (peer, node))]
            self._record("fault", "slow", node, role=fault.spec.target, partition=fault.spec.partition, peers=peers,
                         rule=f"delay {delay_ms}+{jitter_ms} ms, loss {loss:g}")
        for src, dst in links:
            network.slow_link(src, dst, delay_ms, jitter_ms, loss)
        self._heal_links_with(fault, links, network.clear_slow_link)

    def _heal_links_with(self, fault: _Active, links: list[tuple[str, str]], undo) -> None:
        """The heal undoes every link rule, then records one heal per node (the FaultService's clear)."""

        def heal() -> None:
            for src, dst in links:
                undo(src, dst)
            for node in fault.nodes:
                self._record("heal", "clear-link-faults", node, role=fault.spec.target)

        fault.heal = heal

    def _clock_skew(self, fault: _Active) -> None:
        skew_ms = round(float(_seconds(fault.spec.args.get("skew", "30s"))) * 1000)
        for node in fault.nodes:
            self.cluster.skew_clock(node, skew_ms)
            self._record("fault", "clock-skew", node, role=fault.spec.target, skew_ms=skew_ms)

        def unskew() -> None:
            for node in fault.nodes:
                self.cluster.skew_clock(node, 0)
                self._record("heal", "clock-skew-cleared", node, role=fault.spec.target)

        fault.heal = unskew

    def _lose_unflushed(self, fault: _Active) -> None:
        self._disk_fault(fault)

    def _torn_tail(self, fault: _Active) -> None:
        self._disk_fault(fault)

    def _bit_flip(self, fault: _Active) -> None:
        self._disk_fault(fault)

    def _disk_fault(self, fault: _Active) -> None:
        """Kill -9, then the disk fault on the stopped broker's files (lab/experiment/diskfaults.py's
        rules; losing unflushed data is the in-memory disk's own power loss), restart at the heal."""
        if fault.spec.duration_s is None:
            fault.spec = replace(fault.spec, duration_s=1.0)
        action = fault.spec.action
        for node in fault.nodes:
            if node == CONTROLLER_NODE:
                raise ScenarioError("disk faults apply to brokers")
            self.cluster.crash(node, lose_unflushed=action == "lose-unflushed")
            done = [] if action == "lose-unflushed" else self._damage(node, fault)
            self._record("fault", action, node, role=fault.spec.target, signal="SIGKILL", disk=done)
        fault.heal = lambda: self._restart(fault)

    def _damage(self, node: str, fault: _Active) -> list[dict]:
        """torn-tail: the last segment loses the last ``bytes`` bytes (default half its last batch);
        bit-flip: one bit inverted in the last batch's records (past the header: the CRC breaks)."""
        disk = self.cluster.nodes[node].disk
        log_dir = self.cluster.nodes[node].config.log_dirs.strip("/")
        wanted = fault.spec.args.get("partitions")
        done = []
        for partition in range(self.context.partitions):
            if wanted is not None and partition not in wanted:
                continue
            directory = f"{log_dir}/{self.context.topic}-{partition}"
            segments = sorted(name for name in disk.listdir(directory) if name.endswith(".log"))
            batches = list(iter_headers(disk.read_file(f"{directory}/{segments[-1]}"))) if segments else []
            if not batches:
                continue
            path = f"{directory}/{segments[-1]}"
            data = disk.read_file(path)
            last = batches[-1][0]
            where = {"partition": f"{self.context.topic}-{partition}"}
            if fault.spec.action == "torn-tail":
                cut = fault.spec.args.get("bytes")
                cut = int(cut) if cut is not None else max(1, (len(data) - last) // 2)
                handle = disk.open(path)
                handle.truncate(max(0, len(data) - cut))
                handle.fsync()
                handle.close()
                done.append({**where, "cut_bytes": cut})
            else:
                at = min(len(data) - 1, last + BATCH_HEADER_BYTES + 1)
                disk.corrupt(path, at, bytes([data[at] ^ 0x01]))
                done.append({**where, "flipped_byte": at})
        return done


def _seconds(value: Any) -> float:
    return parse_seconds(value, "fault argument")
