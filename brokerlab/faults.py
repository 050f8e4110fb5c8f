"""Fault-injection rules of one node (a TEST FACILITY, off unless the node runs with --fault-injection).

Pure state shared by the broker and the controller adapters: per-peer link rules (a partition,
added delay, random loss) and a clock skew. The gRPC side (brokerlab/rpc/faults.py) serves
FaultService to change them and applies them to outbound calls (the transports) and inbound
calls (a server interceptor), so a rule on one node cuts or slows the link in both directions.
Randomness is injected (a ``random.Random``-like object) so the decision is testable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

ANY_PEER = "*"
CLIENT_PEER = "client"  # a caller that does not say which node it is
NODE_HEADER = "brokerlab-node"  # gRPC metadata key: the calling node's name ("broker-2", "controller")


@dataclass(frozen=True)
class LinkFault:
    peer: str
    drop_all: bool = False
    delay_ms: int = 0
    jitter_ms: int = 0
    drop_probability: float = 0.0

    def __post_init__(self) -> None:
        if not self.peer:
            raise ValueError("a link fault needs a peer (a node name, 'client' or '*')")
        if self.delay_ms < 0 or self.jitter_ms < 0:
            raise ValueError("delay_ms and jitter_ms must not be negative")
        if not 0.0 <= self.drop_probability <= 1.0:
            raise ValueError("drop_probability must be within 0..1")

    @property
    def is_noop(self) -> bool:
        return not self.drop_all and self.delay_ms == 0 and self.jitter_ms == 0 and self.drop_probability == 0


@dataclass(frozen=True)
class Verdict:
    """What happens to one call: lost (``drop``) or held back ``delay_ms`` first."""

    drop: bool = False
    delay_ms: float = 0.0


PASS = Verdict()


@dataclass
class FaultState:
    node: str
    rules: dict[str, LinkFault] = field(default_factory=dict)
    clock_skew_ms: int = 0
    dropped_calls: int = 0
    delayed_calls: int = 0

    @property
    def active(self) -> bool:
        return bool(self.rules)

    def set_rules(self, faults: Iterable[LinkFault], replace: bool = False) -> None:
        if replace:
            self.rules = {}
        for fault in faults:
            if fault.is_noop:
                self.rules.pop(fault.peer, None)
            else:
                self.rules[fault.peer] = fault

    def clear(self) -> None:
        self.rules = {}
        self.clock_skew_ms = 0

    def rule_for(self, peer: str | None) -> LinkFault | None:
        """The peer's own rule, else the rule for '*'. An unnamed caller is the peer 'client'."""
        if not self.rules:
            return None
        return self.rules.get(peer or CLIENT_PEER) or self.rules.get(ANY_PEER)

    def decide(self, peer: str | None, random: Any) -> Verdict:
        """The fate of one call to or from ``peer`` (counts drops and delays)."""
        rule = self.rule_for(peer)
        if rule is None:
            return PASS
        if rule.drop_all or (rule.drop_probability > 0 and random.random() < rule.drop_probability):
            self.dropped_calls += 1
            return Verdict(drop=True)
        delay = rule.delay_ms + (random.uniform(0, rule.jitter_ms) if rule.jitter_ms else 0.0)
        if delay > 0:
            self.delayed_calls += 1
            return Verdict(delay_ms=delay)
        return PASS

    def skewed(self, now_ms: int) -> int:
        return now_ms + self.clock_skew_ms
