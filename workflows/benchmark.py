"""Benchmarks of the full engine: ``python -m simulator bench [--steps N] [--torch]``.

One run prints (float64 throughout, best of several timings; the figures are from
the same machine at the same time, and the ratios are what count):

1. SignGD per-step time and peak memory for ``n = 16, s = 20, m_k = m_v = 10`` and
   ``d`` in {2*10^3, 2*10^4, 2*10^5, 10^6}, with the time of ``steps`` steps.
   Memory is measured in fresh subprocesses per size, in two ways: the peak of the
   NumPy allocations (``tracemalloc``; NumPy reports its buffers to it) while the
   problem is built and while it is trained, and the peak resident set size of a
   process that builds and trains (:func:`peak_rss_mb`; it includes the interpreter
   and the libraries, about 55 MiB, and is measured without tracemalloc).
   With ``--torch`` the same table has the PyTorch autograd peer (:func:`torch_peer`):
   dense ``d``-dimensional inputs and weights, the same data and initial weights,
   checked against this simulator on the first steps before it is timed; per-step
   time (the mean step of a run of steps, as for the simulator; best of several runs
   with its default thread count and with one thread), peak RSS (its own
   subprocess) and the ratio. PyTorch is the optional ``bench`` extra
   (``pip install ".[bench]"``); without it the benchmark says so.
2. 64 seeds advanced as one vectorized batch against 64 runs one after another.
3. The cost of recording: the built-in main job with ``record_every = 1`` against
   recording only the first and last steps (best of interleaved rounds, as table 1), and
   the record's cost split into its part with one held-out input and the cost per input.

4. The main job's wall time, installed, as a user runs it.
5. The sparse products of the step (:class:`simulator.model.SparseInputs`, a kernel
   kept only where it earns 1.5x) against the dense products at ``n`` in
   :data:`SPARSE_SIZES`, ``d = 10^6``.

Targets, named by what they measure, are printed after the figures with ``met`` / ``NOT met``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np

from simulator.config import SimulationConfig
from simulator.problem import build_problem
from simulator.training import train

SIZES = (2_000, 20_000, 200_000, 1_000_000)
BENCH = dict(n=16, s=20, m_k=10, m_v=10, n_test=500)
TORCH_CHECK_STEPS = 3        # steps compared between the simulator and the peer
PEER_STEPS = {2_000: 20, 20_000: 10, 200_000: 3, 1_000_000: 2}   # timed peer steps per run
PEER_RUNS = 3                # timed runs of PEER_STEPS steps per thread count


def bench_config(d: int, steps: int, **changes) -> SimulationConfig:
    """The benchmark's SignGD config at dimension ``d`` (records first and last step only)."""
    return SimulationConfig(d=d, steps=steps, record_every=max(steps, 1), **{**BENCH, **changes})



ROUNDS = 4
"""Rounds of the interleaved per-step timings of table 1."""


def time_train(config: SimulationConfig, repeats: int = 3, problem=None) -> float:
    """Best-of-``repeats`` seconds per step of :func:`train` on a prebuilt problem
    (``problem``, or built here). Set-up and the two records (first and last step) are
    removed by subtracting a 1-step run, which has the same set-up and records."""
    problem = build_problem(config) if problem is None else problem
    one = config.replace(steps=1, record_every=1)
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        train(one, problem=problem)
        t1 = time.perf_counter()
        train(config, problem=problem)
        t2 = time.perf_counter()
        best = min(best, ((t2 - t1) - (t1 - t0)) / max(config.steps - 1, 1))
    return best


# ---------------------------------------------------------------------------
# the PyTorch autograd peer
# ---------------------------------------------------------------------------

def dense_inputs(problem, r: int = 0) -> np.ndarray:
    """Training inputs of run ``r`` as dense ``(n, L, d)`` arrays."""
    d = problem.config.d
    X = np.zeros(problem.X.shape[1:3] + (d,))
    cols = problem.coords[r]
    real = cols < d
    X[:, :, cols[real]] = problem.X[r][:, :, real]
    return X


