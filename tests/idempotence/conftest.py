"""The idempotent producer's tests reuse the in-process replication harness (tests/replication) and
the real-process cluster fixtures (tests/integration)."""

import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
for folder in ("replication", "integration", "failover"):
    if str(TESTS / folder) not in sys.path:
        sys.path.insert(0, str(TESTS / folder))

from real_cluster import cluster, cluster_factory  # noqa: E402,F401  (pytest fixtures)
