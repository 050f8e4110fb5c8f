"""A stand-in for ``python -m controller`` / ``python -m node`` in LocalCluster tests.

It accepts the process-contract flags, serves the gRPC health service (SERVING at once), logs
a logfmt line to stderr and exits 0 on SIGTERM. ``FAKE_NODE_EXIT=<broker id>`` makes that
broker exit with code 3 at start-up; ``FAKE_NODE_IGNORE_TERM=1`` makes it ignore SIGTERM.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--node-id", type=int)
    parser.add_argument("--broker-id", type=int)
    parser.add_argument("--listen", required=True)
    parser.add_argument("--controller")
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--config", action="append", default=[])
    parser.add_argument("--seed")
    args = parser.parse_args()
    name = "controller" if args.broker_id is None else f"broker-{args.broker_id}"
    if args.broker_id is not None and os.environ.get("FAKE_NODE_EXIT") == str(args.broker_id):
        print(f"level=error node={name} event=StartupFailed reason=asked-to", file=sys.stderr)
        return 3
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    server.add_insecure_port(args.listen)
    server.start()
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    print(f"level=info node={name} event=NodeStarted listen={args.listen} config={args.config}", file=sys.stderr)
    stop = threading.Event()
    if os.environ.get("FAKE_NODE_IGNORE_TERM"):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    else:
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    server.stop(0)
    print(f"level=info node={name} event=NodeStopped", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
