"""Options for the simulation tests.

``--sim-seed N`` (or ``BROKERLAB_SIM_SEED=N``) narrows every seed sweep to the one seed, which is
how a failing seed is replayed; ``--sim-seeds K`` widens a sweep to K seeds.
"""

from __future__ import annotations

import os

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("sim", "deterministic simulation")
    group.addoption("--sim-seed", type=int, default=None, help="run seed sweeps with this one seed only")
    group.addoption("--sim-seeds", type=int, default=None, help="number of seeds in a sweep")


def _option(config: pytest.Config, name: str) -> int | None:
    try:
        return config.getoption(name)
    except ValueError:  # conftest not loaded at start-up (pytest run from the repository root)
        return None


@pytest.fixture
def sim_seed_override(request: pytest.FixtureRequest) -> int | None:
    value = _option(request.config, "--sim-seed")
    if value is None and os.environ.get("BROKERLAB_SIM_SEED"):
        value = int(os.environ["BROKERLAB_SIM_SEED"])
    return value


@pytest.fixture
def sim_seed_count(request: pytest.FixtureRequest) -> int | None:
    value = _option(request.config, "--sim-seeds")
    if value is None and os.environ.get("BROKERLAB_SIM_SEEDS"):
        value = int(os.environ["BROKERLAB_SIM_SEEDS"])
    return value
