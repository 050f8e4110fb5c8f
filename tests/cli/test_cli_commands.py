"""produce / consume / topic describe / bench logic against in-memory client fakes."""

from __future__ import annotations

import asyncio
import json

import pytest
from cli_fakes import FakeAdmin, FakeConsumer, FakeProducer, records, topic

from brokerlab.errors import ErrorCode, KafkaError
from cli.common import CliError
from cli.consume import consume, formatter, start_offset
from cli.produce import LineParser, ProduceResult, produce_lines, summarize
from cli.topic import describe_json, describe_text
from lab.bench import bench_consume, bench_produce, percentiles

TOPICS = {"orders": topic("orders", 3)}


def admin(_bootstrap=None):
    return FakeAdmin(TOPICS)


def parser(sep=None) -> LineParser:
    return LineParser(sep, lambda t: t, lambda t: t)


def produce(lines, sep=None, fail=(), topic_name="orders", partition=None):
    made = []

    def factory(bootstrap, **settings):
        made.append(FakeProducer(bootstrap, fail_values=fail, **settings))
        return made[-1]

    result = asyncio.run(produce_lines(["h:1"], topic_name, lines, parser(sep), {"acks": "1"}, partition=partition,
                                       headers=[("a", b"b")], producer_factory=factory, admin_factory=admin))
    return result, made[0]


def test_produce_splits_keys_and_counts_acknowledgements() -> None:
    result, producer = produce(["k1:hello", "k2:wor:ld", "", "k3:"], sep=":")
    assert (result.sent, result.acknowledged, result.failed) == (3, 3, 0)
    assert [(k, v) for _, k, v, _, _ in producer.sent] == [("k1", "hello"), ("k2", "wor:ld"), ("k3", "")]
    assert producer.sent[0][4] == [("a", b"b")] and producer.closed


def test_produce_counts_every_kind_of_failure() -> None:
    result, _ = produce(["a:1", "no separator", "b:bad", "c:refuse", "d:4"], sep=":", fail={"bad"})
    assert (result.acknowledged, result.failed) == (2, 3)
    assert result.first_error[0] == "INVALID_REQUEST" and "line 2" in result.first_error[1]


def test_produce_exit_code_and_message(capsys) -> None:
    ok = ProduceResult(sent=2, acknowledged=2, partitions={0: 1, 2: 1})
    assert summarize(ok, "orders", "1") == 0
    assert "2 records acknowledged (acks=1) to orders [p0: 1, p2: 1]" in capsys.readouterr().out
    bad = ProduceResult(sent=3, acknowledged=1, failed=2, first_error=("NOT_LEADER_OR_FOLLOWER", "leader moved"))
    assert summarize(bad, "orders", "all") == 1
    err = capsys.readouterr().err.strip()
    assert err == ("error: NOT_LEADER_OR_FOLLOWER: 2 of 3 records failed (1 acknowledged); "
                   "first failure: leader moved")


def test_produce_to_a_missing_topic_or_partition_fails_before_sending() -> None:
    with pytest.raises(KafkaError) as info:
        produce(["x"], topic_name="missing")
    assert info.value.code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    with pytest.raises(KafkaError) as info:
        produce(["x"], partition=7)
    assert "partitions 0..2, not 7" in info.value.message


def run_consume(**kwargs):
    printed = []
    data = {0: records(0, 3), 1: records(1, 2), 2: []}
    count = asyncio.run(consume(["h:1"], "orders", {}, printed.append, admin_factory=admin,
                                consumer_factory=lambda b, **s: FakeConsumer(b, data, **s), **kwargs))
    return count, printed


def test_consume_stops_after_max_messages() -> None:
    count, printed = run_consume(offset="earliest", max_messages=4)
    assert count == 4 and [(r.partition, r.offset) for r in printed] == [(0, 0), (0, 1), (0, 2), (1, 0)]


def test_consume_one_partition_from_an_offset_until_silence() -> None:
    count, printed = run_consume(partition=0, offset=1, timeout_ms=50)
    assert count == 2 and [r.offset for r in printed] == [1, 2]
    count, _ = run_consume(offset="latest", timeout_ms=20)
    assert count == 0


