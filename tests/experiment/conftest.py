"""Experiment tests reuse the real-cluster fixtures of tests/integration."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))

from real_cluster import cluster, cluster_factory  # noqa: E402,F401  (pytest fixtures)
