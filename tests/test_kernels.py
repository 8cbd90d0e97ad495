"""The step's sparse products (``simulator.model.SparseInputs``) against the dense
products they replace, and the full engine trained through each."""

import numpy as np
import pytest

from simulator import SimulationConfig, train
from simulator import full
from simulator.problem import build_problem
from simulator.model import (Layout, SparseInputs, loss_and_gradient, projections,
                             weight_gradient)


def sparse_problem(seed, *, R=3, n=4, D=17, m_k=2, m_v=3):
    """Weights ``W`` (R, M, D) and sparse inputs ``X`` (R, n, 2, D) with an all-zero
    patch, an all-zero column (like the padding coordinate), and columns shared by
    several patches (like coordinate 0 and shared noise coordinates)."""
    rng = np.random.default_rng(seed)
    layout = Layout(m_k, m_v)
    W = rng.standard_normal((R, layout.M, D)) * 0.7
    X = rng.standard_normal((R, n, 2, D)) * (rng.random((R, n, 2, D)) < 0.2)
    X[:, :, 0, 0] = rng.choice([-1.0, 1.0], size=(R, n))       # the signal column, in every sample
    X[:, 1, 1] = 0.0                                          # an all-zero patch
    X[:, :, :, D - 1] = 0.0                                   # an all-zero column
    X[0, 2, 1, 5] = X[0, 3, 1, 5] = 0.3                       # a shared column
    y = rng.choice([-1.0, 1.0], size=(R, n))
    return W, X, y, layout


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("stored", ["C order", "M fastest"])
def test_sparse_products_equal_dense_products(seed, stored):
    W, X, _, layout = sparse_problem(seed)
    Xs = SparseInputs.of(X)
    Ws = W if stored == "C order" else SparseInputs.weights(W)
    assert np.array_equal(Ws, W)
    np.testing.assert_allclose(projections(Ws, Xs), projections(W, X), rtol=1e-13, atol=1e-15,
                               err_msg="W x")
    A = np.random.default_rng(seed + 10).standard_normal(X.shape[:3] + (layout.M,))
    G = weight_gradient(A, Xs)
    assert G.shape == W.shape
    np.testing.assert_allclose(G, weight_gradient(A, X), rtol=1e-13, atol=1e-15, err_msg="dL/dW")


def test_sparse_weights_are_stored_m_fastest():
    W, X, _, _ = sparse_problem(2)
    Ws = SparseInputs.weights(W)
    assert Ws.transpose(0, 2, 1).flags.c_contiguous       # W^T rows read without a copy
    G = weight_gradient(np.ones(X.shape[:3] + (W.shape[1],)), SparseInputs.of(X))
    assert G.strides == Ws.strides                        # the update runs in one layout


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_loss_and_gradient_on_sparse_inputs_equals_dense(seed):
    W, X, y, layout = sparse_problem(seed)
    dense = loss_and_gradient(W, X, y, layout)
    sparse = loss_and_gradient(SparseInputs.weights(W), SparseInputs.of(X), y, layout)
    for name in ("margin", "lprime", "grad", "loss"):
        np.testing.assert_allclose(getattr(sparse, name), getattr(dense, name),
                                   rtol=1e-12, atol=1e-15, err_msg=name)


def test_engine_takes_the_sparse_products_only_where_they_pay():
    # the benchmark's problem (n = 16): 4e5 multiply-adds per dense product, sparse;
    # a small one: dense
    bench = build_problem(SimulationConfig(d=20_000, n=16, s=20, m_k=10, m_v=10, n_test=5))
    assert isinstance(full.FullEngine(bench).inputs, SparseInputs)
    small = build_problem(SimulationConfig(d=60, n=3, s=4, m_k=2, m_v=2, n_test=5))
    assert isinstance(full.FullEngine(small).inputs, np.ndarray)


@pytest.mark.parametrize("optimizer, eta", [("signgd", 2e-3), ("adam", 2e-3), ("gd", 0.05)])
def test_training_through_sparse_products_matches_dense(monkeypatch, optimizer, eta):
    cfg = SimulationConfig(d=60, n=3, s=4, m_k=2, m_v=2, n_test=40, steps=200, eta=eta,
                           sigma_0=0.05, n_seeds=2, seed=0, optimizer=optimizer)
    monkeypatch.setattr(full, "SPARSE_MIN_WORK", 0)
    monkeypatch.setattr(full, "SPARSE_MAX_DENSITY", 1.0)
    sparse = train(cfg)
    assert isinstance(sparse.finals[0][1].inputs, SparseInputs)
    monkeypatch.setattr(full, "SPARSE_MIN_WORK", np.inf)
    dense = train(cfg)
    assert isinstance(dense.finals[0][1].inputs, np.ndarray)
    np.testing.assert_allclose(sparse.W, dense.W, rtol=0, atol=1e-12, err_msg="final W")
    for name in ("margin", "test_loss", "Qn", "Kn", "softmax"):
        np.testing.assert_allclose(sparse.history[name], dense.history[name], rtol=0,
                                   atol=1e-10, err_msg=name)
