"""Throughput ratios on real processes, measured in one run with `lab.bench` (what
`brokerlab bench produce` runs), never absolute times: CI machines differ and are shared.

- Idempotence on vs off (issue 7's budget: it costs at most 10 % of acks=all throughput).
- RF 3 acks=all vs RF 1 acks=1 (issue 3 reports this ratio beside every replicated figure).

Runs alternate (on, off, on, off, ...) so a burst of load from elsewhere hits both sides, and
the median pair ratio is compared. The asserted floors sit below the targets because a 2-core
CI machine running other tests can swing single runs by ±30 %; the figures are printed (run
with -s) and the closing notes report the full-size measurements.
"""

from __future__ import annotations

import asyncio
import statistics

import pytest

from lab.bench import bench_produce

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(180)]

RECORDS = 100_000
RECORD_SIZE = 100
BATCH_1000_RECORDS = 126_061  # bytes for 1000 records of 100 bytes (as in the closing notes)
PAIRS = 5


def _rate(bootstrap: list[str], topic: str, acks: str, **producer_settings) -> float:
    result = asyncio.run(bench_produce(bootstrap, topic, RECORDS, RECORD_SIZE, acks=acks,
                                       batch_size=BATCH_1000_RECORDS, linger_ms=5,
                                       producer_settings=producer_settings))
    assert result.failed == 0, result.first_error
    return result.records_per_sec


def _pair(index: int, first, second) -> tuple[float, float]:
    """Both sides of one pair, in turn first (a warming cache or a burst of load elsewhere then
    favours neither side)."""
    if index % 2:
        b = second()
        return first(), b
    return first(), second()


def _median_ratio(pairs: list[tuple[float, float]]) -> float:
    return statistics.median(a / b for a, b in pairs)


def test_idempotence_and_replication_cost_ratios(cluster) -> None:
    cluster.create_topic("rf3", partitions=3, replication_factor=3, configs={"min.insync.replicas": "2"})
    cluster.create_topic("rf1", partitions=3, replication_factor=1)
    bootstrap = cluster.local.bootstrap_servers()
    _rate(bootstrap, "rf3", "all")  # warm-up: connections, metadata, producer ids, page cache

    idempotence = [_pair(i, lambda: _rate(bootstrap, "rf3", "all", enable_idempotence=True),
                         lambda: _rate(bootstrap, "rf3", "all", enable_idempotence=False)) for i in range(PAIRS)]
    replication = [_pair(i, lambda: _rate(bootstrap, "rf3", "all"), lambda: _rate(bootstrap, "rf1", "1"))
                   for i in range(PAIRS)]

    idempotence_ratio = _median_ratio(idempotence)
    replication_ratio = _median_ratio(replication)
    print(f"\nidempotence on/off (records/s): {[(round(a), round(b)) for a, b in idempotence]}"
          f" median ratio {idempotence_ratio:.2f}")
    print(f"RF3 acks=all / RF1 acks=1 (records/s): {[(round(a), round(b)) for a, b in replication]}"
          f" median ratio {replication_ratio:.2f}")
    # Target 0.90 (at most 10 % cost); measured 1.03 at full size. The floor catches a real
    # regression (a per-record cost in the sequence bookkeeping) without flaking on noise.
    assert idempotence_ratio >= 0.7, idempotence
    # Measured 0.76 at full size; replication that halves throughput is a regression.
    assert replication_ratio >= 0.4, replication
