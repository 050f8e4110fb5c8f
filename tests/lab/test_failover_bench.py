"""The failover bench's pieces without a cluster: the paced load, the figures, the printout."""

from __future__ import annotations

import asyncio
import json

import pytest

from brokerlab.errors import ErrorCode, KafkaError
from lab.failover_bench import FailoverResult, FailoverSettings, ProduceLoad, Trial, effective_config


class FakeHandle:
    def __init__(self) -> None:
        self.callbacks = []
        self.error = None

    def add_done_callback(self, callback) -> None:
        self.callbacks.append(callback)

    def exception(self):
        return self.error

    def settle(self, error=None) -> None:
        self.error = error
        for callback in self.callbacks:
            callback(self)


class FakeProducer:
    def __init__(self) -> None:
        self.handles: list[FakeHandle] = []
        self.values: list[bytes] = []

    async def send(self, topic, value, partition=None):
        assert partition == 0
        self.values.append(value)
        handle = FakeHandle()
        self.handles.append(handle)
        return handle


def test_the_load_finds_the_first_ack_of_a_record_sent_after_the_fault_and_counts_failures() -> None:
    async def scenario():
        producer = FakeProducer()
        load = ProduceLoad(producer, "t", 100, interval_ms=1)
        load.start()
        while len(producer.handles) < 6:
            await asyncio.sleep(0.001)
        await load.stop()
        assert all(len(v) == 100 for v in producer.values) and producer.values[3].startswith(b"000000000003")
        producer.handles[0].settle()
        producer.handles[1].settle(KafkaError(ErrorCode.REQUEST_TIMED_OUT))
        waiting = asyncio.ensure_future(load.wait_ack_from(3, timeout_s=5))
        await asyncio.sleep(0)
        producer.handles[2].settle()  # sent before the fault: not the figure
        await asyncio.sleep(0)
        assert not waiting.done()
        producer.handles[4].settle()
        acked_at = await waiting
        assert acked_at == next(t for t, seq in load.acks if seq == 4)
        assert await load.wait_ack_from(100, timeout_s=0.01) is None
        failed, gap_ms = load.window(0.0, acked_at + 1)
        assert failed == 1 and gap_ms >= 0
        return load

    load = asyncio.run(asyncio.wait_for(scenario(), 10))
    assert [seq for _, seq in load.acks] == [0, 2, 4] and load.next_seq() >= 6


def test_the_result_reports_the_distribution_every_sample_and_the_settings() -> None:
    trials = [Trial(i, 1 + i % 3, float(s), new_leader=2) for i, s in enumerate([500, 700, 600, 900], 1)]
    trials.append(Trial(5, 2, None, error="no acknowledgement within 30 s"))
    result = FailoverResult("hard", trials, {"trials": 5}, sent=10, acknowledged=9, failed=1, data_dir="/x")
    data = result.to_json()
    assert (data["count"], data["p50"], data["p99"], data["max"], data["min"]) == (4, 700.0, 900.0, 900.0, 500.0)
    assert data["samples_ms"] == [500.0, 700.0, 600.0, 900.0] and data["failed_trials"] == 1
    assert "SIGKILL" in data["metric"] and data["trials"][4]["error"].startswith("no acknowledgement")
    json.dumps(data)
    controlled = FailoverResult("controlled", [Trial(1, 1, 90.0, exit_ms=120.0, failed_sends=0)], {}).to_json()
    assert controlled["exit_ms"]["max"] == 120.0 and controlled["failed_sends_during_steps"] == 0


def test_the_printout_names_the_metric_figures_and_settings(capsys) -> None:
    from cli.bench import print_failover

    trials = [Trial(1, 1, 812.5, new_leader=2, rejoin_ms=900.0), Trial(2, 2, 790.0, new_leader=3)]
    settings = {"trials": 2, "acks": "all", "cluster_config": effective_config({"broker.session.timeout.ms": "500"})}
    print_failover(FailoverResult("hard", trials, settings, sent=100, acknowledged=100, data_dir="/d"), False)
    out = capsys.readouterr().out
    assert "failover (hard): 2 of 2 trials measured" in out
    assert "p50 812.5  p99 812.5  max 812.5" in out
    assert "samples ms: 812 790" in out
    assert "broker.session.timeout.ms=500" in out and "broker.heartbeat.interval.ms=" in out
    assert "logs: /d/logs" in out


def test_settings_are_checked() -> None:
    with pytest.raises(KafkaError):
        FailoverSettings(mode="gentle")
    with pytest.raises(KafkaError):
        FailoverSettings(brokers=2)
    assert FailoverSettings(mode="controlled", trials=1).mode == "controlled"
