"""The training loop, once, for both engines.

An *engine* provides the state and the math of one representation of the model
(:class:`simulator.full.FullEngine`: the weights; :class:`simulator.reduced.ReducedEngine`:
the theory's quantities)::

    engine.R                          runs it advances together
    engine.block                      records whose held-out metrics are evaluated at once
    engine.initial_params()           the state at step 0
    engine.evaluate(params, batch)    forward (and backward) pass; ``.margin`` (R, n); the
                                      gradient of the mini-batch ``batch`` (R, n) bool, or
                                      of every sample when ``None``
    engine.update(params, ev, opt_state, t) -> opt_state
                                      one optimizer step, in place
    engine.snapshot(params, ev)       what a record needs of this step (arrays of one shape at
                                      every record, which the loop copies; ``margin`` (R, n))
    engine.record(snaps)              the schema's quantities and test metrics of a block of
                                      snapshots, each array with a leading axis K
    engine.per_run()                  the per-run arrays of the history

:func:`run_loop` owns the loop: evaluate, check, record, update. A record costs one
snapshot, copied into the block's buffers (:class:`Pending`); every ``engine.block``
records the engine computes the recorded arrays for all of them in one vectorized
pass. The loop derives what every engine records the same way
from the margins (``l'``, training loss and error, the first underflow of ``l'``) and
the wall time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from .config import SimulationConfig
from .memory import check_memory
from .data import minibatch
from .history import History, NonFiniteError, Recorder, nonfinite_hint
from .model import logistic_loss, loss_derivative
from .progress import Progress


@dataclass
class TrainingResult:
    """A finished batch of runs: its history and each chunk's final state (not saved)."""

    history: History
    finals: list                  # per chunk of runs: (runs slice, engine, final params)

    @property
    def W(self) -> np.ndarray:
        """Final weights ``(R, M, D)`` on the basis (full engine)."""
        (_, engine, W), = self.finals
        return W

    @property
    def problem(self):
        """The full engine's :class:`~simulator.problem.TrainingProblem`."""
        (_, engine, _), = self.finals
        return engine.problem


def run_loop(engine, config: SimulationConfig, recorder: Recorder, rs: slice,
             on_step=lambda t: None):
    """Train the runs ``rs`` of ``recorder``'s batch on ``engine`` for
    ``config.steps`` steps, recording at ``recorder.steps``. Returns the final state.

    Raises
    ------
    NonFiniteError
        When a training margin becomes non-finite (the message names the step, the
        run's seed and the sample).
    """
    params = engine.initial_params()
    opt_state = None
    rec_steps = recorder.steps.tolist()                             # Python ints: a cheap test per step
    seeds = recorder.arrays["seeds"][rs]
    underflow = recorder.arrays["underflow_step"][rs]               # (R, n) view
    pending = Pending(engine.block)
    start, k, walls = time.perf_counter(), 0, []
    full_batch = config.batch_size is None or config.batch_size == config.n
    for t in range(config.steps + 1):
        batch = None if full_batch else minibatch(seeds, t, config.n, config.batch_size)
        ev = engine.evaluate(params, batch)
        margin = ev.margin                                           # (R, n)
        if not np.abs(margin).max(initial=0.0) <= 700.0:             # non-finite, or l' near 0
            _check_margins(t, margin, underflow, seeds, config)
        if k < len(rec_steps) and rec_steps[k] == t:
            snap = engine.snapshot(params, ev)
            if batch is not None:                                    # a full batch is filled in at the flush
                snap["batch"] = batch
            pending.add(k, snap)
            if pending.full() or t == config.steps:
                _flush(engine, recorder, rs, pending)
            walls.append(time.perf_counter() - start)                # seconds to record k
            k += 1
        if t < config.steps:
            opt_state = engine.update(params, ev, opt_state, t)
            on_step(t + 1)
    recorder.arrays["wall_time"][:k] += walls
    return params


