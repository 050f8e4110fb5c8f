"""Readiness: wait until every node answers SERVING on the gRPC health service, with a deadline.

A node whose process exits while we wait fails the wait at once (no point waiting out the
deadline for a process that is gone).
"""

from __future__ import annotations

import time
from typing import Callable, Mapping

from lab.rpc.health import NOT_SERVING, SERVING, UNREACHABLE, HealthProber

__all__ = ["SERVING", "NOT_SERVING", "UNREACHABLE", "ReadinessResult", "wait_for_serving", "probe_all"]

EXITED = "EXITED"


class ReadinessResult:
    def __init__(self, statuses: dict[str, str], elapsed_s: float) -> None:
        self.statuses = statuses
        self.elapsed_s = elapsed_s

    @property
    def ready(self) -> bool:
        return all(status == SERVING for status in self.statuses.values())

    @property
    def exited(self) -> list[str]:
        return [name for name, status in self.statuses.items() if status == EXITED]

    @property
    def not_ready(self) -> list[str]:
        return [name for name, status in self.statuses.items() if status != SERVING]


def wait_for_serving(
    addresses: Mapping[str, str],
    is_running: Callable[[str], bool],
    timeout_s: float,
    interval_s: float = 0.05,
) -> ReadinessResult:
    """Poll every node (name -> address) until all are SERVING, one has exited, or time is up."""
    start = time.monotonic()
    deadline = start + timeout_s
    statuses = {name: UNREACHABLE for name in addresses}
    with HealthProber() as prober:
        while True:
            for name, address in addresses.items():
                if statuses[name] == SERVING:
                    continue
                if not is_running(name):
                    statuses[name] = EXITED
                    return ReadinessResult(statuses, time.monotonic() - start)
                remaining = max(0.05, min(1.0, deadline - time.monotonic()))
                statuses[name] = prober.probe(address, timeout_s=remaining)
            if all(status == SERVING for status in statuses.values()) or time.monotonic() >= deadline:
                return ReadinessResult(statuses, time.monotonic() - start)
            time.sleep(interval_s)


def probe_all(addresses: Mapping[str, str], timeout_s: float = 1.0) -> dict[str, str]:
    with HealthProber() as prober:
        return {name: prober.probe(address, timeout_s) for name, address in addresses.items()}
