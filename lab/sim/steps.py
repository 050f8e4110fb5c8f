"""Scenario steps: a small language for faults, waits and conditions, run against a SimCluster.

A step is one line, ``<action> [<target>] [key=value ...]``, or a dict for the two block forms
(``{"repeat": 5, "steps": [...]}`` and ``{"for_each": "broker", "as": "b", "steps": [...]}``), so
a scenario is plain data that reads like a transcript and can live in a JSON file::

    wait 1000..3000                    # virtual ms; "a..b" is drawn from the seed
    kill leader as=victim              # SIGKILL (the page cache survives)
    await leader-moved-from victim timeout=10000
    start victim

Values: ``a..b`` is an integer drawn uniformly from the seed, ``x|y|z`` one of the choices.

Actions: ``wait MS``; ``kill T``, ``power-loss T`` (a crash that keeps only fsynced bytes),
``crash T power_loss=yes|no``,
``stop T`` (SIGTERM: a controlled shutdown, waited for), ``start T``, ``pause T`` (SIGSTOP),
``resume T``, ``bounce T mode=clean|hard down=MS`` (stop or kill, wait, start, await it back
in every ISR); ``isolate T`` (cut from every other node and client), ``cut T from=GROUP`` (cut
both ways between T and each node of GROUP), ``heal``; ``await CONDITION [NAME] [timeout=MS]``;
``burst PRODUCER COUNT [within=MS]`` (one batch of COUNT records from a producer, waited for; with
``within``, for at most MS, the rest staying in flight);
``window open|close NAME`` (marks a stretch of time for the checks); ``note TEXT``.

Targets, resolved when the step runs: ``leader`` (of the watched partition, waited for),
``follower`` (a live follower of it, seed-chosen), ``broker`` (a live broker, seed-chosen),
``controller``, ``all-brokers``, or a name bound earlier with ``as=NAME``. Groups for ``from=``:
``followers`` (the other replicas of the watched partition), ``servers`` (every broker and the
controller but T), ``everyone`` (servers and clients), ``all-brokers``.

Conditions: ``ready`` (every running broker registered, unfenced, caught up), ``leader`` (the
watched partition has a live leader), ``leader-moved-from NAME``, ``in-isr NAME``, ``fenced
NAME``, ``isr-full`` (every partition of the topic led, with every replica running and in the
ISR, and leaders' high watermark at their log end).
"""

from __future__ import annotations

import random
import shlex
from dataclasses import dataclass, field
from typing import Any, Callable

from brokerlab.ids import CONTROLLER_NODE, TopicPartition, broker_id_of, broker_node

from .cluster import SimCluster
from .cores import brokers_ready
from .scheduler import SimulationError

DEFAULT_AWAIT_MS = 20_000


class StepFailed(SimulationError):
    """A step could not run (no leader to target, a condition never held within its timeout)."""


def draw(value: str, rng: random.Random) -> str:
    """``a..b`` -> an int from the seed; ``x|y`` -> one of them; anything else as it is."""
    if "|" in value:
        return rng.choice(value.split("|"))
    low, sep, high = value.partition("..")
    if sep and low.lstrip("-").isdigit() and high.lstrip("-").isdigit():
        return str(rng.randint(int(low), int(high)))
    return value


@dataclass
class Step:
    action: str
    args: list[str] = field(default_factory=list)
    options: dict[str, str] = field(default_factory=dict)
    block: list["Step"] = field(default_factory=list)
    text: str = ""

    @classmethod
    def parse(cls, item: str | dict) -> "Step":
        if isinstance(item, dict):
            body = [cls.parse(s) for s in item.get("steps", [])]
            if "repeat" in item:
                return cls("repeat", [str(item["repeat"])], {}, body, f"repeat {item['repeat']}")
            if "for_each" in item:
                options = {"as": str(item.get("as", "it"))}
                if "order" in item:
                    options["order"] = str(item["order"])
                return cls("for-each", [str(item["for_each"])], options, body, f"for-each {item['for_each']}")
            raise ValueError(f"a block step needs 'repeat' or 'for_each': {item!r}")
        words = shlex.split(item, comments=True)
        if not words:
            raise ValueError("empty step")
        args = [w for w in words[1:] if "=" not in w]
        options = dict(w.split("=", 1) for w in words[1:] if "=" in w)
        step = cls(words[0], args, options, [], item)
        if step.action not in ACTIONS:
            raise ValueError(f"unknown step action {step.action!r} in {item!r}")
        return step