def test_record_formats() -> None:
    record = records(1, 1)[0]
    assert formatter("{offset} {key} {value}")(record) == "0 k0 p1-v0"
    assert formatter("{partition}:{headers}:{timestamp_ms}")(record) == "1:h=1:1000"
    data = json.loads(formatter("json")(record))
    assert data == {"topic": "orders", "partition": 1, "offset": 0, "timestamp_ms": 1000, "key": "k0",
                    "value": "p1-v0", "headers": {"h": "1"}}
    keyless = record._replace(key=None, value=b"\xff")
    assert formatter("{key} {value}")(keyless) == "null \\xff"
    for bad in ("{nope}", "{}", "{offset"):
        with pytest.raises(CliError):
            formatter(bad)
    assert start_offset("12") == 12 and start_offset("earliest") == "earliest"
    with pytest.raises(CliError):
        start_offset("-1")


def test_describe_json_shape_and_text() -> None:
    data = describe_json([topic("orders", 2)])
    assert list(data) == ["topics"]
    described = data["topics"][0]
    assert set(described) == {"name", "topic_id", "is_internal", "partition_count", "replication_factor", "configs",
                              "partitions"}
    assert described["partitions"][1] == {"partition": 1, "leader": 2, "leader_epoch": 0, "replicas": [2, 3],
                                          "isr": [2], "offline_replicas": [], "log_start_offset": -1,
                                          "log_end_offset": 5, "high_watermark": 5}
    text = describe_text(data)
    assert "LOG_END_OFFSET" in text and "retention.ms=1000" in text and "2,3" in text


def test_percentiles() -> None:
    lat = percentiles([float(x) for x in range(1, 101)])
    assert (lat.p50, lat.p99, lat.max) == (51.0, 100.0, 100.0)
    assert percentiles([]).max == 0.0


def test_bench_produce_and_consume_report_rates_and_settings() -> None:
    result = asyncio.run(bench_produce(["h:1"], "orders", 1000, 100, acks="1", batch_size=65536, linger_ms=10,
                                       producer_factory=FakeProducer, sample_every=10))
    data = result.to_json()
    assert data["records"] == 1000 and data["bytes"] == 100_000 and data["failed"] == 0
    assert data["records_per_sec"] > 0 and data["mb_per_sec"] > 0
    assert set(data["latency_ms"]) == {"p50", "p99", "max"}
    assert (data["acks"], data["batch_size"], data["linger_ms"], data["record_size"]) == ("1", 65536, 10, 100)
    consumed = asyncio.run(bench_consume(["h:1"], "orders", 5, 3, consumer_factory=lambda b, **s: FakeConsumer(
        b, {0: records(0, 3), 1: records(1, 2)}, **s)))
    assert consumed.records == 5 and consumed.bytes > 0
    with pytest.raises(KafkaError) as info:
        asyncio.run(bench_consume(["h:1"], "orders", 10, 1, timeout_ms=30,
                                  consumer_factory=lambda b, **s: FakeConsumer(b, {0: records(0, 3)}, **s)))
    assert info.value.code == ErrorCode.REQUEST_TIMED_OUT


def test_consume_command_passes_offset_zero_and_from_beginning(monkeypatch) -> None:
    import cli.consume as consume_module
    from cli import main as cli_main

    calls = []

    async def fake_consume(bootstrap, topic, settings, emit, **kwargs):
        calls.append(kwargs)
        return kwargs["max_messages"] or 0

    monkeypatch.setattr(consume_module, "consume", fake_consume)
    monkeypatch.setenv("BROKERLAB_BOOTSTRAP", "h:1")
    assert cli_main.run(["consume", "t", "--partition", "2", "--offset", "0", "--max-messages", "1"]) == 0
    assert cli_main.run(["consume", "t", "--from-beginning", "--max-messages", "1"]) == 0
    assert cli_main.run(["consume", "t", "--max-messages", "1"]) == 0
    assert [(c["partition"], c["offset"]) for c in calls] == [(2, 0), (None, "earliest"), (None, "latest")]
    assert cli_main.run(["consume", "t", "--offset", "3"]) == 2  # --offset needs --partition


def test_bench_produce_throughput_caps_the_send_rate() -> None:
    # 400 records at 2000 records/s cannot finish in less than ~0.2 s; uncapped they take far less.
    capped = asyncio.run(bench_produce(["h:1"], "orders", 400, 10, producer_factory=FakeProducer,
                                       sample_every=10, throughput=2000))
    assert capped.elapsed_s >= 0.19 and capped.settings["throughput"] == 2000
    assert capped.records_per_sec <= 2000 * 1.05
