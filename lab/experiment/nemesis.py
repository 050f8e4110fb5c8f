"""The nemesis: faults aimed at roles resolved when they strike, each recorded with its heal.

Targets (``target`` in a scenario's ``[[faults]]``), resolved at the moment the fault starts:

    leader        the leader of ``partition`` of the experiment topic
    follower      one replica of ``partition`` that is not its leader (seeded choice)
    followers     every replica of ``partition`` that is not its leader
    controller    the controller
    coordinator   the broker coordinating the workload's consumer group
    random-broker a broker drawn from the run's seed
    brokers       every broker (rolling-restart)
    broker-N      that broker
    consumer      one consumer of the workload (seeded); consumers: all of them

Actions (``action``) and their arguments:

    terminate       SIGTERM (controlled shutdown); healed by a restart
    kill            SIGKILL; healed by a restart
    bounce          count=5, signal="KILL"|"TERM", interval="1s": stop and restart, again and again
                    (the role is resolved again every round, so a leader bounce follows the leader)
    pause           SIGSTOP (docker pause); healed by SIGCONT; past broker.session.timeout.ms it is fenced
    partition       peers=["nodes"] (every other node; or "*" for clients too, or names): FaultService
                    drops every call to and from them, both ways; healed by clearing the rules
    slow            delay="200ms", jitter="0ms", loss=0.0, peers=["nodes"]: FaultService link rules
    clock-skew      skew="30s" (may be negative): the node's core clock jumps; healed back to 0
    torn-tail       kill -9, cut the tail of the active segment of each partition (lab.experiment.diskfaults)
    bit-flip        kill -9, flip a bit in the last batch of each partition
    lose-unflushed  kill -9, cut each partition back to its recovery point (what was fsynced)
    rolling-restart target brokers: SIGTERM and restart each broker in turn, waiting for the ISR in
                    between; target consumers: restart each consumer in turn (static members keep
                    their group.instance.id)

Disk faults restart the node after ``duration`` (default 1 s). A fault without ``duration`` stays
until the end of the run's load, and is healed before the final read-back.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from brokerlab.errors import ErrorCode, KafkaError
from brokerlab.faults import ANY_PEER, LinkFault
from lab.experiment import diskfaults
from lab.experiment.scenario import FaultSpec, ScenarioError, parse_seconds

CONTROLLER = "controller"
DISK_FAULTS = {"torn-tail", "bit-flip", "lose-unflushed"}
ACTIONS = {"terminate", "kill", "bounce", "pause", "partition", "slow", "clock-skew", "rolling-restart",
           *DISK_FAULTS}
BROKER_ROLES = {"leader", "follower", "followers", "controller", "coordinator", "random-broker", "brokers"}


@dataclass
class ActiveFault:
    spec: FaultSpec
    nodes: list[str]
    heal: Callable[[], Awaitable[None]] | None = None
    healed: bool = False
    info: dict[str, Any] = field(default_factory=dict)


class Nemesis:
    def __init__(self, target, view, faults_client, history, workload, topic: str, seed: int,
                 note: Callable[[str], None] = lambda text: None) -> None:
        self.target = target
        self.view = view  # lab.experiment.clusterview.ClusterView
        self.faults = faults_client  # lab.rpc.faults.FaultClient
        self.history = history
        self.workload = workload
        self.topic = topic
        self.random = random.Random(seed)
        self.note = note  # what the progress line shows
        self.active: list[ActiveFault] = []
        self.paused: set[str] = set()

    # ---- targets ------------------------------------------------------------------------------

    async def resolve(self, spec: FaultSpec) -> list[str]:
        role = spec.target
        if role.startswith("broker-") or role == CONTROLLER:
            return [role]
        if role in ("consumer", "consumers"):
            names = self.workload.consumer_names()
            if not names:
                raise ScenarioError("the scenario has no consumers to target")
            return names if role == "consumers" else [self.random.choice(names)]
        if role == "random-broker":
            return [self.random.choice(self.target.broker_names())]
        if role == "brokers":
            return list(self.target.broker_names())
        if role == "coordinator":
            return [f"broker-{await self.view.coordinator(self.workload.spec.group)}"]
        state = await self.view.partition(spec.partition)
        if role == "leader":
            if state.leader < 0:
                raise KafkaError(ErrorCode.LEADER_NOT_AVAILABLE, f"{self.topic}-{spec.partition} has no leader")
            return [f"broker-{state.leader}"]
        others = [f"broker-{r}" for r in state.replicas if r != state.leader]
        if role == "followers":
            return others
        if role == "follower":
            return [self.random.choice(others)]
        raise ScenarioError(f"unknown fault target {role!r}")

    # ---- running a fault ------------------------------------------------------------------------

    async def strike(self, spec: FaultSpec) -> ActiveFault:
        nodes = await self.resolve(spec)
        fault = ActiveFault(spec, nodes)
        self.note(f"{spec.action} {','.join(nodes)}")
        handler = getattr(self, "_" + spec.action.replace("-", "_"))
        await handler(fault)
        self.active.append(fault)
        return fault

    async def heal(self, fault: ActiveFault) -> None:
        if fault.healed:
            return
        fault.healed = True
        if fault.heal is not None:
            self.note(f"heal {fault.spec.action} {','.join(fault.nodes)}")
            await fault.heal()

    async def heal_all(self) -> None:
        for fault in reversed(self.active):
            try:
                await self.heal(fault)
            except Exception as exc:  # keep healing the rest; the history says what failed
                self.history.record_event("heal", "heal-failed", ",".join(fault.nodes), error=str(exc))

    async def ensure_all_up(self) -> None:
        """After the heals: no node left paused or down (a fault cut short by the end of the load)."""
        for node in ["controller", *self.target.broker_names()]:
            if node in self.paused:
                await self._blocking(self.target.resume, node)
                self.paused.discard(node)
                self.history.record_event("heal", "resume", node, role="cleanup")
            if not await self._blocking(self.target.is_running, node):
                await self._blocking(self.target.start_node, node, True)
                self.history.record_event("heal", "restart", node, role="cleanup")
            self.view.unavailable.discard(node)

    def _record(self, kind: str, fault: ActiveFault, name: str | None = None, nodes: list[str] | None = None,
                **fields: Any) -> None:
        spec = fault.spec
        self.history.record_event(kind, name or spec.action, ",".join(nodes or fault.nodes), role=spec.target,
                                  partition=spec.partition, **fields)

    async def _blocking(self, function, *args) -> Any:
        return await asyncio.to_thread(function, *args)

    # ---- process faults ---------------------------------------------------------------------------

    def _is_consumer(self, node: str) -> bool:
        return node in self.workload.consumer_names()

    async def _stop(self, fault: ActiveFault, sig: str) -> None:
        for node in fault.nodes:
            self._record("fault", fault, nodes=[node], signal=f"SIG{sig}")
            if self._is_consumer(node):
                await self.workload.kill_consumer(node, clean=(sig == "TERM"))
            else:
                self.view.unavailable.add(node)
                await self._blocking(self.target.kill, node, sig)
        fault.heal = lambda: self._restart(fault)

    async def _restart(self, fault: ActiveFault, nodes: list[str] | None = None) -> None:
        for node in nodes or fault.nodes:
            self._record("heal", fault, "restart", nodes=[node])  # when issued (start-up takes a while)
            if self._is_consumer(node):
                await self.workload.start_consumer(node)
            else:
                await self._blocking(self.target.start_node, node, True)
                self.view.unavailable.discard(node)

    async def _terminate(self, fault: ActiveFault) -> None:
        await self._stop(fault, "TERM")

    async def _kill(self, fault: ActiveFault) -> None:
        await self._stop(fault, "KILL")

    async def _bounce(self, fault: ActiveFault) -> None:
        args = fault.spec.args
        count = int(args.get("count", 5))
        sig = str(args.get("signal", "KILL")).upper().removeprefix("SIG")
        interval = parse_seconds(args.get("interval", "1s"), "interval")
        for round_number in range(count):
            nodes = fault.nodes if round_number == 0 else await self.resolve(fault.spec)
            one = ActiveFault(fault.spec, nodes)
            await self._stop(one, sig)
            await self._restart(one)
            if round_number + 1 < count:
                await asyncio.sleep(interval)
        fault.healed = True

    async def _pause(self, fault: ActiveFault) -> None:
        for node in fault.nodes:
            self._record("fault", fault, nodes=[node], signal="SIGSTOP")
            self.view.unavailable.add(node)
            await self._blocking(self.target.pause, node)
            self.paused.add(node)

        async def resume() -> None:
            for node in fault.nodes:
                await self._blocking(self.target.resume, node)
                self.paused.discard(node)
                self.view.unavailable.discard(node)
                self._record("heal", fault, "resume", nodes=[node], signal="SIGCONT")

        fault.heal = resume

    async def _rolling_restart(self, fault: ActiveFault) -> None:
        wait_s = parse_seconds(fault.spec.args.get("settle", "30s"), "settle")
        for node in fault.nodes:
            one = ActiveFault(fault.spec, [node])
            await self._stop(one, str(fault.spec.args.get("signal", "TERM")).upper().removeprefix("SIG"))
            await self._restart(one)
            if not self._is_consumer(node):
                await self.view.wait_fully_replicated(wait_s)
        fault.healed = True

    # ---- link faults and clock skew (FaultService) ----------------------------------------------

    def _peers(self, fault: ActiveFault, node: str) -> list[str]:
        peers = fault.spec.args.get("peers", ["nodes"])
        out: list[str] = []
        for peer in [peers] if isinstance(peers, str) else peers:
            if peer == "nodes":
                out += [n for n in [CONTROLLER, *self.target.broker_names()] if n != node]
            elif peer in ("*", "all"):
                out.append(ANY_PEER)
            else:
                out.append(str(peer))
        return out

    async def _link_rules(self, fault: ActiveFault, make: Callable[[str], LinkFault], what: str) -> None:
        for node in fault.nodes:
            peers = self._peers(fault, node)
            await self.faults.set_link_faults(self.target.address(node), [make(peer) for peer in peers])
            self._record("fault", fault, nodes=[node], peers=peers, rule=what)

        async def clear() -> None:
            for node in fault.nodes:
                await self.faults.clear(self.target.address(node))
                self._record("heal", fault, "clear-link-faults", nodes=[node])

        fault.heal = clear

    async def _partition(self, fault: ActiveFault) -> None:
        await self._link_rules(fault, lambda peer: LinkFault(peer, drop_all=True), "drop all")

    async def _slow(self, fault: ActiveFault) -> None:
        args = fault.spec.args
        delay = int(parse_seconds(args.get("delay", "200ms"), "delay") * 1000)
        jitter = int(parse_seconds(args.get("jitter", "0ms"), "jitter") * 1000)
        loss = float(args.get("loss", 0.0))
        await self._link_rules(fault, lambda peer: LinkFault(peer, delay_ms=delay, jitter_ms=jitter,
                                                             drop_probability=loss),
                               f"delay {delay}+{jitter} ms, loss {loss:g}")

    async def _clock_skew(self, fault: ActiveFault) -> None:
        skew_ms = int(parse_seconds(fault.spec.args.get("skew", "30s"), "skew") * 1000)
        for node in fault.nodes:
            await self.faults.set_clock_skew(self.target.address(node), skew_ms)
            self._record("fault", fault, nodes=[node], skew_ms=skew_ms)

        async def unskew() -> None:
            for node in fault.nodes:
                await self.faults.set_clock_skew(self.target.address(node), 0)
                self._record("heal", fault, "clock-skew-cleared", nodes=[node])

        fault.heal = unskew

    # ---- disk faults ------------------------------------------------------------------------------

    async def _disk_fault(self, fault: ActiveFault) -> None:
        if not self.target.supports_disk_faults:
            raise ScenarioError(f"{fault.spec.action} needs --target local (the {self.target.name} target "
                                "keeps logs where the lab cannot edit them)")
        if fault.spec.duration_s is None:
            fault.spec.duration_s = 1.0
        for node in fault.nodes:
            if node == CONTROLLER:
                raise ScenarioError("disk faults apply to brokers")
            self.view.unavailable.add(node)
            await self._blocking(self.target.kill, node, "KILL")
            data_dir = self.target.data_dir(node)
            action = fault.spec.action
            partitions = fault.spec.args.get("partitions")
            if action == "torn-tail":
                cut = fault.spec.args.get("bytes")
                done = diskfaults.torn_tail(data_dir, self.topic, partitions, int(cut) if cut is not None else None)
            elif action == "bit-flip":
                done = diskfaults.bit_flip(data_dir, self.topic, partitions)
            else:
                done = diskfaults.lose_unflushed(data_dir, self.topic)
            fault.info[node] = done
            self._record("fault", fault, nodes=[node], signal="SIGKILL", disk=done)
        fault.heal = lambda: self._restart(fault)

    _torn_tail = _disk_fault
    _bit_flip = _disk_fault
    _lose_unflushed = _disk_fault