def torch_peer(problem, r: int = 0):
    """A straightforward PyTorch model of ``docs/theory.md`` section 2 on dense inputs.

    Returns ``(params, step)``: the four weight matrices (``W_Q, W_K``: m_k x d;
    ``W_V+, W_V-``: m_v x d; initialized with the simulator's initial weights over
    all ``d`` coordinates) and ``step()``, one SignGD step that returns the loss
    before the step. Gradients come from ``loss.backward()``.
    """
    import torch  # noqa: PLC0415  (optional 'bench' extra)
    from simulator.initialization import initial_weights

    cfg = problem.config
    X = torch.from_numpy(dense_inputs(problem, r))                         # (n, L, d)
    y = torch.from_numpy(problem.y[r])                                      # (n,)
    W0 = initial_weights(int(problem.seeds[r]), cfg.n_weight_rows, np.arange(cfg.d), cfg.sigma_0)
    lay = problem.layout
    params = [torch.tensor(W0[sl], requires_grad=True) for sl in (lay.Q, lay.K, lay.Vp, lay.Vm)]
    del W0
    W_Q, W_K, W_Vp, W_Vm = params

    def step() -> float:
        q, k = X @ W_Q.T, X @ W_K.T                                         # (n, L, m_k)
        S = torch.softmax(q @ k.transpose(1, 2), dim=-1)                    # (n, L, L)
        u = (X @ W_Vp.T).mean(-1) - (X @ W_Vm.T).mean(-1)                   # (n, L)
        f = (S @ u.unsqueeze(-1)).sum(dim=(1, 2))                           # (n,)
        loss = torch.nn.functional.softplus(-y * f).mean()
        for p in params:
            p.grad = None
        loss.backward()
        with torch.no_grad():
            for p in params:
                p -= cfg.eta * torch.sign(p.grad)
        return loss.item()

    return params, step


def _peer_child(d: int, timed_steps: int) -> dict:
    """In a subprocess: check the peer against the simulator, then time it."""
    import torch  # noqa: PLC0415

    config = bench_config(d, TORCH_CHECK_STEPS, n_test=1).replace(record_every=1)
    problem = build_problem(config)
    ours = train(config, problem=problem)
    params, step = torch_peer(problem)
    losses = [step() for _ in range(TORCH_CHECK_STEPS)]
    W = torch.cat([p.detach() for p in params]).numpy()                     # (M, d)
    cols = problem.coords[0][problem.coords[0] < d]
    loss_err = float(np.max(np.abs(np.array(losses) - ours.history["train_loss"][:-1, 0])))
    w_err = float(np.max(np.abs(W[:, cols] - ours.W[0][:, :cols.size])))
    # best of the default thread count and one thread: on a busy machine a parallel
    # region waits for any descheduled thread, which would flatter the ratio.
    # The statistic is the simulator's (time_train): the mean step of a run of
    # consecutive steps, best of several runs, after a warm-up step; the fastest single
    # step would leave out the pauses that the simulator's mean over 999 steps includes
    times = {}
    for threads in sorted({torch.get_num_threads(), 1}, reverse=True):
        torch.set_num_threads(threads)
        step()                                                              # warm-up
        for _ in range(PEER_RUNS):
            t0 = time.perf_counter()
            for _ in range(timed_steps):
                step()
            per_step = (time.perf_counter() - t0) / timed_steps
            times[threads] = min(times.get(threads, np.inf), per_step)
    best = min(times, key=times.get)
    return {"loss_err": loss_err, "w_err": w_err, "step": times[best], "threads": best,
            "times": {str(k): v for k, v in times.items()},
            "rss_mb": peak_rss_mb()}


