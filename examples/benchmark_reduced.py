"""Benchmark of the reduced engine (simulator/reduced.py) against the full engine.

    python examples/benchmark_reduced.py            # both parts, about 2 minutes on 2 cores
    python examples/benchmark_reduced.py --part step --repeats 5
    python examples/benchmark_reduced.py --part batch --seeds 10000 --workers 2
    python examples/benchmark_reduced.py --quick --out DIR   # seconds (the test suite)

Part ``step``: per-step time of one run at ``n = 16, s = 20, m_k = m_v = 10``
(SignGD, ``d = 10^6``), without recording (``record_every = steps``: the cost of
a step alone) and with the default recording of every step; best of ``--repeats``
runs of each engine, the engines interleaved so that both see the same load. Wall
time and CPU time of the process are both printed: on a shared machine CPU time
is the fairer comparison (with recording, the test-metric matmuls use several
BLAS threads, so CPU time can exceed wall time).

Part ``batch``: ``--seeds`` runs (default 10,000) of the default config on the
reduced engine, data-free (``reduced_init='distribution'``: with ``d = 2 * 10^4``
about 43% of the default config's seeds share a training coordinate, which the
data-drawn start refuses), recorded every 1000 steps (a history of every step of
10,000 runs would be 50 GB). The seeds are split into ``--workers`` contiguous
ranges, each trained in its own process; run ``r`` uses seed ``r`` whatever the
split, so the merged history is the same as one batch of all seeds
(:func:`workflows.parallel.train_split`).

A correct run prints (numbers from the 2-core machine of docs/reduced.md, which
swing by up to 2x with the load)::

    machine: 2 cores, load average 1.8
    per-step time, n=16 s=20 m_k=m_v=10, 1 run (SignGD), 2000 steps, best of 3 (engines interleaved)
      record_every=steps  full     239 us/step (cpu    239)   reduced   41.7 us/step (cpu   41.5)   ratio wall   5.7  cpu   5.8
      record_every=1      full     898 us/step (cpu    941)   reduced   82.9 us/step (cpu  120.0)   ratio wall  10.8  cpu   7.8
    10000 seeds x 4000 steps of the default config (reduced, 2 worker(s)): wall 37.1 s, CPU per worker 36.4, 34.4 s (...)
      final train loss median 1.33e-04, test loss mean 0.6832, test error mean 0.024
"""

from __future__ import annotations

import json
import os
import time
import warnings
from pathlib import Path

import numpy as np

from _common import parser, positive_int

from simulator import SimulationConfig, train
from simulator.io import atomic_write_text
from simulator.reduced import ReducedTestWarning
from workflows.parallel import train_split


def _timed(fn, config):
    wall, cpu = time.perf_counter(), time.process_time()
    fn(config)
    return time.perf_counter() - wall, time.process_time() - cpu


def _reduced(config):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ReducedTestWarning)
        return train(config)


def per_step(steps: int, repeats: int) -> dict:
    base = SimulationConfig(n=16, s=20, m_k=10, m_v=10, d=10**6, steps=steps)
    print(f"per-step time, n=16 s=20 m_k=m_v=10, 1 run (SignGD), {steps} steps, "
          f"best of {repeats} (engines interleaved)")
    out = {}
    for record_every in (steps, 1):
        config = base.replace(record_every=record_every)
        full, red = [], []
        for _ in range(repeats):
            full.append(_timed(train, config))
            red.append(_timed(_reduced, config.replace(engine="reduced")))
        full = tuple(min(t[i] for t in full) for i in range(2))
        red = tuple(min(t[i] for t in red) for i in range(2))
        label = "record_every=steps" if record_every == steps else "record_every=1    "
        print(f"  {label}  full {1e6 * full[0] / steps:7.0f} us/step (cpu {1e6 * full[1] / steps:6.0f})"
              f"   reduced {1e6 * red[0] / steps:6.1f} us/step (cpu {1e6 * red[1] / steps:6.1f})"
              f"   ratio wall {full[0] / red[0]:5.1f}  cpu {full[1] / red[1]:5.1f}")
        out[f"record_every={record_every}"] = {"full_us": 1e6 * full[0] / steps,
                                              "reduced_us": 1e6 * red[0] / steps}
    return out


def batch(n_seeds: int, workers: int):
    config = SimulationConfig(engine="reduced", reduced_init="distribution",
                              n_seeds=n_seeds, record_every=1000)
    start = time.perf_counter()
    history, cpus = train_split(config, workers)
    wall = time.perf_counter() - start
    loss, test_loss, err = (history[k][-1] for k in ("train_loss", "test_loss", "test_error"))
    print(f"{n_seeds} seeds x {config.steps} steps of the default config "
          f"(reduced, {workers} worker(s)): wall {wall:.1f} s, CPU per worker "
          f"{', '.join(f'{c:.1f}' for c in cpus)} s (the wall time on {workers} idle cores)")
    print(f"  final train loss median {np.median(loss):.2e}, test loss mean {test_loss.mean():.4f}, "
          f"test error mean {err.mean():.3f}")
    return {"seeds": n_seeds, "wall_s": wall, "cpu_s": cpus,
            "train_loss_median": float(np.median(loss))}
    return history


def main(argv=None) -> dict:
    p = parser("benchmark_reduced", __doc__.split("\n\n")[0])
    p.add_argument("--part", choices=("step", "batch", "all"), default="all")
    p.add_argument("--steps", type=positive_int, default=2000)
    p.add_argument("--repeats", type=positive_int, default=3,
                   help="per-step part: best of this many runs of each engine")
    p.add_argument("--seeds", type=positive_int, default=10_000)
    args = p.parse_args(argv)
    if args.quick:                                  # seconds: what the test suite runs
        args.steps, args.repeats, args.seeds = 200, 1, 200
    workers = args.workers or min(2, os.cpu_count() or 1)
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
    result = {}
    if args.part in ("step", "all"):
        result["per_step"] = per_step(args.steps, args.repeats)
    if args.part in ("batch", "all"):
        result["batch"] = batch(args.seeds, workers)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "benchmark_reduced.json", json.dumps(result, indent=1) + "\n")
    print(f"saved {out / 'benchmark_reduced.json'}")
    return result


if __name__ == "__main__":
    main()
