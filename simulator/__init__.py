"""signgd-transformer-sim: how SignGD trains a two-layer transformer.

A pure-NumPy simulator of the setting of Li et al. (2024), "On the Optimization and
Generalization of Two-layer Transformers with Sign Gradient Descent".

>>> from simulator import SimulationConfig, train
>>> result = train(SimulationConfig(steps=100))
>>> result.history["train_loss"].shape
(101, 1)
"""

from .config import ConfigError, SimulationConfig
from .history import History
from .training import NonFiniteError, TrainingResult, train

__all__ = ["ConfigError", "History", "NonFiniteError", "SimulationConfig", "TrainingResult",
           "train", "run"]
__version__ = "0.2.0"


def run(config: SimulationConfig, *, progress: bool = False) -> History:
    """Run ``config`` on its engine and return the recorded history."""
    return train(config, progress=progress).history
