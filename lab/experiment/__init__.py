"""Failover experiments: scenarios as data, workloads, the nemesis, a runner over pluggable
targets (local processes, docker-compose), and reports (results.json, summary.txt, plots, HTML)."""
