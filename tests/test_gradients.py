"""Gradients of the model (``simulator.model``) against independent references.

* central finite differences in float64, one assertion per weight matrix;
* a slow, obvious per-sample loop (generic softmax form) for forward and gradients;
* deeply saturated attention (``S_l1 ~ 1e-25``), where float64 finite differences and
  the generic softmax form both lose the answer: finite differences in 120-digit
  ``decimal`` arithmetic.
"""

from decimal import Decimal, localcontext

import numpy as np
import pytest

from simulator.model import Layout, ModelOptions, forward, loss_and_gradient, split

MATRICES = ("W_Q", "W_K", "W_V+", "W_V-")


def random_problem(seed, *, R=2, n=3, D=5, m_k=2, m_v=3, qk_scale=0.5, v_scale=0.5, L=2):
    """Generic weights ``W`` (R, M, D), inputs ``X`` (R, n, L, D) and labels ``y``."""
    rng = np.random.default_rng(seed)
    layout = Layout(m_k, m_v)
    W = rng.standard_normal((R, layout.M, D))
    W[:, layout.Q] *= qk_scale
    W[:, layout.K] *= qk_scale
    W[:, layout.Vp] *= v_scale
    W[:, layout.Vm] *= v_scale
    X = rng.standard_normal((R, n, L, D))
    y = rng.choice([-1.0, 1.0], size=(R, n))
    return W, X, y, layout


def finite_difference_gradient(W, X, y, layout, h, options=ModelOptions()):
    """Central differences ``(L(W + h e) - L(W - h e)) / 2h`` of every entry."""
    G = np.zeros_like(W)
    for idx in np.ndindex(*W.shape[1:]):
        Wp, Wm = W.copy(), W.copy()
        Wp[(slice(None),) + idx] += h
        Wm[(slice(None),) + idx] -= h
        lp = loss_and_gradient(Wp, X, y, layout, options).loss    # (R,) one entry per run
        lm = loss_and_gradient(Wm, X, y, layout, options).loss
        G[(slice(None),) + idx] = (lp - lm) / (2 * h)
    return G


def relative_error(a, b):
    return np.linalg.norm(a - b) / max(np.linalg.norm(a), np.linalg.norm(b), 1e-300)


# --- slow reference: one sample at a time, generic softmax ---------------------

def slow_loss_and_gradient(W, X, y, layout):
    """Loop over runs and samples; softmax by ``exp``; generic softmax derivative
    ``dz_lk = S_lk (u_k - sum_k' S_lk' u_k')``. Returns per-run loss, f and grads."""
    R, n = y.shape
    loss = np.zeros(R)
    f_all = np.zeros((R, n))
    grad = np.zeros_like(W)
    for r in range(R):
        WQ, WK = W[r, layout.Q], W[r, layout.K]
        WVp, WVm = W[r, layout.Vp], W[r, layout.Vm]
        vbar = WVp.mean(0) - WVm.mean(0)
        for i in range(n):
            x = X[r, i]                                   # (L, D)
            P = range(len(x))
            q = [WQ @ x[l] for l in P]
            k = [WK @ x[j] for j in P]
            u = np.array([vbar @ x[j] for j in P])
            S = np.zeros((len(x), len(x)))
            for l in P:
                z = np.array([q[l] @ k[j] for j in P])
                e = np.exp(z - z.max())
                S[l] = e / e.sum()
            f = sum(S[l, j] * u[j] for l in P for j in P)
            f_all[r, i] = f
            loss[r] += np.log1p(np.exp(-y[r, i] * f)) / n
            dL_df = -y[r, i] / (1.0 + np.exp(y[r, i] * f)) / n
            dvbar = np.zeros(W.shape[-1])
            for l in P:
                for j in P:
                    dvbar += dL_df * S[l, j] * x[j]
                    dz = dL_df * S[l, j] * (u[j] - S[l] @ u)
                    grad[r, layout.Q] += dz * np.outer(k[j], x[l])
                    grad[r, layout.K] += dz * np.outer(q[l], x[j])
            grad[r, layout.Vp] += dvbar / layout.m_v
            grad[r, layout.Vm] -= dvbar / layout.m_v
    return loss, f_all, grad


# --- float64 finite differences -------------------------------------------------

