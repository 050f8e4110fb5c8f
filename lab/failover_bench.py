"""The failover benchmark behind ``brokerlab bench failover``: how long a partition is unavailable.

One run starts its own local cluster (it kills brokers: never the user's), creates a topic with
replication factor 3 and ``min.insync.replicas=2``, and keeps an ``acks=all`` producer sending
to partition 0 at a steady pace (one record every ``send_interval_ms``, ordered:
``max.in.flight.requests.per.connection=1``). Then, ``trials`` times:

- ``hard``: SIGKILL the leader of partition 0. The sample is the time from the signal to the
  first acknowledgement of a record sent after it: necessarily written by a new leader and
  replicated to its ISR (the old leader is dead; it can acknowledge nothing sent after the kill).
- ``controlled``: SIGTERM the leader of partition 0 (controlled shutdown). The sample is the time
  until metadata on the surviving brokers shows none of the partitions it led still led by it
  (leadership moved; the budget is 200 ms per broker); also the time until the process exited,
  and the produce failures during the step (there should be none).

After each step the broker is started again and the next trial waits until it is back in the
ISR of every partition of the topic (and the producer got a fresh acknowledgement), so every
trial starts from a fully replicated partition. Sending is paced with a sleep: that is the load
generator's rate, not a wait for a condition.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from brokerlab.errors import ErrorCode, KafkaError
from brokerlab.ids import TopicPartition
from brokerlab.logfmt import utc_timestamp
from brokerlab.v1 import broker_pb2
from lab.bench import percentiles

MODES = ("hard", "controlled")
STEADY_TIMEOUT_S = 60.0
POLL_INTERVAL_S = 0.005  # metadata polling while leadership moves (controlled mode)
STATE_POLL_INTERVAL_S = 0.05  # metadata polling while waiting for a steady cluster


@dataclass
class FailoverSettings:
    mode: str = "hard"
    trials: int = 20
    brokers: int = 3
    partitions: int = 3
    topic: str = "failover-bench"
    record_size: int = 100
    send_interval_ms: float = 5.0
    trial_timeout_s: float = 30.0
    cluster_config: dict[str, str] = field(default_factory=dict)
    data_dir: Path | None = None
    base_dir: Path | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise KafkaError(ErrorCode.INVALID_REQUEST, f"--mode must be one of {', '.join(MODES)}")
        if self.trials < 1 or self.brokers < 3 or self.partitions < 1 or self.send_interval_ms <= 0:
            raise KafkaError(ErrorCode.INVALID_REQUEST,
                             "need --trials >= 1, --brokers >= 3 (replication factor 3), --partitions >= 1, "
                             "--send-interval-ms > 0")


@dataclass
class Trial:
    trial: int
    victim: int
    sample_ms: float | None  # hard: kill -> first acks=all ack; controlled: SIGTERM -> leadership moved
    new_leader: int = -1
    exit_ms: float | None = None  # controlled: SIGTERM -> process gone
    failed_sends: int = 0  # produce failures between the signal and the broker's return to the ISR
    max_ack_gap_ms: float = 0.0  # the longest stretch without an acknowledgement in that window
    rejoin_ms: float | None = None  # restart -> back in every ISR
    error: str | None = None
    signal_at: str = ""  # wall clock (UTC, like the nodes' ts=) of the signal, to line trials up with logs


@dataclass
class FailoverResult:
    mode: str
    trials: list[Trial]
    settings: dict[str, Any]
    sent: int = 0
    acknowledged: int = 0
    failed: int = 0
    data_dir: str = ""

    @property
    def samples_ms(self) -> list[float]:
        return [t.sample_ms for t in self.trials if t.sample_ms is not None]

    def distribution(self) -> dict[str, float]:
        samples = self.samples_ms
        latency = percentiles(samples)
        return {"count": len(samples), "p50": latency.p50, "p99": latency.p99, "max": latency.max,
                "min": round(min(samples), 3) if samples else 0.0}

    def to_json(self) -> dict:
        out = {"mode": self.mode, "metric": METRICS[self.mode], **self.distribution(),
               "samples_ms": [round(s, 3) for s in self.samples_ms],
               "sent": self.sent, "acknowledged": self.acknowledged, "failed": self.failed,
               "failed_trials": sum(1 for t in self.trials if t.sample_ms is None),
               "trials": [asdict(t) for t in self.trials], "settings": self.settings, "data_dir": self.data_dir}
        out["max_ack_gap_ms"] = asdict(percentiles([t.max_ack_gap_ms for t in self.trials]))
        if self.mode == "controlled":
            exits = [t.exit_ms for t in self.trials if t.exit_ms is not None]
            out["exit_ms"] = asdict(percentiles(exits))
            out["failed_sends_during_steps"] = sum(t.failed_sends for t in self.trials)
        return out


METRICS = {
    "hard": "SIGKILL of the leader -> first acks=all acknowledgement by the new leader (ms)",
    "controlled": "SIGTERM of the leader -> none of its partitions led by it in metadata (ms)",
}


class ProduceLoad:
    """A paced acks=all producer on one partition; remembers when each record was sent and acked."""

    def __init__(self, producer: Any, topic: str, record_size: int, interval_ms: float) -> None:
        self.producer = producer
        self.tp = TopicPartition(topic, 0)
        self.padding = b"x" * max(0, record_size - 12)
        self.interval_s = interval_ms / 1000
        self.sent_at: list[float] = []  # by sequence number
        self.acks: list[tuple[float, int]] = []  # (ack time, seq), in ack order
        self.failures: list[tuple[float, int, str]] = []  # (failure time, seq, error)
        self._acked = asyncio.Event()
        self._task: asyncio.Task | None = None
        self.error: BaseException | None = None

    def start(self) -> None:
        self._stopping = False
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        """Stop sending (never in the middle of a send, so every record sent is tracked)."""
        if self._task is not None:
            self._stopping = True
            await self._task

    async def _run(self) -> None:
        try:
            while not self._stopping:
                seq = len(self.sent_at)
                self.sent_at.append(time.perf_counter())
                handle = await self.producer.send(self.tp.topic, b"%012d" % seq + self.padding, partition=0)
                handle.add_done_callback(lambda h, seq=seq: self._settled(h, seq))
                await asyncio.sleep(self.interval_s)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # a send refused outright (closed producer): stop the run
            self.error = exc
            self._acked.set()

    def _settled(self, handle: Any, seq: int) -> None:
        now = time.perf_counter()
        error = handle.exception()
        if error is None:
            self.acks.append((now, seq))
            self._acked.set()
        else:
            self.failures.append((now, seq, str(error)))

    def next_seq(self) -> int:
        return len(self.sent_at)

    async def wait_ack_from(self, seq: int, timeout_s: float) -> float | None:
        """The ack time of the first record numbered ``seq`` or later, waiting up to ``timeout_s``."""
        deadline = time.perf_counter() + timeout_s
        checked = 0
        while True:
            acks = self.acks
            for ack_time, acked_seq in acks[checked:]:
                if acked_seq >= seq:
                    return ack_time
            checked = len(acks)
            if self.error is not None:
                raise self.error
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                return None
            self._acked.clear()
            try:
                await asyncio.wait_for(self._acked.wait(), remaining)
            except asyncio.TimeoutError:
                pass

    def window(self, start: float, end: float) -> tuple[int, float]:
        """Failures and the longest gap between acknowledgements within [start, end]."""
        failed = sum(1 for t, _, _ in self.failures if start <= t <= end)
        times = [start] + sorted(t for t, _ in self.acks if start <= t <= end) + [end]
        gap = max((b - a for a, b in zip(times, times[1:])), default=0.0)
        return failed, round(gap * 1000, 3)


class _Metadata:
    """Leaders and ISRs of the topic, asked of one chosen broker at a time (never the victim)."""

    def __init__(self, link: Any, addresses: dict[int, str], topic: str) -> None:
        self.link = link
        self.addresses = addresses
        self.topic = topic

    async def partitions(self, avoid: int | None = None) -> list[Any] | None:
        for broker_id, address in self.addresses.items():
            if broker_id == avoid:
                continue
            try:
                response = await self.link.call_broker_at(
                    address, "Metadata", broker_pb2.MetadataRequest(topics=[self.topic]), timeout_ms=1000)
            except KafkaError:
                continue
            for topic in response.topics:
                if topic.name == self.topic and topic.error_code == ErrorCode.NONE:
                    return sorted(topic.partitions, key=lambda p: p.partition)
        return None

    async def wait(self, condition: Callable[[list[Any]], bool], timeout_s: float, what: str,
                   avoid: int | None = None, interval_s: float = STATE_POLL_INTERVAL_S) -> list[Any]:
        deadline = time.perf_counter() + timeout_s
        while True:
            partitions = await self.partitions(avoid)
            if partitions and condition(partitions):
                return partitions
            if time.perf_counter() >= deadline:
                raise KafkaError(ErrorCode.REQUEST_TIMED_OUT, f"timed out after {timeout_s:g} s waiting for {what}")
            await asyncio.sleep(interval_s)


def _fully_replicated(partitions: list[Any]) -> bool:
    return all(p.leader_id >= 0 and set(p.isr) == set(p.replicas) for p in partitions)


async def run_failover_bench(settings: FailoverSettings, progress: Callable[[Trial], None] | None = None,
                             cluster_factory: Callable[..., Any] | None = None) -> FailoverResult:
    """Start a cluster, run the trials, stop the cluster (its logs stay in ``data_dir``)."""
    from client import Admin, NewTopic, Producer
    from client.rpc.cluster_link import ClusterLink
    from lab.local_cluster import LocalCluster

    config = {"min.insync.replicas": "2", **settings.cluster_config}
    plan = cluster_factory or LocalCluster.plan
    local = plan(brokers=settings.brokers, data_dir=settings.data_dir, config=config,
                 base_dir=settings.base_dir or Path.cwd())
    await asyncio.to_thread(local.start)
    result = FailoverResult(settings.mode, [], _settings_of(settings, config), data_dir=str(local.data_dir))
    link = ClusterLink(local.bootstrap_servers())
    producer = None
    load = None
    try:
        async with Admin(local.bootstrap_servers()) as admin:
            await admin.create_topics([NewTopic(settings.topic, settings.partitions, 3,
                                                {"min.insync.replicas": "2"})])
            await admin.wait_for_topics([settings.topic], timeout_ms=int(STEADY_TIMEOUT_S * 1000))
        addresses = {b.id: b.address for b in local.brokers}
        metadata = _Metadata(link, addresses, settings.topic)
        producer = Producer(local.bootstrap_servers(), acks="all", linger_ms=0,
                            max_in_flight_requests_per_connection=1, client_id="failover-bench")
        load = ProduceLoad(producer, settings.topic, settings.record_size, settings.send_interval_ms)
        load.start()
        for number in range(1, settings.trials + 1):
            trial = await _one_trial(number, settings, local, metadata, load)
            result.trials.append(trial)
            if progress is not None:
                progress(trial)
    finally:
        if load is not None:
            await load.stop()
        if producer is not None:
            await producer.close(timeout_ms=5_000)
        await link.close()
        await asyncio.to_thread(local.stop)
    if load is not None:
        result.sent = len(load.sent_at)
        result.acknowledged = len(load.acks)
        result.failed = len(load.failures)
    return result


async def _one_trial(number: int, settings: FailoverSettings, local: Any, metadata: _Metadata,
                     load: ProduceLoad) -> Trial:
    partitions = await metadata.wait(_fully_replicated, STEADY_TIMEOUT_S, "every replica in the ISR")
    if await load.wait_ack_from(load.next_seq(), STEADY_TIMEOUT_S) is None:
        raise KafkaError(ErrorCode.REQUEST_TIMED_OUT, "the producer got no acknowledgement before the trial")
    victim = partitions[0].leader_id
    name = f"broker-{victim}"
    trial = Trial(number, victim, None)
    trial.signal_at = utc_timestamp(time.time_ns() // 1_000_000)
    if settings.mode == "hard":
        seq = load.next_seq()
        started = time.perf_counter()
        await asyncio.to_thread(local.stop_node, name, 10.0, True)
        acked_at = await load.wait_ack_from(seq, settings.trial_timeout_s)
        if acked_at is None:
            trial.error = f"no acknowledgement within {settings.trial_timeout_s:g} s"
        else:
            trial.sample_ms = round((acked_at - started) * 1000, 3)
    else:
        led = {p.partition for p in partitions if p.leader_id == victim}
        started = time.perf_counter()
        stopping = asyncio.ensure_future(_timed_stop(local, name))
        try:
            await metadata.wait(lambda ps: all(ps[i].leader_id not in (victim, -1) for i in led),
                                settings.trial_timeout_s, f"leadership to move off {name}", avoid=victim,
                                interval_s=POLL_INTERVAL_S)
            trial.sample_ms = round((time.perf_counter() - started) * 1000, 3)
        except KafkaError as exc:
            trial.error = exc.message
        stopped_at = await stopping
        trial.exit_ms = round((stopped_at - started) * 1000, 3)
    try:  # the broker asked may apply the change a moment after the new leader acknowledged
        after = await metadata.wait(lambda ps: ps[0].leader_id not in (victim, -1), 5.0, "the new leader",
                                    avoid=victim)
        trial.new_leader = after[0].leader_id
    except KafkaError:
        trial.new_leader = -1
    restarted = time.perf_counter()
    await asyncio.to_thread(local.start_node, name)
    await metadata.wait(lambda ps: all(victim in p.isr for p in ps), STEADY_TIMEOUT_S, f"{name} back in the ISR")
    trial.rejoin_ms = round((time.perf_counter() - restarted) * 1000, 3)
    trial.failed_sends, trial.max_ack_gap_ms = load.window(started, time.perf_counter())
    return trial


async def _timed_stop(local: Any, name: str) -> float:
    await asyncio.to_thread(local.stop_node, name)
    return time.perf_counter()


# The node settings that shape failover, printed beside every figure (defaults unless overridden).
FAILOVER_KEYS = ("broker.heartbeat.interval.ms", "broker.session.timeout.ms", "replica.lag.time.max.ms",
                 "replica.fetch.wait.max.ms", "unclean.leader.election.enable", "auto.leader.rebalance.enable")


def effective_config(config: dict[str, str]) -> dict[str, str]:
    """``config`` plus the controller's and brokers' defaults for FAILOVER_KEYS."""
    from controller.config import CONTROLLER_KEYS
    from node.config import BROKER_KEYS

    defaults = {key.name: key.default for key in (*BROKER_KEYS, *CONTROLLER_KEYS)}
    out = {name: str(defaults[name]).lower() if isinstance(defaults[name], bool) else str(defaults[name])
           for name in FAILOVER_KEYS if name in defaults}
    out.update(config)
    return dict(sorted(out.items()))


def _settings_of(settings: FailoverSettings, config: dict[str, str]) -> dict[str, Any]:
    from node.log.config import LogConfig

    return {
        "trials": settings.trials, "brokers": settings.brokers, "partitions": settings.partitions,
        "replication_factor": 3, "min_insync_replicas": 2, "acks": "all",
        "max_in_flight_requests_per_connection": 1, "record_size": settings.record_size,
        "send_interval_ms": settings.send_interval_ms,
        "flush_policy": config.get("log.flush.policy", LogConfig().flush_policy),
        "cluster_config": effective_config(config),
    }
