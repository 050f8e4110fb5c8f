"""A toy sans-IO core to test the simulator harness on its own.

``CounterCore`` keeps a log of appended bytes in ``counter.log`` on its disk (fsynced per batch
or never, like ``log.flush.policy``), answers "Produce" with the log size before the append as
``base_offset``, answers "Metadata" with its name, and pings its peers every
``ping_interval_ms`` (plus seeded jitter), recording what came back. Messages are real protobufs
so the network's wire copies apply.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from brokerlab.sansio import Effects, Envelope, RequestIds
from brokerlab.v1 import broker_pb2
from lab.sim import BootContext


@dataclass(frozen=True)
class CounterConfig:
    peers: tuple[str, ...] = ()
    ping_interval_ms: int = 100
    flush_policy: str = "none"  # none | batch
    jitter_ms: int = 20


@dataclass
class CounterCore:
    name: str
    config: CounterConfig
    disk: object
    random: object
    now_ms: int
    ids: RequestIds = field(default_factory=RequestIds)
    pings_answered: int = 0
    pings_failed: int = 0
    requests_seen: list[tuple[str, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.file = self.disk.open("counter.log")
        self.next_ping_ms = self.now_ms

    @property
    def size(self) -> int:
        return self.file.size()

    def step(self, envelope: Envelope, now_ms: int) -> Effects:
        effects = Effects()
        if envelope.is_response:
            if envelope.transport_error is not None:
                self.pings_failed += 1
                effects.event("PingFailed", peer=envelope.src, reason=envelope.transport_error)
            else:
                self.pings_answered += 1
                effects.event("PingAnswered", peer=envelope.src, peer_name=envelope.message.cluster_id)
            return effects
        self.requests_seen.append((envelope.src, envelope.request_id))
        if envelope.rpc == "Produce":
            data = b"".join(p.records for p in envelope.message.partitions)
            position = self.file.append(data)
            if self.config.flush_policy == "batch":
                self.file.fsync()
            effects.event("Appended", position=position, size=len(data))
            response = broker_pb2.ProduceResponse(
                partitions=[broker_pb2.PartitionProduceResponse(base_offset=position)]
            )
            effects.reply(envelope.reply(response))
        elif envelope.rpc == "Metadata":
            effects.reply(envelope.reply(broker_pb2.MetadataResponse(cluster_id=self.name)))
        return effects

    def tick(self, now_ms: int) -> Effects:
        effects = Effects()
        if now_ms >= self.next_ping_ms:
            for peer in self.config.peers:
                effects.send(Envelope(self.name, peer, "Metadata", broker_pb2.MetadataRequest(), self.ids.next()))
            jitter = self.random.randrange(0, self.config.jitter_ms + 1)
            self.next_ping_ms = now_ms + self.config.ping_interval_ms + jitter
        return effects

    def next_deadline_ms(self) -> int | None:
        return self.next_ping_ms


def counter_factory(context: BootContext) -> CounterCore:
    return CounterCore(context.name, context.config or CounterConfig(), context.disk, context.random, context.now_ms)


def toy_cluster(seed: int, nodes: int = 3, network=None, flush_policy: str = "none", invariants=()):
    from lab.sim import SimCluster

    cluster = SimCluster(seed, network, invariants=invariants)
    names = [f"toy-{i}" for i in range(1, nodes + 1)]
    for name in names:
        peers = tuple(n for n in names if n != name)
        cluster.add_node(name, counter_factory, CounterConfig(peers=peers, flush_policy=flush_policy))
    return cluster