@pytest.mark.parametrize("case, qk_scale, h", [
    ("moderate", 0.5, 1e-6),
    # scores of order 10: min softmax output below 1e-3 (asserted below)
    ("nearly saturated", 2.2, 1e-6),
])
@pytest.mark.parametrize("seed", [0, 1])
def test_gradient_matches_finite_differences(case, qk_scale, h, seed):
    W, X, y, layout = random_problem(seed, qk_scale=qk_scale)
    fw = forward(W, X, layout)
    if case == "nearly saturated":
        assert min(fw.att.S[..., 0].min(), fw.att.S[..., 1].min()) < 1e-3, "problem is not saturated"
    G = loss_and_gradient(W, X, y, layout).grad
    G_fd = finite_difference_gradient(W, X, y, layout, h)
    for name in MATRICES:
        err = relative_error(split(G, layout)[name], split(G_fd, layout)[name])
        assert err < 1e-6, f"{name} ({case}): relative error {err:.2e} vs finite differences"


# --- vectorized vs slow loop ----------------------------------------------------

@pytest.mark.parametrize("seed, L", [(0, 2), (1, 2), (2, 2), (3, 3), (4, 5)])
def test_vectorized_matches_slow_loop(seed, L):
    W, X, y, layout = random_problem(seed, R=3, n=4, D=6, m_k=3, m_v=2, qk_scale=0.8, L=L)
    lg = loss_and_gradient(W, X, y, layout)
    loss, f, G = slow_loss_and_gradient(W, X, y, layout)
    np.testing.assert_allclose(lg.forward.f, f, rtol=1e-12, atol=1e-14, err_msg="f")
    np.testing.assert_allclose(lg.loss, loss, rtol=1e-12, err_msg="loss")
    np.testing.assert_allclose(lg.margin, y * f, rtol=1e-12, atol=1e-14, err_msg="margin")
    np.testing.assert_allclose(lg.lprime, -1.0 / (1.0 + np.exp(y * f)), rtol=1e-12,
                               err_msg="l'")
    for name in MATRICES:
        err = relative_error(split(lg.grad, layout)[name], split(G, layout)[name])
        assert err < 1e-12, f"{name}: relative error {err:.2e} vs slow loop"


def test_forward_softmax_rows_sum_to_one_and_match_exp():
    W, X, y, layout = random_problem(5, qk_scale=1.0)
    fw = forward(W, X, layout)
    np.testing.assert_allclose(fw.att.S[..., 0] + fw.att.S[..., 1], 1.0, rtol=0, atol=1e-15)
    q = np.einsum("rmd,rnld->rnlm", W[:, layout.Q], X)
    k = np.einsum("rmd,rnld->rnlm", W[:, layout.K], X)
    z = np.einsum("rnlm,rnjm->rnlj", q, k)
    S = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    np.testing.assert_allclose(fw.att.S[..., 0], S[..., 0], rtol=1e-12)
    np.testing.assert_allclose(fw.att.S[..., 1], S[..., 1], rtol=1e-12)


# --- deep saturation: 120-digit decimal finite differences -----------------------

def decimal_loss(W, X, y, layout):
    """Training loss of one run in ``Decimal`` arithmetic (plain loops).
    ``W`` (M, D), ``X`` (n, 2, D), ``y`` (n,) are lists of Decimals."""
    D = len(W[0])
    one = Decimal(1)

    def dot(a, b):
        return sum((ai * bi for ai, bi in zip(a, b)), Decimal(0))

    def matvec(rows, x):
        return [dot(w, x) for w in rows]

    WQ, WK = W[layout.Q], W[layout.K]
    WVp, WVm = W[layout.Vp], W[layout.Vm]
    vbar = [sum((w[c] for w in WVp), Decimal(0)) / layout.m_v
            - sum((w[c] for w in WVm), Decimal(0)) / layout.m_v for c in range(D)]
    total = Decimal(0)
    for x, yi in zip(X, y):
        q = [matvec(WQ, x[l]) for l in range(2)]
        k = [matvec(WK, x[j]) for j in range(2)]
        u = [dot(vbar, x[j]) for j in range(2)]
        f = Decimal(0)
        for l in range(2):
            z = [dot(q[l], k[j]) for j in range(2)]
            S2 = one / (one + (z[0] - z[1]).exp())
            S1 = one / (one + (z[1] - z[0]).exp())
            f += S1 * u[0] + S2 * u[1]
        total += (one + (-yi * f).exp()).ln()
    return total / len(y)


