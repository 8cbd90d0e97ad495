"""Shared small fixtures for the test suite (kept minimal on purpose)."""

import pytest

from simulator import SimulationConfig


@pytest.fixture
def tiny_config():
    """A small, fast SignGD config: a run of 30 steps takes a few milliseconds."""
    return SimulationConfig(d=200, n=3, s=4, m_k=2, m_v=2, n_test=20, steps=30,
                            sigma_0=0.05, eta=1e-3, seed=3)