@dataclass
class StepContext:
    """What steps run against: the cluster, the watched topic, the workload, the bindings."""

    cluster: SimCluster
    rng: random.Random
    topic: str
    partitions: int
    producers: dict[str, Any]
    bindings: dict[str, str] = field(default_factory=dict)
    windows: dict[str, list[int]] = field(default_factory=dict)  # name -> [start_ms, end_ms]
    log: list[str] = field(default_factory=list)  # what ran, with resolved targets and draws

    @property
    def now_ms(self) -> int:
        return self.cluster.now_ms

    def record(self, text: str, **fields: Any) -> None:
        self.log.append(f"+{self.cluster.scheduler.elapsed_ms()}ms {text}")
        self.cluster.trace.record(self.now_ms, "scenario", "StepRan", {"step": text, **fields})

    # -- cluster views (god's eye: the scenario looks at real state) -----------------------
    def controller_partition(self, partition: int = 0) -> Any | None:
        core = self.cluster.core(CONTROLLER_NODE) if CONTROLLER_NODE in self.cluster.nodes else None
        if core is None:
            return None
        topic = core.state.topic_by_name(self.topic)
        return topic.partitions.get(partition) if topic is not None else None

    def partition_view(self, partition: int = 0) -> tuple[int, list[int], list[int]] | None:
        """(leader id, replicas, isr) from the controller, else from a running broker's image."""
        state = self.controller_partition(partition)
        if state is not None:
            return state.leader_id, list(state.replicas), list(state.isr)
        for name, node in sorted(self.cluster.nodes.items()):
            if name.startswith("broker-") and node.core is not None:
                topic = node.core.image.topic(self.topic)
                if topic is not None and partition in topic.partitions:
                    image = topic.partitions[partition]
                    return image.leader_id, list(image.replicas), list(image.isr)
        return None

    def alive(self, name: str) -> bool:
        node = self.cluster.nodes.get(name)
        return node is not None and node.alive

    def live_leader(self, partition: int = 0) -> str | None:
        view = self.partition_view(partition)
        if view is None or view[0] < 0:
            return None
        name = broker_node(view[0])
        node = self.cluster.nodes.get(name)
        return name if node is not None and node.alive and not node.paused else None

    def brokers(self) -> list[str]:
        return sorted((n for n in self.cluster.nodes if n.startswith("broker-")), key=broker_id_of)

    # -- targets ----------------------------------------------------------------------------
    def target(self, word: str) -> str:
        if word in self.bindings:
            return self.bindings[word]
        if word == "leader":
            self.wait_until(lambda: self.live_leader() is not None, DEFAULT_AWAIT_MS, "a live leader to target")
            return self.live_leader()
        if word == "follower":
            leader, replicas, _ = self.partition_view() or (-1, [], [])
            choices = [broker_node(b) for b in replicas if b != leader and self.alive(broker_node(b))]
            if not choices:
                raise StepFailed("no live follower to target")
            return self.rng.choice(sorted(choices))
        if word == "broker":
            choices = [b for b in self.brokers() if self.alive(b) and not self.cluster.nodes[b].paused]
            if not choices:
                raise StepFailed("no running broker to target")
            return self.rng.choice(choices)
        if word == CONTROLLER_NODE or word in self.cluster.nodes:
            return word
        raise StepFailed(f"unknown target {word!r}")

    def group(self, word: str, target: str) -> list[str]:
        if word == "followers":
            _, replicas, _ = self.partition_view() or (-1, [], [])
            return [broker_node(b) for b in replicas if broker_node(b) != target]
        if word == "servers":
            return [n for n in sorted(self.cluster.nodes) if n != target and not n.startswith("client-")]
        if word == "everyone":
            return [n for n in sorted(self.cluster.network.endpoints) if n != target]
        if word == "all-brokers":
            return [b for b in self.brokers() if b != target]
        return [self.target(w) for w in word.split(",")]

    # -- conditions -------------------------------------------------------------------------
    def condition(self, name: str, arg: str | None) -> Callable[[], bool]:
        if name == "ready":
            return lambda: brokers_ready(self.cluster)
        if name == "leader":
            return lambda: self.live_leader() is not None
        if name == "leader-moved-from":
            old = self.target(arg)
            return lambda: self.live_leader() not in (None, old)
        if name == "in-isr":
            broker_id = broker_id_of(self.target(arg))
            return lambda: all(broker_id in (self.partition_view(p) or (0, [], []))[2]
                               for p in range(self.partitions)
                               if broker_id in (self.partition_view(p) or (0, [], []))[1])
        if name == "fenced":
            broker_id = broker_id_of(self.target(arg))

            def fenced() -> bool:
                core = self.cluster.core(CONTROLLER_NODE)
                broker = core.state.brokers.get(broker_id) if core is not None else None
                return broker is not None and broker.fenced
            return fenced
        if name == "isr-full":
            return self.isr_full
        raise StepFailed(f"unknown condition {name!r}")

    def isr_full(self) -> bool:
        if not brokers_ready(self.cluster):
            return False
        for partition in range(self.partitions):
            view = self.partition_view(partition)
            if view is None or view[0] < 0 or sorted(view[1]) != sorted(view[2]):
                return False
            leader = self.cluster.nodes[broker_node(view[0])]
            if leader.core is None or leader.paused:
                return False
            log = leader.core.log_manager.get(TopicPartition(self.topic, partition))
            if log is None or log.high_watermark != log.log_end_offset:
                return False
            if any(not self.alive(broker_node(b)) for b in view[1]):
                return False
        return True

    def wait_until(self, predicate: Callable[[], bool], timeout_ms: int, what: str) -> None:
        if not self.cluster.run_until(predicate, timeout_ms):
            raise StepFailed(f"timed out after {timeout_ms} ms waiting for {what}")


