"""Container health check: the node's own gRPC health service (grpc.health.v1) must say SERVING.

    python /opt/brokerlab/libexec/healthcheck.py [HOST:PORT]

The address defaults to the node's listener (BROKERLAB_LISTEN, or the role's default port) on
127.0.0.1. A broker answers SERVING once it is registered, unfenced and caught up with the
metadata journal; the controller once its journal is replayed. Exit 0 = healthy, 1 = not.
"""

from __future__ import annotations

import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

DEFAULT_PORTS = {"controller": "9090", "broker": "9092"}
TIMEOUT_S = 1.5


def address_of(env) -> str:
    listen = env.get("BROKERLAB_LISTEN", "").strip()
    port = listen.rpartition(":")[2] if listen else DEFAULT_PORTS.get(env.get("BROKERLAB_ROLE", ""), "9092")
    return f"127.0.0.1:{port}"


def main(argv: list[str]) -> int:
    address = argv[0] if argv else address_of(os.environ)
    with grpc.insecure_channel(address) as channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=TIMEOUT_S)
        except grpc.RpcError as exc:
            print(f"{address}: {exc.code().name}")
            return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    print(f"{address}: {status}")
    return 0 if response.status == health_pb2.HealthCheckResponse.SERVING else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