class Pending:
    """The snapshots of up to ``size`` records, copied into buffers ``(size, ...)``
    allocated at the first record: the step's own arrays are then free for the next
    step, and the block needs no stacking."""

    def __init__(self, size: int):
        self.size, self.ks, self.buffers = size, [], None

    def add(self, k: int, snap: dict[str, np.ndarray]) -> None:
        """Copy record ``k``'s snapshot into the next slot."""
        if self.buffers is None:
            self.buffers = {name: np.empty((self.size,) + a.shape, a.dtype) for name, a in snap.items()}
        slot = len(self.ks)
        for name, a in snap.items():
            self.buffers[name][slot] = a
        self.ks.append(k)

    def full(self) -> bool:
        return len(self.ks) == self.size

    def take(self) -> tuple[slice | list[int], dict[str, np.ndarray]]:
        """The pending record indices (a slice when consecutive) and their snapshots
        (views of the buffers, leading axis K); the block is empty afterwards."""
        ks, K = self.ks, len(self.ks)
        self.ks = []
        if ks[-1] - ks[0] == K - 1:                                   # consecutive: a slice
            ks = slice(ks[0], ks[-1] + 1)
        return ks, {name: b[:K] for name, b in self.buffers.items()}


def _flush(engine, recorder: Recorder, rs: slice, pending: Pending) -> None:
    """The recorded arrays of the pending records, in one vectorized pass (written
    into the recorder before the buffers are reused)."""
    ks, snaps = pending.take()
    margin = snaps["margin"]                                         # (K, R, n)
    recorder.write(ks, rs, {"margin": margin, "lprime": loss_derivative(margin),
                            "batch": snaps.pop("batch", True),               # True: every sample
                            "train_loss": logistic_loss(margin).mean(-1),
                            "train_error": (margin <= 0).mean(-1), **engine.record(snaps)})


def _check_margins(t: int, margin: np.ndarray, underflow: np.ndarray, seeds, config) -> None:
    """Raise on a non-finite margin; note the first step at which ``l'`` is 0."""
    bad = ~np.isfinite(margin)
    if bad.any():
        r, i = np.argwhere(bad)[0]
        raise NonFiniteError(
            f"non-finite output at step {t} (run seed {int(seeds[r])}, sample {i}): "
            f"margin = {float(margin[r, i])}; {nonfinite_hint(config)}")
    newly = (loss_derivative(margin) == 0.0) & (underflow < 0)
    underflow[newly] = t


def engine_chunks(config: SimulationConfig, problem=None) -> list:
    """``(runs, make)`` pairs: the slice of the batch's runs and a function building the
    engine of ``config.engine`` for them (the reduced engine splits a large batch into
    chunks of bounded memory; ``problem``: a prebuilt full-engine problem)."""
    if config.engine == "reduced":
        from .reduced import reduced_chunks
        return reduced_chunks(config)
    from .full import FullEngine
    from . import problem as problems

    def build():
        if problem is not None:
            return FullEngine(problem)
        if config.data == "digits":
            from .digits import build_digits_problem, digits_data
            return FullEngine(build_digits_problem(digits_data(config), config))
        return FullEngine(problems.build_problem(config))
    return [(slice(0, config.n_seeds), build)]


@np.errstate(over="ignore", invalid="ignore")  # non-finite values raise NonFiniteError instead
def train(config: SimulationConfig, *, progress: bool = False, problem=None) -> TrainingResult:
    """Train every run of ``config`` on its engine; the result holds the recorded history.

    Parameters
    ----------
    config : SimulationConfig
    progress : bool
        Show a progress line on stderr when the run takes more than a few seconds.
    problem : TrainingProblem, optional
        Prebuilt data and initial weights for the full engine (e.g. digits).

    Raises
    ------
    NonFiniteError
        When a model output becomes non-finite; the message names the step.
    ReductionError
        When ``engine='reduced'`` and the reduction is not exact for ``config``.
    ConfigError
        When the run would not fit in memory (:func:`~simulator.memory.check_memory`).
    """
    if problem is None:
        check_memory(config)                 # refuse before allocating (one line)
    recorder = Recorder(config)
    chunks = engine_chunks(config, problem)
    bar = Progress(config.steps * len(chunks), f"{config.optimizer} x{config.n_seeds} "
                   f"({config.engine} engine)", enabled=progress)
    finals = []
    for j, (rs, make) in enumerate(chunks):
        engine = make()
        recorder.write_per_run(rs, engine.per_run())
        params = run_loop(engine, config, recorder, rs, lambda t: bar.update(j * config.steps + t))
        finals.append((rs, engine, params))
    bar.close()
    return TrainingResult(recorder.history(), finals)