def test_gradient_deeply_saturated_attention_matches_high_precision():
    # Score gaps of 60 to 105: for every query the smaller softmax output is between
    # 1e-46 and 1e-26, where the generic softmax form returns 0 in float64
    # (docs/theory.md section 8). The reference needs 120 digits: with h = 1e-40 the
    # rounding error of a difference quotient is about 1e-80, far below 1e-46.
    W, X, y, layout = random_problem(1, R=1, n=2, D=4, m_k=2, m_v=2,
                                     qk_scale=8.0, v_scale=0.3)
    fw = forward(W, X, layout)
    smaller = np.minimum(fw.att.S[..., 0], fw.att.S[..., 1])
    assert smaller.max() < 1e-20 and smaller.min() > 1e-60, "problem is not deeply saturated"
    G = loss_and_gradient(W, X, y, layout).grad[0]
    with localcontext() as ctx:
        ctx.prec = 120
        Wd = [[Decimal(float(v)) for v in row] for row in W[0]]
        Xd = [[[Decimal(float(v)) for v in patch] for patch in x] for x in X[0]]
        yd = [Decimal(float(v)) for v in y[0]]
        h = Decimal("1e-40")
        G_ref = np.zeros_like(G)
        for a in range(len(Wd)):
            for b in range(len(Wd[0])):
                w0 = Wd[a][b]
                Wd[a][b] = w0 + h
                lp = decimal_loss(Wd, Xd, yd, layout)
                Wd[a][b] = w0 - h
                lm = decimal_loss(Wd, Xd, yd, layout)
                Wd[a][b] = w0
                G_ref[a, b] = float((lp - lm) / (2 * h))
    for name in MATRICES:
        err = relative_error(split(G, layout)[name], split(G_ref, layout)[name])
        assert err < 1e-6, f"{name} (deep saturation): relative error {err:.2e}"
    # entrywise too: the tiny softmax-driven W_Q, W_K entries must be right, not
    # only the dominant ones
    mask = G_ref != 0
    np.testing.assert_allclose(G[mask], G_ref[mask], rtol=1e-8, err_msg="entrywise")
    # the reference discriminates: the generic softmax form gets W_Q wrong here
    G_generic = slow_loss_and_gradient(W, X, y, layout)[2][0]
    assert not np.allclose(G_generic[layout.Q], G_ref[layout.Q], rtol=1e-3, atol=0)


def test_gradient_does_not_mutate_inputs():
    W, X, y, layout = random_problem(3)
    copies = W.copy(), X.copy(), y.copy()
    loss_and_gradient(W, X, y, layout)
    for a, b, name in zip((W, X, y), copies, "WXy"):
        assert np.array_equal(a, b), f"{name} was mutated"


# --- variants: score scale, mean pooling, mini-batches, more patches ------------

@pytest.mark.parametrize("L", [3, 4])
@pytest.mark.parametrize("qk_scale", [0.5, 2.2], ids=["moderate", "nearly-saturated"])
def test_gradient_matches_finite_differences_with_more_patches(L, qk_scale):
    W, X, y, layout = random_problem(5, L=L, qk_scale=qk_scale)
    if qk_scale > 1:
        assert forward(W, X, layout).att.S.min() < 1e-3, "problem is not saturated"
    G = loss_and_gradient(W, X, y, layout).grad
    G_fd = finite_difference_gradient(W, X, y, layout, 1e-6)
    for name in MATRICES:
        err = relative_error(split(G, layout)[name], split(G_fd, layout)[name])
        assert err < 1e-6, f"{name} (L = {L}): relative error {err:.2e} vs finite differences"


@pytest.mark.parametrize("qk_scale", [1.0, 6], ids=["initial-scale", "nearly-saturated"])
def test_combined_variant_gradient_on_the_data_model(qk_scale):
    """L = 4 patches with mean pooling, score scale 0.3 and feature noise alpha = 0.2, on
    the inputs the full engine trains (built from the data model), against central
    finite differences; scaled-up query/key weights push the attention near saturation."""
    from simulator import SimulationConfig
    from simulator.problem import build_problem

    cfg = SimulationConfig(d=200, n=3, s=2, m_k=2, m_v=2, n_test=4, n_patches=4, pooling="mean",
                           score_scale=0.3, feature_noise=0.2, sigma_0=0.5, mu_norm=1.0, seed=3)
    problem = build_problem(cfg)
    options = ModelOptions.of(cfg)
    layout = problem.layout
    W = problem.W0.copy()
    W[:, layout.Q] *= qk_scale
    W[:, layout.K] *= qk_scale
    assert problem.X.shape[2] == 4
    assert (problem.X[:, :, 1:, 0] != 0).all(), "feature noise puts -alpha y mu in every noise patch"
    if qk_scale > 1:
        assert forward(W, problem.X, layout, options).att.S.min() < 1e-3, "not saturated"
    G = loss_and_gradient(W, problem.X, problem.y, layout, options).grad
    G_fd = finite_difference_gradient(W, problem.X, problem.y, layout, 1e-6, options)
    for name in MATRICES:
        err = relative_error(split(G, layout)[name], split(G_fd, layout)[name])
        assert err < 1e-6, f"{name}: relative error {err:.2e} vs finite differences"


