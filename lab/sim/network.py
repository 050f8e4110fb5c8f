"""The simulated network: envelopes between nodes with seeded latency, loss, duplication,
reordering and partitions, and gRPC's one promise: every request gets exactly one answer.

A sender's request is a *call*. The call ends with the first of: the server's reply arriving,
its deadline passing (``DEADLINE_EXCEEDED``: lost packets, a partition, a slow server) or the
peer being down (``UNAVAILABLE``, quickly, as a refused or reset connection is). Late and
duplicate replies are dropped, so a core never hangs and never sees two answers to one request.

Like HTTP/2 stream ids, the ids on the wire are the network's own: a request is delivered with
a fresh wire id and its reply is mapped back to the sender's request id and incarnation, so a
restarted node (whose request ids start again at 1) never receives a reply meant for its
previous life.

Slow links (the FaultService's link rules, ``slow_link``): the calls one node makes to another
get an added delay (plus a uniform jitter) before they leave, and each is lost with a chance (the
caller then times out, as with a black hole). Like the real rules they act once per call, on
the request: a rule on node X towards peer P in both directions is ``slow_link(X, P)`` and
``slow_link(P, X)``.

All randomness comes from one ``random.Random`` handed in by the simulation; draws happen in
event order, so a seed fixes the whole schedule.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Callable, Protocol

from brokerlab.sansio import Envelope

from .scheduler import Scheduler, SimulationError, Timer

DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
UNAVAILABLE = "UNAVAILABLE"


@dataclass(frozen=True)
class NetworkConfig:
    """Every knob of the simulated network (the swarm draws these from the seed)."""

    min_latency_ms: int = 1
    max_latency_ms: int = 5
    loss_rate: float = 0.0  # chance that one message (request or reply) vanishes
    duplicate_rate: float = 0.0  # chance that one message is delivered twice
    # Messages on one link arrive in send order (one HTTP/2 connection), except with this chance.
    reorder_rate: float = 0.0
    # gRPC deadline of a call, on top of the wait the request itself asks for (max_wait_ms / timeout_ms).
    request_timeout_ms: int = 30_000
    # How long a sender takes to learn that its peer is down (connection refused / reset).
    unavailable_ms: int = 2
    # Give the receiver its own deep copy of every message, as a real network does: catches shared
    # mutable state between sender and receiver.
    serialize: bool = True
    # Record every delivery and drop in the trace (the schedule a seed produces).
    trace_messages: bool = True

    @classmethod
    def from_seed(cls, rng: random.Random, *, faults: bool = True) -> "NetworkConfig":
        """Knobs drawn from a seed for sweeps: latencies always, message faults when ``faults``."""
        low = rng.randrange(0, 5)
        high = low + rng.randrange(0, 20)
        if not faults:
            return cls(min_latency_ms=low, max_latency_ms=high, reorder_rate=rng.choice([0.0, 0.0, 0.1, 0.5]))
        return cls(
            min_latency_ms=low,
            max_latency_ms=high,
            loss_rate=rng.choice([0.0, 0.0, 0.01, 0.05]),
            duplicate_rate=rng.choice([0.0, 0.0, 0.01, 0.05]),
            reorder_rate=rng.choice([0.0, 0.0, 0.1, 0.5]),
        )


@dataclass(frozen=True)
class SlowLink:
    """What the calls over one directed link suffer (brokerlab.faults.LinkFault without drop_all:
    a cut link is ``SimNetwork.cut``)."""

    delay_ms: int = 0
    jitter_ms: int = 0  # plus a uniform 0..jitter_ms
    drop_probability: float = 0.0

    def __post_init__(self) -> None:
        if self.delay_ms < 0 or self.jitter_ms < 0 or not 0.0 <= self.drop_probability <= 1.0:
            raise ValueError(f"bad slow link {self}: delays must not be negative, drop_probability within 0..1")


class Endpoint(Protocol):
    """Something the network delivers to: a simulated node or a simulated client."""

    name: str
    incarnation: int
    # Optional: the gRPC deadline this endpoint puts on a call, in ms (e.g. the broker adapter's).
    call_timeout: Callable[[Envelope], int] | None

    @property
    def alive(self) -> bool: ...

    def deliver(self, envelope: Envelope) -> None: ...


class _Call:
    """One request in flight, until its single answer is delivered."""

    __slots__ = ("wire_id", "request", "src_incarnation", "dst_incarnation", "deadline", "done")

    def __init__(self, wire_id: int, request: Envelope, src_incarnation: int, dst_incarnation: int) -> None:
        self.wire_id = wire_id
        self.request = request
        self.src_incarnation = src_incarnation
        self.dst_incarnation = dst_incarnation
        self.deadline: Timer | None = None
        self.done = False


def call_timeout_ms(envelope: Envelope, base_timeout_ms: int) -> int:
    """The gRPC deadline of a call: the base timeout plus any wait the request asks the server for."""
    message = envelope.message
    max_wait_ms = int(getattr(message, "max_wait_ms", 0) or 0)
    timeout_ms = int(getattr(message, "timeout_ms", 0) or 0)
    return base_timeout_ms + max(max_wait_ms, timeout_ms, 0)


def _copy_message(message: Any) -> Any:
    """The receiver's own deep copy of a protobuf message (what decoding it off the wire gives it;
    CopyFrom is that, at half the cost of a serialize + parse round trip)."""
    copy_from = getattr(message, "CopyFrom", None)
    if copy_from is None or message is None:
        return message
    copy = type(message)()
    copy.CopyFrom(message)
    return copy


class SimNetwork:
    def __init__(
        self,
        scheduler: Scheduler,
        config: NetworkConfig,
        rng: random.Random,
        trace: Callable[[str, str, dict[str, Any]], None] | None = None,
        trace_sorted: Callable[[int, str, str, tuple[tuple[str, Any], ...]], Any] | None = None,
    ) -> None:
        self.scheduler = scheduler
        self.config = config
        self.random = rng
        self._trace = trace
        # ``Trace.record_sorted(now_ms, node, name, fields)``, fields as name-sorted pairs: the
        # per-message entries skip building and sorting a dict.
        if trace_sorted is None and trace is not None:
            trace_sorted = lambda now_ms, node, name, fields: trace(node, name, dict(fields))  # noqa: E731
        self._record_sorted = trace_sorted
        self.endpoints: dict[str, Endpoint] = {}
        self.cut_links: set[tuple[str, str]] = set()
        self.slow_links: dict[tuple[str, str], SlowLink] = {}  # (caller, callee) -> rule
        self._calls: dict[int, _Call] = {}
        self._wire_ids = 0
        self._link_tail_ms: dict[tuple[str, str], int] = {}
        self.stats = {"sent": 0, "delivered": 0, "dropped": 0, "duplicated": 0, "failed": 0}

    # -- topology ---------------------------------------------------------------------------
    def register(self, endpoint: Endpoint) -> None:
        self.endpoints[endpoint.name] = endpoint

    def cut(self, a: str, b: str, both_ways: bool = True) -> None:
        """Cut the link a -> b (and b -> a): messages on it vanish, calls over it time out."""
        self.cut_links.add((a, b))
        if both_ways:
            self.cut_links.add((b, a))
        self._note("net", "LinkCut", {"src": a, "dst": b, "both_ways": both_ways})

    def isolate(self, node: str) -> None:
        """Cut every link between ``node`` and the others (a network partition of one)."""
        for other in sorted(self.endpoints):
            if other != node:
                self.cut_links.add((node, other))
                self.cut_links.add((other, node))
        self._note("net", "NodeIsolated", {"node": node})

    def partition(self, *groups: set[str] | list[str]) -> None:
        """Split nodes into groups that cannot talk to each other (nodes in no group are untouched)."""
        for i, group in enumerate(groups):
            for other in groups[i + 1 :]:
                for a in group:
                    for b in other:
                        self.cut_links.add((a, b))
                        self.cut_links.add((b, a))
        self._note("net", "NetworkPartitioned", {"groups": [sorted(g) for g in groups]})

    def uncut(self, a: str, b: str, both_ways: bool = True) -> None:
        """Restore the link a -> b (and b -> a) cut by ``cut``/``isolate``/``partition``."""
        self.cut_links.discard((a, b))
        if both_ways:
            self.cut_links.discard((b, a))
        self._note("net", "LinkRestored", {"src": a, "dst": b, "both_ways": both_ways})

    def slow_link(self, src: str, dst: str, delay_ms: int, jitter_ms: int = 0, drop_probability: float = 0.0) -> None:
        """From now on every call ``src`` makes to ``dst`` waits ``delay_ms`` (+ jitter) before it
        leaves, or is lost with ``drop_probability`` (one rule per link: this replaces any)."""
        self.slow_links[(src, dst)] = SlowLink(delay_ms, jitter_ms, drop_probability)
        self._note("net", "LinkSlowed", {"src": src, "dst": dst, "delay_ms": delay_ms, "jitter_ms": jitter_ms,
                                         "drop_probability": drop_probability})

    def clear_slow_link(self, src: str, dst: str) -> None:
        """Calls from ``src`` to ``dst`` go at the network's own pace again (calls already held back stay so)."""
        if self.slow_links.pop((src, dst), None) is not None:
            self._note("net", "LinkSpeedRestored", {"src": src, "dst": dst})

    def heal(self) -> None:
        """Every cut link restored and every slow link cleared."""
        self.cut_links.clear()
        self.slow_links.clear()
        self._note("net", "NetworkHealed", {})

    def is_cut(self, src: str, dst: str) -> bool:
        return (src, dst) in self.cut_links

    # -- sending ----------------------------------------------------------------------------
    def send(self, envelope: Envelope) -> None:
        """Called by a live endpoint for each request it sends and each reply it releases."""
        if envelope.is_response:
            self._send_reply(envelope)
        else:
            self._send_request(envelope)

    def _send_request(self, request: Envelope) -> None:
        src = self.endpoints[request.src]
        self._wire_ids = wire_id = self._wire_ids + 1
        call = _Call(wire_id, request, src.incarnation, -1)
        self._calls[wire_id] = call
        self.stats["sent"] += 1
        # The sender's own deadline policy when it has one (a real adapter's), else the config's.
        policy = getattr(src, "call_timeout", None)
        timeout_ms = policy(request) if policy is not None else call_timeout_ms(request, self.config.request_timeout_ms)
        call.deadline = self.scheduler.after(timeout_ms, self._fail, call, DEADLINE_EXCEEDED, label="deadline")
        dst = self.endpoints.get(request.dst)
        if dst is None or not dst.alive:
            self._fail_soon(call, UNAVAILABLE)
            return
        call.dst_incarnation = dst.incarnation
        wire = Envelope(request.src, request.dst, request.rpc, request.message, wire_id)
        if self.slow_links and (request.src, request.dst) in self.slow_links:
            self._hold_back(wire, call, self.slow_links[(request.src, request.dst)])
            return
        self._transmit(wire, call.dst_incarnation)

    def _hold_back(self, wire: Envelope, call: _Call, slow: SlowLink) -> None:
        """A request over a slow link: lost (its call times out at the deadline), or sent late."""
        if slow.drop_probability and self.random.random() < slow.drop_probability:
            self.stats["slow_lost"] = self.stats.get("slow_lost", 0) + 1
            self._note_drop(wire, "slow link lost it")
            return
        delay_ms = slow.delay_ms + (self.random.randint(0, slow.jitter_ms) if slow.jitter_ms else 0)
        self.stats["slowed"] = self.stats.get("slowed", 0) + 1
        self.scheduler.after(delay_ms, self._send_late, wire, call, label=f"slow {wire.rpc}")

    def _send_late(self, wire: Envelope, call: _Call) -> None:
        if not call.done:  # else the call already ended (deadline, either side down)
            self._transmit(wire, call.dst_incarnation)

    def _send_reply(self, reply: Envelope) -> None:
        call = self._calls.get(reply.request_id)
        if call is None:  # the call already ended (deadline, peer down): nobody is listening
            self._note_drop(reply, "call ended")
            return
        request = call.request
        if reply.src != request.dst or reply.dst != request.src:
            raise SimulationError(f"{reply.src} answered a call it never received: {reply.rpc} to {reply.dst}")
        self.stats["sent"] += 1
        self._transmit(reply, call.src_incarnation)

    def _transmit(self, envelope: Envelope, dst_incarnation: int) -> None:
        """Put one message on the wire, applying the link's faults."""
        config, rng = self.config, self.random
        link = (envelope.src, envelope.dst)
        if self.cut_links and link in self.cut_links:
            self._note_drop(envelope, "link cut")
            return
        if config.loss_rate and rng.random() < config.loss_rate:
            self._note_drop(envelope, "lost")
            return
        copies = 1
        if config.duplicate_rate and rng.random() < config.duplicate_rate:
            copies = 2
            self.stats["duplicated"] += 1
        low = config.min_latency_ms
        high = config.max_latency_ms if config.max_latency_ms > low else low
        reorder_rate = config.reorder_rate
        scheduler = self.scheduler
        label = "deliver " + envelope.rpc
        for _ in range(copies):
            due = scheduler.now_ms + rng.randint(low, high)
            if not (reorder_rate and rng.random() < reorder_rate):
                tail = self._link_tail_ms.get(link, 0)  # FIFO on the link
                if tail > due:
                    due = tail
                self._link_tail_ms[link] = due
            message = _copy_message(envelope.message) if config.serialize else envelope.message
            copy = Envelope(envelope.src, envelope.dst, envelope.rpc, message, envelope.request_id,
                            envelope.is_response, envelope.transport_error)
            scheduler.at(due, self._arrive, copy, dst_incarnation, label=label)

    def _arrive(self, envelope: Envelope, dst_incarnation: int) -> None:
        if self.cut_links and (envelope.src, envelope.dst) in self.cut_links:  # packets in flight die with the link
            self._note_drop(envelope, "link cut")
            return
        dst = self.endpoints.get(envelope.dst)
        if dst is None or not dst.alive or dst.incarnation != dst_incarnation:
            self._note_drop(envelope, "peer gone")
            return
        if not envelope.is_response:
            self._note_delivery(envelope)
            dst.deliver(envelope)
            return
        call = self._calls.get(envelope.request_id)
        if call is None or call.done:
            self._note_drop(envelope, "call ended")
            return
        self._end(call)
        answer = Envelope(envelope.src, envelope.dst, envelope.rpc, envelope.message, call.request.request_id,
                          True, envelope.transport_error)
        self._note_delivery(answer)
        dst.deliver(answer)

    # -- failures ---------------------------------------------------------------------------
    def _fail_soon(self, call: _Call, reason: str) -> None:
        if call.deadline is not None:
            call.deadline.cancel()
        call.deadline = self.scheduler.after(self.config.unavailable_ms, self._fail, call, reason, label="unavailable")

    def _fail(self, call: _Call, reason: str) -> None:
        if call.done:
            return
        self._end(call)
        src = self.endpoints.get(call.request.src)
        if src is None or not src.alive or src.incarnation != call.src_incarnation:
            return
        self.stats["failed"] += 1
        answer = call.request.failed(reason)
        self._note("net", "CallFailed", {
            "src": call.request.src, "dst": call.request.dst, "rpc": call.request.rpc,
            "request_id": call.request.request_id, "reason": reason,
        })
        src.deliver(answer)

    def _end(self, call: _Call) -> None:
        call.done = True
        if call.deadline is not None:
            call.deadline.cancel()
        self._calls.pop(call.wire_id, None)

    def node_down(self, name: str) -> None:
        """``name`` stopped (crash or shutdown): its callers learn quickly; its own calls are forgotten."""
        for call in sorted(self._calls.values(), key=lambda c: c.wire_id):
            if call.request.src == name:
                self._end(call)
            elif call.request.dst == name:
                self._fail_soon(call, UNAVAILABLE)

    def in_flight_calls(self) -> int:
        return len(self._calls)

    # -- trace ------------------------------------------------------------------------------
    def _note(self, node: str, name: str, fields: dict[str, Any]) -> None:
        if self._trace is not None:
            self._trace(node, name, fields)

    def _note_delivery(self, envelope: Envelope) -> None:
        self.stats["delivered"] += 1
        if self.config.trace_messages and self._record_sorted is not None:
            # The fields as Trace.record would sort them, built sorted: one of these per message.
            self._record_sorted(self.scheduler.now_ms, "net", "MessageDelivered", (
                ("dst", envelope.dst), ("request_id", envelope.request_id), ("response", envelope.is_response),
                ("rpc", envelope.rpc), ("src", envelope.src),
            ))

    def _note_drop(self, envelope: Envelope, reason: str) -> None:
        self.stats["dropped"] += 1
        if self.config.trace_messages:
            self._note("net", "MessageDropped", {
                "src": envelope.src, "dst": envelope.dst, "rpc": envelope.rpc,
                "request_id": envelope.request_id, "response": envelope.is_response, "reason": reason,
            })