# -- actions ----------------------------------------------------------------------------------
def run_steps(steps: list[Step], ctx: StepContext) -> None:
    for step in steps:
        run_step(step, ctx)


def run_step(step: Step, ctx: StepContext) -> None:
    ACTIONS[step.action](step, ctx)


def _opt(step: Step, ctx: StepContext, key: str, default: str) -> str:
    return draw(step.options.get(key, default), ctx.rng)


def _bind(step: Step, ctx: StepContext, name: str) -> None:
    if "as" in step.options:
        ctx.bindings[step.options["as"]] = name


def _wait(step: Step, ctx: StepContext) -> None:
    duration = int(draw(step.args[0], ctx.rng))
    ctx.record(f"wait {duration}")
    ctx.cluster.run_for(duration)


def _process(action: str) -> Callable[[Step, StepContext], None]:
    def run(step: Step, ctx: StepContext) -> None:
        word = step.args[0] if step.args else "broker"
        if word == "all-brokers":  # those it applies to: running ones, or stopped ones to start
            names = [b for b in ctx.brokers() if ctx.alive(b) != (action == "start")]
        else:
            names = [ctx.target(word)]
        for name in names:
            ctx.record(f"{action} {name}", target=name)
            if action == "kill":
                ctx.cluster.crash(name)
            elif action == "power-loss":
                ctx.cluster.crash(name, lose_unflushed=True)
            elif action == "stop":
                ctx.cluster.stop(name)
            elif action == "start":
                ctx.cluster.start(name)
            elif action == "pause":
                ctx.cluster.pause(name)
            elif action == "resume":
                ctx.cluster.resume(name)
        if len(names) == 1:
            _bind(step, ctx, names[0])

    return run


def _crash(step: Step, ctx: StepContext) -> None:
    name = ctx.target(step.args[0] if step.args else "broker")
    power_loss = _opt(step, ctx, "power_loss", "no") == "yes"
    ctx.record(f"crash {name} power_loss={'yes' if power_loss else 'no'}", target=name)
    ctx.cluster.crash(name, lose_unflushed=power_loss)
    _bind(step, ctx, name)