@pytest.mark.parametrize("options", [ModelOptions(0.3, "sum"), ModelOptions(1.0, "mean"),
                                     ModelOptions(2.5, "mean")],
                         ids=["scale-0.3", "mean", "scale-2.5-mean"])
@pytest.mark.parametrize("qk_scale", [0.5, 2.2], ids=["moderate", "nearly-saturated"])
def test_variant_gradients_match_finite_differences(options, qk_scale):
    W, X, y, layout = random_problem(3, qk_scale=qk_scale)
    batch = np.array([[True, False, True], [False, True, True]])     # a mini-batch per run

    def batch_loss(Wx):
        margin = y * forward(Wx, X, layout, options).f
        return (np.logaddexp(0.0, -margin) * batch).sum(-1) / batch.sum(-1)

    G = loss_and_gradient(W, X, y, layout, options, batch).grad
    G_fd = np.zeros_like(W)
    h = 1e-6
    for idx in np.ndindex(*W.shape[1:]):
        Wp, Wm = W.copy(), W.copy()
        Wp[(slice(None),) + idx] += h
        Wm[(slice(None),) + idx] -= h
        G_fd[(slice(None),) + idx] = (batch_loss(Wp) - batch_loss(Wm)) / (2 * h)
    for name in MATRICES:
        err = relative_error(split(G, layout)[name], split(G_fd, layout)[name])
        assert err < 1e-6, f"{name} ({options}): relative error {err:.2e} vs finite differences"


def test_score_scale_and_pooling_are_what_they_say():
    """tau scales every score; mean pooling divides the output by L."""
    W, X, y, layout = random_problem(4)
    plain = forward(W, X, layout)
    scaled = forward(W, X, layout, ModelOptions(0.5, "sum"))
    half_W = W.copy()
    half_W[:, layout.Q] *= 0.5                                        # tau <q, k> = <tau q, k>
    np.testing.assert_allclose(scaled.f, forward(half_W, X, layout).f, rtol=1e-13)
    mean = forward(W, X, layout, ModelOptions(1.0, "mean"))
    np.testing.assert_allclose(mean.f, plain.f / 2, rtol=1e-14)


@pytest.mark.parametrize("options", [ModelOptions(1.0, "sum"), ModelOptions(1.0, "mean"),
                                     ModelOptions(0.3, "sum")])
def test_held_out_margins_equal_the_model_on_the_same_inputs(options):
    """The held-out path's two-patch margins from score gaps (fixed and per-state noise
    projections, one call) equal ``c f`` of attend() on the assembled patches, including
    deep saturation (scores of +-800)."""
    from simulator.model import HeldOut, attend, held_out_margins

    rng = np.random.default_rng(7)
    K, R, m_k, n_F, n_T = 6, 2, 3, 20, 7
    Qs, Ks = rng.normal(size=(2, K, R, m_k))
    Qs[:2] *= 20.0                                         # saturated softmaxes
    Vs = rng.normal(size=(K, R))
    fixed = HeldOut(rng.normal(size=(R, n_F, m_k)), 20.0 * rng.normal(size=(R, n_F, m_k)),
                    rng.normal(size=(R, n_F)), rng.choice([-1.0, 1.0], size=(R, n_F)))
    moving = HeldOut(rng.normal(size=(K, R, n_T, m_k)), rng.normal(size=(K, R, n_T, m_k)),
                     rng.normal(size=(K, R, n_T)), rng.choice([-1.0, 1.0], size=(R, n_T)))
    got = held_out_margins(Qs, Ks, Vs, fixed, moving, options=options)
    assert got.shape == (K, R, n_F + n_T)
    for g, cols in ((fixed, slice(0, n_F)), (moving, slice(n_F, None))):
        n = g.c.shape[-1]
        shape = (K, R, n, m_k)
        q = np.stack([np.broadcast_to(Qs[:, :, None], shape), np.broadcast_to(g.qn, shape)], axis=-2)
        k = np.stack([np.broadcast_to(Ks[:, :, None], shape), np.broadcast_to(g.kn, shape)], axis=-2)
        u = np.stack([np.broadcast_to(Vs[:, :, None], (K, R, n)), np.broadcast_to(g.un, (K, R, n))], -1)
        want = g.c * attend(q, k, u, options).f
        np.testing.assert_allclose(got[..., cols], want, rtol=1e-13, atol=1e-13 * np.abs(want).max())