def _memory_child(d: int, steps: int, trace: bool) -> dict:
    """In a subprocess: build and train the benchmark config at ``d`` for ``steps``
    steps. ``trace``: peak NumPy allocations (tracemalloc) while building and while
    training; otherwise the peak RSS of the process (tracemalloc would inflate it)."""
    import tracemalloc  # noqa: PLC0415

    config = bench_config(d, steps)
    if not trace:
        train(config, problem=build_problem(config))
        return {"rss_mb": peak_rss_mb()}
    tracemalloc.start()
    problem = build_problem(config)
    _, build_peak = tracemalloc.get_traced_memory()
    tracemalloc.reset_peak()
    train(config, problem=problem)
    _, train_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {"build_mb": build_peak / 2**20, "train_mb": train_peak / 2**20}


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB: ``VmHWM`` of ``/proc/self/status``
    (Linux; unlike ``ru_maxrss`` it does not inherit the parent's peak across
    ``fork`` + ``exec``), else ``resource.getrusage``."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource  # noqa: PLC0415
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _in_subprocess(func: str, **kwargs) -> dict:
    code = (f"import json; from workflows.benchmark import {func}; "
            f"print('RESULT' + json.dumps({func}(**json.loads({json.dumps(json.dumps(kwargs))}))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=os.environ.copy())
    if out.returncode != 0:
        raise RuntimeError(f"{func}({kwargs}) failed:\n{out.stderr[-2000:]}")
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT")][-1]
    return json.loads(line[len("RESULT"):])


def torch_available() -> bool:
    try:
        import torch  # noqa: F401, PLC0415
    except ImportError:
        return False
    return True


# ---------------------------------------------------------------------------
# the report
# ---------------------------------------------------------------------------

def _verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def main(*, steps: int = 1000, with_torch: bool = False) -> int:
    """Run every benchmark and print the tables (returns the exit status)."""
    print(f"signgd-transformer-sim benchmark: float64, {os.cpu_count()} CPU(s), "
          f"numpy {np.__version__}; n={BENCH['n']}, s={BENCH['s']}, "
          f"m_k=m_v={BENCH['m_k']}, n_test={BENCH['n_test']}; best of several timings")
    have_torch = torch_available()
    if with_torch and not have_torch:
        print("PyTorch is not installed: the autograd peer is skipped. "
              "Install the 'bench' extra: pip install \".[bench]\"  (torch==2.13.0)")
    elif not with_torch:
        print("(the PyTorch autograd peer runs with --torch)")
    peer = with_torch and have_torch

    # 1 + 2: per-step time, memory, peer
    print()
    print("1. SignGD per step. Memory: peak of the NumPy allocations (tracemalloc) while "
          "building the problem and while training; RSS = peak resident set (VmHWM) of a "
          "fresh subprocess per size that builds and trains")
    head = (f"{'d':>9} {'sim ms/step':>12} {f'{steps} steps s':>14} {'build MiB':>10} "
            f"{'train MiB':>10} {'RSS MiB':>8}")
    if peer:
        head += f" {'torch ms/step':>14} {'torch RSS MiB':>14} {'ratio':>8} {'check':>18}"
    print(head)
    results = {}
    # best of ROUNDS rounds over the sizes, interleaved: a slow spell of the host (the
    # figures of one size swing by 30% from second to second on a shared VM) then costs
    # one round of each size, not every timing of one
    step_times = {d: np.inf for d in SIZES}
    problems = {d: build_problem(bench_config(d, steps)) for d in SIZES}
    for _ in range(ROUNDS):
        for d in SIZES:
            step_times[d] = min(step_times[d], time_train(bench_config(d, steps), repeats=2,
                                                          problem=problems[d]))
    for d in SIZES:
        per_step = step_times[d]
        mem = {**_in_subprocess("_memory_child", d=d, steps=steps, trace=True),
               **_in_subprocess("_memory_child", d=d, steps=steps, trace=False)}
        row = (f"{d:>9} {per_step * 1e3:>12.4f} {per_step * steps:>14.3f} {mem['build_mb']:>10.1f} "
               f"{mem['train_mb']:>10.2f} {mem['rss_mb']:>8.0f}")
        res = {"step": per_step, **mem}
        if peer:
            p = _in_subprocess("_peer_child", d=d, timed_steps=PEER_STEPS[d])
            ok = p["loss_err"] < 1e-10 and p["w_err"] < 1e-10
            res.update(torch_step=p["step"], torch_rss=p["rss_mb"], ratio=p["step"] / per_step,
                       agree=ok, torch_threads=p["threads"])
            row += (f" {p['step'] * 1e3:>14.2f} {p['rss_mb']:>14.0f} {p['step'] / per_step:>7.0f}x"
                    f" {'ok' if ok else 'MISMATCH'} {max(p['loss_err'], p['w_err']):>7.1e}")
        print(row, flush=True)
        results[d] = res
    if peer:
        print(f"   check: losses of the first {TORCH_CHECK_STEPS} steps and the weights after "
              f"them on the trained coordinates, max abs difference (must be < 1e-10); "
              f"torch: mean step of {PEER_RUNS} runs of consecutive steps, the best run of "
              f"its default thread count and 1 thread (threads used: "
              f"{', '.join(str(results[d]['torch_threads']) for d in SIZES)})")

    # 3: batching
    print()
    R = 64
    cfg = bench_config(20_000, min(steps, 200))
    batched = time_train(cfg.replace(n_seeds=R), repeats=2)
    sequential = sum(time_train(cfg.replace(seed=r), repeats=2) for r in range(R))
    print(f"2. {R} seeds at d = 2*10^4 ({cfg.steps} steps): one batch {batched * 1e3:.3f} ms/step, "
          f"{R} runs one after another {sequential * 1e3:.3f} ms/step: "
          f"batch {sequential / batched:.1f}x faster")

    # 4: recording
    print()
    main_job = SimulationConfig(steps=min(steps, 1000))
    one_test = main_job.replace(n_test=1)                # the record's cost without held-out inputs
    job_problem, one_problem = build_problem(main_job), build_problem(one_test)
    rec = plain = rec_one = np.inf
    for _ in range(ROUNDS):                    # interleaved, as table 1: best of each
        rec = min(rec, time_train(main_job, repeats=2, problem=job_problem))
        plain = min(plain, time_train(main_job.replace(record_every=main_job.steps), repeats=2,
                                      problem=job_problem))
        rec_one = min(rec_one, time_train(one_test, repeats=2, problem=one_problem))
    per_input = ((rec - rec_one) / (main_job.n_test - 1)) * 1e9
    print(f"3. Recording (main job: d = 2*10^4, n = 8, n_test = 500, {main_job.steps} steps): "
          f"record_every=1 {rec * 1e3:.3f} ms/step, no recording {plain * 1e3:.3f} ms/step: "
          f"recording every step costs {rec / plain:.2f}x the unrecorded step; a record costs "
          f"{(rec - plain) * 1e6:.0f} us: {(rec_one - plain) * 1e6:.0f} us with n_test = 1, "
          f"and {per_input:.0f} ns per held-out input")
    job = main_job_seconds()
    print(f"4. The main job (python -m simulator run --quiet, installed): {job:.1f} s wall")

    # 5: the sparse-input kernel against the plain dense products
    print()
    kernel = {n: sparse_kernel_ratio(n, min(steps, 400)) for n in SPARSE_SIZES}
    print("5. The sparse products of the step (simulator.model.SparseInputs) against the dense "
          "ones, d = 10^6, per step: " + "; ".join(
              f"n = {n}: dense {dense * 1e3:.3f} ms, sparse {sparse * 1e3:.3f} ms "
              f"({dense / sparse:.2f}x{'' if picked else ', not picked'})"
              for n, (dense, sparse, picked) in kernel.items()))

    # targets
    print()
    print("Targets")
    tiny, small, big = results[2_000], results[20_000], results[1_000_000]
    t2 = big["step"] * 1000
    print(f"  speed at d = 10^6: 1000 steps in < 5 s: {t2:.2f} s -> {_verdict(t2 < 5)}")
    print(f"  memory at d = 10^6: peak < 300 MB: RSS {big['rss_mb']:.0f} MiB, NumPy peak "
          f"{max(big['build_mb'], big['train_mb']):.1f} MiB -> {_verdict(big['rss_mb'] * 1.048576 < 300)}")
    if peer:
        for d, res, goal in ((2_000, tiny, 5), (20_000, small, 50), (1_000_000, big, 1000)):
            print(f"  against the PyTorch autograd peer at d = {d:g}: at least {goal}x faster: "
                  f"{res['ratio']:.0f}x -> {_verdict(res['ratio'] >= goal)}")
    else:
        print("  against the PyTorch autograd peer: needs --torch and PyTorch")
    print(f"  memory does not grow with d: training memory at d = 10^6 no larger than at "
          f"d = 2*10^4: {big['train_mb']:.2f} vs {small['train_mb']:.2f} MiB (NumPy, training) -> "
          f"{_verdict(big['train_mb'] <= small['train_mb'] * 1.05 + 0.5)}")
    print(f"  batching: {R} seeds batched at least 5x faster than sequential: "
          f"{sequential / batched:.1f}x -> {_verdict(sequential / batched >= 5)}")
    print(f"  recording: every step at most 1.5x the unrecorded step: {rec / plain:.2f}x -> "
          f"{_verdict(rec / plain <= 1.5)}")
    print(f"  main job: under 5 s wall: {job:.1f} s -> {_verdict(job < 5)}")
    best = max(kernel, key=lambda n: kernel[n][0] / kernel[n][1])
    print(f"  sparse kernel: at least 1.5x the dense products on a case it is picked for: "
          f"{kernel[best][0] / kernel[best][1]:.2f}x at n = {best} -> "
          f"{_verdict(kernel[best][2] and kernel[best][0] / kernel[best][1] >= 1.5)}")
    return 0


SPARSE_SIZES = (16, 32, 64)
"""Sample counts at which :func:`sparse_kernel_ratio` is measured (``s = 20``)."""


def sparse_kernel_ratio(n: int, steps: int) -> tuple[float, float, bool]:
    """Seconds per step of the benchmark config at ``d = 10^6`` and ``n`` samples with the
    dense products and with :class:`~simulator.model.SparseInputs` (each forced), and
    whether :func:`simulator.full.training_inputs` picks the sparse ones there."""
    import simulator.full as full  # noqa: PLC0415

    config = bench_config(1_000_000, steps, n=n)
    problem = build_problem(config)
    picked = isinstance(full.training_inputs(problem.X, problem.layout.M), full.SparseInputs)
    saved = full.SPARSE_MIN_WORK, full.SPARSE_MAX_DENSITY
    try:
        full.SPARSE_MIN_WORK, full.SPARSE_MAX_DENSITY = 0, 1.0            # always sparse
        sparse = time_train(config, repeats=3)
        full.SPARSE_MIN_WORK = 10 ** 30                                     # never sparse
        dense = time_train(config, repeats=3)
    finally:
        full.SPARSE_MIN_WORK, full.SPARSE_MAX_DENSITY = saved
    return dense, sparse, picked


def main_job_seconds() -> float:
    """Wall seconds of ``python -m simulator run --quiet`` into a scratch directory."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "simulator", "run", "--quiet", "--out",
                        os.path.join(tmp, "run")], check=True, capture_output=True)
        return time.perf_counter() - start

