"""Recurrent networks to prune and the covariance noise reveals in them.

The default networks follow Moore and Chaudhuri (2020; github.com/chaudlab/noise-prune,
``undirected_graph_fns.make_imb_clustered_graph`` and ``lin_alg_fns.shift_to_make_diagonally_dominant``):
clusters of relative sizes 1000 : 200 : 800, each a symmetric random graph of density 0.6 with
N(1, 1) weights (so about 16 % of them negative), plus sparse symmetric long-range U(0, 1)
connections (2.5 non-zero entries per neuron, 5000 for 2000 neurons as published); the whole is
scaled so that its largest eigenvalue is 1 / 1.1, and the diagonal is set to minus each row's sum
of |off-diagonal weights| (diagonally dominant, negative). Eigenvalues then lie in about
[-1.3, -0.03]: the network is stable and its slowest modes have time constants of ~30 time units.

Time is in units of A's inverse rates (dx/dt = A x + sigma xi, A in 1 / time unit).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PUBLISHED_CLUSTERS = (1000.0, 200.0, 800.0)
OFFDIAG_TOP_EIGENVALUE = 1.0 / 1.1  # the published scaling of the off-diagonal part


@dataclass(frozen=True)
class NetworkSpec:
    """How to build a default network: ``n`` neurons split in proportion to ``clusters``."""

    n: int
    clusters: tuple[float, ...]
    density: float  # within-cluster connection probability (fraction of pairs)
    long_range: float  # long-range non-zero entries per neuron (both directions of a pair count)


def cluster_sizes(n: int, clusters) -> np.ndarray:
    """Integer cluster sizes (sum n) in proportion to ``clusters``; the rounding goes to the first."""
    rel = np.asarray(clusters, float)
    sizes = np.floor(rel / rel.sum() * n).astype(np.int64)
    sizes[0] += n - sizes.sum()
    return sizes


def _random_symmetric(m: int, pairs: int, rng: np.random.Generator, weights) -> np.ndarray:
    """An (m, m) symmetric matrix with ``pairs`` distinct off-diagonal pairs set to ``weights(k)``."""
    iu, ju = np.triu_indices(m, 1)
    pick = rng.choice(len(iu), size=min(pairs, len(iu)), replace=False)
    out = np.zeros((m, m))
    out[iu[pick], ju[pick]] = weights(len(pick))
    return out + out.T


def clustered_network(spec: NetworkSpec, rng: np.random.Generator) -> np.ndarray:
    """The published test network A (n, n): symmetric, diagonally dominant, negative diagonal."""
    n = spec.n
    W = np.zeros((n, n))
    start = 0
    for m in cluster_sizes(n, spec.clusters):
        pairs = int(spec.density * m * (m - 1) / 2)
        W[start:start + m, start:start + m] = _random_symmetric(m, pairs, rng, lambda k: 1.0 + rng.normal(size=k))
        start += m
    W += _random_symmetric(n, int(spec.long_range * n) // 2, rng, lambda k: rng.random(k))
    top = _largest_eigenvalue(W)
    if top > 0:
        W *= OFFDIAG_TOP_EIGENVALUE / top
    return W - np.diag(np.abs(W).sum(axis=1))


def _largest_eigenvalue(M: np.ndarray) -> float:
    """The largest eigenvalue of a symmetric matrix (LAPACK's evr on one index: a fraction of eigvalsh)."""
    from scipy.linalg import eigh
    n = M.shape[0]
    return float(eigh(M, eigvals_only=True, subset_by_index=[n - 1, n - 1], driver="evr")[0])


def check_matrix(A: np.ndarray, where: str) -> str | None:
    """Why ``A`` cannot be pruned here (one phrase), or None: it must be a finite, square, symmetric
    matrix of at least 2 neurons with a negative diagonal, whose noise-driven activity has a
    stationary covariance (all eigenvalues < 0)."""
    if A.ndim != 2 or A.shape[0] != A.shape[1]:
        return f"has shape {A.shape}: expected a square matrix (n, n)"
    n = A.shape[0]
    if n < 2:
        return f"has shape {A.shape}: expected at least 2 neurons"
    if not np.all(np.isfinite(A)):
        return "has NaN or inf: expected finite weights"
    if not np.allclose(A, A.T, rtol=1e-10, atol=1e-12 * max(np.abs(A).max(), 1e-300)):
        return f"is not symmetric (largest |A - A^T| {np.abs(A - A.T).max():.3g}): expected A_ij = A_ji"
    d = np.diag(A)
    if np.any(d >= 0):
        i = int(np.argmax(d >= 0))
        return f"has a non-negative diagonal (A[{i},{i}] = {d[i]:g}): expected a leak A_ii < 0 on every neuron"
    if not np.any(np.triu(A, 1)):
        return "has no off-diagonal weights: expected synapses to prune"
    try:  # stable (all eigenvalues < 0) exactly when -A has a Cholesky factor
        np.linalg.cholesky(-A)
        return None
    except np.linalg.LinAlgError:
        top = _largest_eigenvalue(A)
    if top >= 0:
        return (f"is unstable (largest eigenvalue {top:.3g} >= 0): expected all eigenvalues < 0 so that "
                "noise-driven activity has a stationary covariance")
    return None


def exact_covariance(A: np.ndarray, sigma: float) -> np.ndarray:
    """Stationary covariance C (n, n) of dx/dt = A x + sigma xi: the solution of the continuous
    Lyapunov equation A C + C A^T + sigma^2 I = 0. For the symmetric, stable A pruned here it is
    C = sigma^2 (-A)^-1 / 2, solved by Cholesky (2000 neurons: ~1 s; scipy's general
    ``solve_continuous_lyapunov``, which the tests compare it with, takes about a minute)."""
    from scipy.linalg import cho_factor, cho_solve
    C = cho_solve(cho_factor(-A), (0.5 * sigma**2) * np.eye(A.shape[0]))
    return (C + C.T) / 2.0
