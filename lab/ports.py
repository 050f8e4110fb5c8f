"""Free TCP ports on the loopback interface for local clusters and tests.

The OS picks each port (bind to port 0). All sockets stay open until every port is chosen, so
one call never returns the same port twice. Another process may still grab a port before our
node binds it; the cluster runner then sees the node exit and reports its log.
"""

from __future__ import annotations

import socket

LOOPBACK = "127.0.0.1"


def free_ports(count: int, host: str = LOOPBACK) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((host, 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def free_port(host: str = LOOPBACK) -> int:
    return free_ports(1, host)[0]
