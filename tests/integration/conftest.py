"""Fixtures for integration tests: see real_cluster.py (``cluster``, ``cluster_factory``)."""

from real_cluster import cluster, cluster_factory  # noqa: F401  (pytest fixtures)
