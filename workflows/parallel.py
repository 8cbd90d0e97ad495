"""Train one batch of seeds on several processes: ``train_split(config, workers)``.

Run ``r`` of a batch uses seed ``seed + r`` whatever batch it is in (a run is
reproducible on its own), so a batch split into contiguous seed ranges, each trained
in its own process, gives the history of the whole batch once the ranges are
concatenated along the run axis (:meth:`simulator.History.concat`). Up to float
rounding: a range's runs are advanced in another vectorized batch.
"""

from __future__ import annotations

import os
import time
import warnings
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from simulator import History, SimulationConfig, train


def _train_range(job: tuple[str, int, int]) -> tuple[History, float]:
    config_json, seed, n_seeds = job
    config = SimulationConfig.from_json(config_json).replace(seed=seed, n_seeds=n_seeds)
    cpu = time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")          # the parent warns once, not each worker
        history = train(config).history
    return history, time.process_time() - cpu


def train_split(config: SimulationConfig, workers: int | None = None):
    """The history of ``config``'s batch, trained as ``workers`` contiguous seed ranges
    in parallel processes (default: all cores). Returns ``(history, cpu_seconds)``
    with each worker's CPU time."""
    workers = min(workers or os.cpu_count() or 1, config.n_seeds)
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    bounds = np.linspace(0, config.n_seeds, workers + 1).astype(int)
    jobs = [(config.to_json(), config.seed + int(a), int(b - a))
            for a, b in zip(bounds[:-1], bounds[1:])]
    if workers == 1:
        done = [_train_range(jobs[0])]
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            done = list(pool.map(_train_range, jobs))
    return History.concat(config, [h for h, _ in done]), [c for _, c in done]