def _bounce(step: Step, ctx: StepContext) -> None:
    name = ctx.target(step.args[0] if step.args else "leader")
    mode = _opt(step, ctx, "mode", "clean")
    down = int(_opt(step, ctx, "down", "0"))
    ctx.record(f"bounce {name} mode={mode} down={down}", target=name)
    if mode == "clean":
        ctx.cluster.stop(name)
    else:
        ctx.cluster.crash(name, lose_unflushed=mode == "power-loss")
    ctx.cluster.run_for(down)
    ctx.cluster.start(name)
    timeout = int(_opt(step, ctx, "timeout", str(DEFAULT_AWAIT_MS)))
    ctx.wait_until(ctx.isr_full, timeout, f"{name} back in every ISR after its bounce")
    _bind(step, ctx, name)


def _isolate(step: Step, ctx: StepContext) -> None:
    name = ctx.target(step.args[0])
    ctx.record(f"isolate {name}", target=name)
    ctx.cluster.network.isolate(name)
    _bind(step, ctx, name)


def _cut(step: Step, ctx: StepContext) -> None:
    name = ctx.target(step.args[0])
    others = ctx.group(_opt(step, ctx, "from", "servers"), name)
    ctx.record(f"cut {name} from {','.join(others)}", target=name)
    for other in others:
        ctx.cluster.network.cut(name, other)
    _bind(step, ctx, name)


def _heal(step: Step, ctx: StepContext) -> None:
    ctx.record("heal")
    ctx.cluster.network.heal()


def _await(step: Step, ctx: StepContext) -> None:
    name = step.args[0]
    arg = step.args[1] if len(step.args) > 1 else None
    timeout = int(_opt(step, ctx, "timeout", str(DEFAULT_AWAIT_MS)))
    predicate = ctx.condition(name, arg)
    started = ctx.now_ms
    ctx.wait_until(predicate, timeout, f"{name} {arg or ''}".strip())
    ctx.record(f"await {name} {arg or ''}".strip() + f" (took {ctx.now_ms - started} ms)")


def _burst(step: Step, ctx: StepContext) -> None:
    producer = ctx.producers[step.args[0]]
    count = int(draw(step.args[1], ctx.rng))
    done: list[bool] = []
    ctx.record(f"burst {step.args[0]} {count}")
    producer.burst(count, lambda: done.append(True))
    within = _opt(step, ctx, "within", "")
    if within:
        # A bound, not a deadline: what has not settled by then stays in flight and the steps go
        # on (a burst during a cut must not outlast replica.lag.time.max.ms on a lossy network).
        if not ctx.cluster.run_until(lambda: bool(done), int(within)):
            ctx.record(f"burst {step.args[0]} still in flight after {within} ms; going on")
        return
    timeout = int(_opt(step, ctx, "timeout", str(DEFAULT_AWAIT_MS)))
    ctx.wait_until(lambda: bool(done), timeout, f"the burst of {step.args[0]} to settle")


def _window(step: Step, ctx: StepContext) -> None:
    verb, name = step.args[0], step.args[1]
    ctx.record(f"window {verb} {name}")
    if verb == "open":
        ctx.windows[name] = [ctx.now_ms, -1]
    elif verb == "close":
        ctx.windows[name][1] = ctx.now_ms
    else:
        raise StepFailed(f"window open|close, not {verb!r}")


def _note(step: Step, ctx: StepContext) -> None:
    ctx.record("note " + " ".join(step.args))


def _repeat(step: Step, ctx: StepContext) -> None:
    for _ in range(int(draw(step.args[0], ctx.rng))):
        run_steps(step.block, ctx)


def _for_each(step: Step, ctx: StepContext) -> None:
    if step.args[0] != "broker":
        raise StepFailed(f"for-each broker, not {step.args[0]!r}")
    names = ctx.brokers()
    if step.options.get("order") == "shuffled":
        ctx.rng.shuffle(names)
    alias = step.options.get("as", "it")
    for name in names:
        ctx.bindings[alias] = name
        run_steps(step.block, ctx)


ACTIONS: dict[str, Callable[[Step, StepContext], None]] = {
    "wait": _wait,
    "kill": _process("kill"),
    "power-loss": _process("power-loss"),
    "stop": _process("stop"),
    "start": _process("start"),
    "pause": _process("pause"),
    "resume": _process("resume"),
    "crash": _crash,
    "bounce": _bounce,
    "isolate": _isolate,
    "cut": _cut,
    "heal": _heal,
    "await": _await,
    "burst": _burst,
    "window": _window,
    "note": _note,
    "repeat": _repeat,
    "for-each": _for_each,
}
