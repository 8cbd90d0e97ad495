"""Initial weights, drawn coordinate by coordinate from a counter-based generator.

Every entry of ``W_Q, W_K, W_{V,+1}, W_{V,-1}`` starts i.i.d. ``N(0, sigma_0^2)``
(``docs/theory.md`` section 2). The engine trains only a few coordinates of a possibly
huge ``d`` (section 8), and test inputs touch fresh coordinates whose weights are
still their initial draws. So the initial weight of entry (row ``m``, coordinate
``k``) must be a pure function of ``(seed, m, k)``: the same coordinate always gets
the same initial weights, whatever coordinates were asked for before and in what
order, and no array of size ``d`` is ever built.

This is done with a counter-based generator: the 64-bit key
``(seed, row, coordinate, draw)`` is mixed by the SplitMix64 finalizer into uniform
bits, and two uniforms give one standard normal by the Box-Muller transform. All of
it is vectorized over rows and coordinates.
"""

from __future__ import annotations

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_ROW_STRIDE = np.uint64(0xD1B54A32D192ED03)
_DRAW_STRIDE = np.uint64(0x8CB92BA72F3D8DD7)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finalizer (wrapping uint64 arithmetic), elementwise."""
    x = x + _GOLDEN
    x = (x ^ (x >> np.uint64(30))) * _MIX1
    x = (x ^ (x >> np.uint64(27))) * _MIX2
    return x ^ (x >> np.uint64(31))


def _uniform01(bits: np.ndarray) -> np.ndarray:
    """53 high bits -> uniform on (0, 1] (never 0, so ``log`` is safe)."""
    return ((bits >> np.uint64(11)).astype(np.float64) + 1.0) * (1.0 / 2.0**53)


def coordinate_normals(seed: int, rows: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """Standard normals indexed by (seed, row, coordinate).

    Parameters
    ----------
    seed : int
        Run seed (>= 0).
    rows : (M,) int array
        Weight-row indices (``0 .. 2 m_k + 2 m_v - 1`` in stacked order).
    coords : (D,) int array
        Input coordinates (``0 .. d - 1``).

    Returns
    -------
    (M, D) float64 array of i.i.d. ``N(0, 1)`` values; entry ``[a, b]`` depends only
    on ``(seed, rows[a], coords[b])``.
    """
    rows = np.asarray(rows, dtype=np.uint64)[:, None]          # (M, 1)
    coords = np.asarray(coords, dtype=np.uint64)[None, :]      # (1, D)
    with np.errstate(over="ignore"):
        key = _splitmix64(np.full(1, seed, dtype=np.uint64))   # (1,)
        base = _splitmix64(key ^ (rows * _ROW_STRIDE)) ^ coords  # (M, D)
        u1 = _uniform01(_splitmix64(base))
        u2 = _uniform01(_splitmix64(base ^ _DRAW_STRIDE))
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)


def initial_weights(seed: int, n_rows: int, coords: np.ndarray, sigma_0: float) -> np.ndarray:
    """Initial stacked weights ``W_0`` restricted to ``coords``: ``(M, D)``, entries
    ``N(0, sigma_0^2)``. Row order: ``W_Q`` (m_k), ``W_K`` (m_k), ``W_{V,+1}`` (m_v),
    ``W_{V,-1}`` (m_v)."""
    return sigma_0 * coordinate_normals(seed, np.arange(n_rows), coords)
