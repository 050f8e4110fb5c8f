"""``python -m controller`` as a real process on 127.0.0.1: serve, SIGTERM, restart on the same journal."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from brokerlab.errors import ErrorCode
from brokerlab.v1 import controller_pb2 as pb
from brokerlab.v1 import controller_pb2_grpc
from brokerlab.v1.common_pb2 import Endpoint
from lab.health import wait_for_serving
from lab.ports import free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]
ROOT = Path(__file__).resolve().parents[2]
RPC_TIMEOUT_S = 10


class ControllerProcess:
    def __init__(self, data_dir: Path, log_path: Path, *extra: str) -> None:
        self.address = f"127.0.0.1:{free_port()}"
        self.log_path = log_path
        self._log = open(log_path, "ab")
        command = [sys.executable, "-m", "controller", "--node-id", "0", "--listen", self.address,
                   "--data-dir", str(data_dir), "--seed", "7", *extra]
        self.process = subprocess.Popen(command, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT)
        self.channel = grpc.insecure_channel(self.address)
        self.stub = controller_pb2_grpc.ControllerServiceStub(self.channel)

    def wait_serving(self) -> None:
        result = wait_for_serving({"controller": self.address}, lambda _: self.process.poll() is None, timeout_s=30)
        assert result.ready, f"controller not SERVING ({result.statuses}):\n{self.log_path.read_text()}"

    def stop(self) -> int:
        self.channel.close()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=15)
        finally:
            self._log.close()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=15)


def test_serves_survives_sigterm_and_restarts_from_its_journal(tmp_path: Path) -> None:
    data_dir = tmp_path / "controller"
    log_path = tmp_path / "controller.log"
    first = ControllerProcess(data_dir, log_path, "--config", "default.replication.factor=1")
    try:
        first.wait_serving()
        stub = first.stub
        registered = stub.RegisterBroker(
            pb.RegisterBrokerRequest(broker_id=1, endpoint=Endpoint(host="127.0.0.1", port=9092), incarnation_id="it-1"),
            timeout=RPC_TIMEOUT_S,
        )
        assert registered.error_code == 0
        beat = stub.BrokerHeartbeat(
            pb.BrokerHeartbeatRequest(broker_id=1, broker_epoch=registered.broker_epoch, current_metadata_offset=registered.broker_epoch),
            timeout=RPC_TIMEOUT_S,
        )
        assert not beat.is_fenced
        created = stub.CreateTopics(
            pb.CreateTopicsRequest(topics=[pb.CreatableTopic(name="orders", num_partitions=3, replication_factor=-1)]),
            timeout=RPC_TIMEOUT_S,
        )
        assert [(t.name, t.error_code, t.num_partitions) for t in created.topics] == [("orders", 0, 3)]
        # A long-poll at the journal end comes back empty once max_wait_ms passes (the driver's timer).
        end = stub.DescribeCluster(pb.DescribeClusterRequest(), timeout=RPC_TIMEOUT_S).metadata_end_offset
        waited = stub.FetchMetadataRecords(
            pb.FetchMetadataRecordsRequest(broker_id=1, fetch_offset=end, max_wait_ms=100), timeout=RPC_TIMEOUT_S
        )
        assert (waited.error_code, len(waited.records), waited.end_offset) == (0, 0, end)
        cluster_id = stub.DescribeCluster(pb.DescribeClusterRequest(), timeout=RPC_TIMEOUT_S).cluster_id
        assert first.stop() == 0
    finally:
        first.kill()
    log = log_path.read_text()
    assert "Traceback" not in log
    assert "event=TopicCreated topic=orders" in log and "event=ControllerStopped" in log

    second = ControllerProcess(data_dir, log_path)
    try:
        second.wait_serving()
        described = second.stub.DescribeCluster(pb.DescribeClusterRequest(), timeout=RPC_TIMEOUT_S)
        assert described.cluster_id == cluster_id
        assert described.metadata_end_offset == end
        assert [b.broker_id for b in described.brokers] == [1]
        records = second.stub.FetchMetadataRecords(pb.FetchMetadataRecordsRequest(broker_id=1, fetch_offset=0), timeout=RPC_TIMEOUT_S).records
        assert [r.topic.name for r in records if r.WhichOneof("record") == "topic"] == ["orders"]
        again = second.stub.CreateTopics(
            pb.CreateTopicsRequest(topics=[pb.CreatableTopic(name="orders", num_partitions=1, replication_factor=1)]),
            timeout=RPC_TIMEOUT_S,
        )
        assert again.topics[0].error_code == ErrorCode.TOPIC_ALREADY_EXISTS
        assert second.stop() == 0
    finally:
        second.kill()
    assert "Traceback" not in log_path.read_text()


def test_bad_flags_exit_2_with_one_line(tmp_path: Path) -> None:
    for flags in (["--listen", "nowhere", "--data-dir", str(tmp_path)],
                  ["--listen", "127.0.0.1:0", "--data-dir", str(tmp_path), "--config", "no.such.key=1"],
                  ["--listen", "127.0.0.1:0", "--data-dir", str(tmp_path), "--config", "broker.session.timeout.ms=0"],
                  ["--data-dir", str(tmp_path)]):
        done = subprocess.run([sys.executable, "-m", "controller", *flags], cwd=ROOT, capture_output=True, text=True, timeout=30)
        assert done.returncode == 2, (flags, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("controller: error:"), done.stderr
