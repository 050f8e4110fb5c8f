"""The issue-3 commands: leader elect, topic describe filters, cluster stop-broker/start-broker (fakes only)."""

from __future__ import annotations

import argparse
import asyncio
import json

import pytest
from cli_fakes import FakeAdmin, PartitionDescription, TopicDescription, topic

import cli.cluster as cli_cluster
import cli.leader as cli_leader
import cli.main as cli_main
import cli.topic as cli_topic
from brokerlab.errors import ErrorCode, KafkaError
from client.admin import ElectionResult


class ElectingAdmin(FakeAdmin):
    """FakeAdmin that answers elect_leaders from a table and remembers what it was asked."""

    def __init__(self, results) -> None:
        super().__init__({})
        self.results = results
        self.asked: list = []

    async def elect_leaders(self, election_type="preferred", partitions=None):
        self.asked.append((election_type, partitions))
        return self.results


def result(partition: int, code: int = ErrorCode.NONE, leader: int = 1, epoch: int = 3) -> ElectionResult:
    error = None if code == ErrorCode.NONE else KafkaError(code, f"orders-{partition}: nope")
    return ElectionResult("orders", partition, error, leader, epoch)


def run(argv, capsys):
    code = cli_main.run(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def admin(monkeypatch):
    original = cli_leader.elect

    def install(results):
        made: list[ElectingAdmin] = []

        def factory(bootstrap):
            made.append(ElectingAdmin(results))
            return made[-1]

        async def elect(bootstrap, election_type, partitions, admin_factory=None):
            return await original(bootstrap, election_type, partitions, admin_factory=factory)

        monkeypatch.setattr(cli_leader, "elect", elect)
        return made

    return install


# ---- leader elect ----


def test_leader_elect_parses_and_names_the_partitions(admin, capsys):
    made = admin([result(2)])
    code, out, err = run(["leader", "elect", "--topic", "orders", "--partition", "2", "--bootstrap", "h:1"], capsys)
    assert (code, err) == (0, "")
    assert made[0].asked == [("preferred", [("orders", 2)])] and made[0].closed
    assert "orders" in out and "elected" in out and "LEADER_EPOCH" in out
    made = admin([result(0, ErrorCode.ELECTION_NOT_NEEDED)])
    code, out, _ = run(["leader", "elect", "--topic", "orders", "--type", "unclean", "--bootstrap", "h:1"], capsys)
    assert code == 0 and made[0].asked == [("unclean", ["orders"])] and "not needed" in out


def test_leader_elect_everything_with_nothing_to_do(admin, capsys):
    made = admin([])
    code, out, _ = run(["leader", "elect", "--bootstrap", "h:1"], capsys)
    assert code == 0 and made[0].asked == [("preferred", None)]
    assert "no preferred election needed" in out


def test_leader_elect_json_and_failure_exit_code(admin, capsys):
    admin([result(0), result(1, ErrorCode.PREFERRED_LEADER_NOT_AVAILABLE, leader=2, epoch=1)])
    code, out, err = run(["leader", "elect", "--json", "--bootstrap", "h:1"], capsys)
    assert code == 1
    data = json.loads(out)
    assert data == {
        "election_type": "preferred",
        "results": [
            {"topic": "orders", "partition": 0, "outcome": "elected", "error": None, "leader": 1, "leader_epoch": 3},
            {"topic": "orders", "partition": 1, "outcome": "PREFERRED_LEADER_NOT_AVAILABLE",
             "error": "PREFERRED_LEADER_NOT_AVAILABLE", "leader": 2, "leader_epoch": 1},
        ],
    }
    assert err.startswith("error: PREFERRED_LEADER_NOT_AVAILABLE: 1 of 2 partitions") and len(err.splitlines()) == 1


def test_leader_elect_usage_errors(capsys):
    for argv in (["leader", "elect", "--partition", "1"], ["leader", "elect", "--type", "dirty"],
                 ["leader", "elect", "--topic", "t", "--partition", "-1"]):
        code, _, err = run(argv + ["--bootstrap", "h:1"], capsys)
        assert code == 2 and err.startswith("error: INVALID_REQUEST: "), argv


def test_admin_elect_leaders_builds_the_request():
    from client.admin import _election_type, _topic_partitions

    assert [(t.topic, list(t.partitions)) for t in _topic_partitions([("a", 1), ("a", 0), "b", ("b", 2)])] == [
        ("a", [1, 0]), ("b", [])
    ]
    with pytest.raises(KafkaError):
        _election_type("dirty")


# ---- topic describe filters ----


def replicated_topics() -> list:
    parts = [
        PartitionDescription(0, 1, 4, [1, 2, 3], [1, 2, 3], 10, 10),  # healthy
        PartitionDescription(1, 2, 2, [2, 3, 1], [2, 3], 10, 10),  # under-replicated, at min ISR
        PartitionDescription(2, 3, 7, [3, 1, 2], [3], 10, 9),  # under-replicated, under min ISR
        PartitionDescription(3, -1, 5, [1, 2, 3], [1], -1, -1),  # unavailable
    ]
    strict = TopicDescription("strict", "id-strict", [PartitionDescription(0, 1, 0, [1, 2, 3], [1, 2, 3], 0, 0)],
                              {"min.insync.replicas": "3"})
    return [TopicDescription("orders", "id-orders", parts, {}), strict, topic("other", 1)]


def filtered(*flags: str) -> dict:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    cli_topic.register(sub)
    args = parser.parse_args(["topic", "describe", *flags])
    keep = cli_topic.partition_filter(args)
    data = cli_topic.describe_json(replicated_topics())
    data = cli_topic.filter_partitions(data, keep)
    return {t["name"]: [p["partition"] for p in t["partitions"]] for t in data["topics"]}


def test_describe_filters_follow_kafka_topics():
    assert filtered("--under-replicated") == {"orders": [1, 2], "other": [0]}
    assert filtered("--under-min-isr") == {"orders": [2, 3], "other": [0]}
    assert filtered("--under-min-isr", "--min-insync-replicas", "1") == {"orders": [3]}
    assert filtered("--unavailable") == {"orders": [3]}


def test_describe_filter_uses_the_topic_min_isr_when_known():
    data = cli_topic.describe_json(replicated_topics())
    strict = next(t for t in data["topics"] if t["name"] == "strict")
    strict["partitions"][0]["isr"] = [1, 2]
    args = argparse.Namespace(under_replicated=False, under_min_isr=True, unavailable=False, min_insync_replicas=2)
    keep = cli_topic.partition_filter(args)
    assert [t["name"] for t in cli_topic.filter_partitions(data, keep)["topics"]] == ["orders", "strict", "other"]


def test_describe_filters_are_exclusive_and_show_leader_epoch(capsys, monkeypatch):
    code, _, err = run(["topic", "describe", "--unavailable", "--under-replicated", "--bootstrap", "h:1"], capsys)
    assert code == 2 and "not allowed with" in err

    async def fake(bootstrap, action):
        return await action(FakeAdmin({t.name: t for t in replicated_topics()}))

    monkeypatch.setattr(cli_topic, "with_admin", fake)
    code, out, _ = run(["topic", "describe", "--unavailable", "--bootstrap", "h:1"], capsys)
    assert code == 0 and "LEADER_EPOCH" in out
    row = [line.split() for line in out.splitlines() if line.startswith("3 ")]
    assert row == [["3", "-1", "5", "1,2,3", "1", "-1", "-1"]]
    code, out, _ = run(["topic", "describe", "other", "--unavailable", "--bootstrap", "h:1"], capsys)
    assert code == 0 and out.strip() == "no matching partitions"


# ---- cluster stop-broker / start-broker ----


class FakeNode(argparse.Namespace):
    pass


class FakeCluster:
    def __init__(self, clean: bool = True) -> None:
        self.nodes = [FakeNode(id=0, name="controller", role="controller", pid=10, address="a:0", log="c.log"),
                      FakeNode(id=2, name="broker-2", role="broker", pid=12, address="a:2", log="b2.log")]
        self.running = {"controller": True, "broker-2": True}
        self.clean = clean
        self.calls: list = []

    @property
    def brokers(self):
        return [n for n in self.nodes if n.role == "broker"]

    def node(self, name: str):
        for n in self.nodes:
            if name in (n.name, str(n.id)):
                return n
        raise KafkaError(ErrorCode.INVALID_REQUEST, f"no node {name!r}")

    def is_running(self, node) -> bool:
        return self.running[node.name]

    def stop_node(self, name, timeout_s=10.0, kill=False):
        self.calls.append(("stop", name, timeout_s, kill))
        self.running[name] = False
        return self.clean

    def start_node(self, name, timeout_s=30.0, wait=True):
        self.calls.append(("start", name, timeout_s, wait))
        self.running[name] = True


def test_stop_and_start_broker(capsys, monkeypatch):
    cluster = FakeCluster()
    monkeypatch.setattr(cli_cluster, "find_cluster", lambda data_dir: cluster)
    code, out, _ = run(["cluster", "stop-broker", "2", "--timeout", "3"], capsys)
    assert code == 0 and cluster.calls == [("stop", "broker-2", 3.0, False)]
    assert out.startswith("broker-2 stopped cleanly in ")
    code, out, _ = run(["cluster", "stop-broker", "2"], capsys)
    assert code == 0 and out.strip() == "broker-2 is not running"
    code, out, _ = run(["cluster", "start-broker", "2"], capsys)
    assert code == 0 and cluster.calls[-1] == ("start", "broker-2", 30.0, True)
    assert out.startswith("broker-2 started (pid 12) and healthy at a:2")


def test_stop_broker_errors(capsys, monkeypatch):
    cluster = FakeCluster(clean=False)
    monkeypatch.setattr(cli_cluster, "find_cluster", lambda data_dir: cluster)
    code, _, err = run(["cluster", "stop-broker", "2"], capsys)
    assert code == 1 and err.startswith("error: REQUEST_TIMED_OUT: broker-2 did not exit")
    code, _, err = run(["cluster", "stop-broker", "0"], capsys)
    assert code == 2 and "controller is not a broker" in err
    code, _, err = run(["cluster", "start-broker", "7"], capsys)
    assert code == 1 and err.startswith("error: INVALID_REQUEST: no node '7'")


def test_elect_runs_through_admin_close_even_on_error():
    class Failing(ElectingAdmin):
        async def elect_leaders(self, election_type="preferred", partitions=None):
            raise KafkaError(ErrorCode.INVALID_REQUEST, "refused")

    made = []
    with pytest.raises(KafkaError):
        asyncio.run(cli_leader.elect(["h:1"], "preferred", None, admin_factory=lambda b: made.append(Failing([])) or made[-1]))
    assert made[0].closed
