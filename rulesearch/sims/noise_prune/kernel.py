"""Numba kernels of the noise-pruning simulator.

``sampled_covariance``: the covariance of a simulated noise-driven run (Euler-Maruyama), the
alternative to the exact Lyapunov solution. ``prune_population``: for every candidate rule's
scores, the keep probabilities p_ij = min(1, k * score_ij), then one pruned network per shared
sampling draw and its eigenvalues. Randomness comes in as arrays drawn from explicit seeds, so
every candidate sees the same draws (common random numbers: two rules are compared on the same
coin flips).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit, prange
from threadpoolctl import threadpool_limits

from ...vm import FASTMATH

CHUNK_STEPS = 2000  # noise is drawn (by NumPy, from the seed) and integrated this many steps at a time


@dataclass(frozen=True)
class PruneResult:
    """What the pruned networks of a population look like."""

    eigenvalues: np.ndarray  # (n_ind, samples, n) ascending, of each pruned network
    kept: np.ndarray  # (n_ind, samples) fraction of the synapses kept in each draw
    expected_kept: np.ndarray  # (n_ind,) sum of p_ij / number of synapses
    blown: np.ndarray  # bool (n_ind,): a non-finite score, or no positive score at all
    trajectory_error: np.ndarray | None = None  # (n_ind, samples) when trajectories are compared
    matrices: np.ndarray | None = None  # recorded: (n_ind, samples, n, n) pruned networks


# ---------------------------------------------------------------- noise-driven runs

@njit(cache=True, fastmath=FASTMATH, nogil=True)
def _ou_steps(A, x, noise, dt, scale, cov, accumulate):
    """Euler-Maruyama steps x <- x + dt A x + scale * noise[t] (scale = sigma sqrt(dt)), noise
    (steps, n); when ``accumulate``, add x x^T (upper triangle) into cov after every step."""
    n = x.shape[0]
    ax = np.empty(n)
    for t in range(noise.shape[0]):
        for i in range(n):
            s = 0.0
            row = A[i]
            for j in range(n):
                s += row[j] * x[j]
            ax[i] = s
        for i in range(n):
            x[i] += dt * ax[i] + scale * noise[t, i]
        if accumulate:
            for i in range(n):
                xi = x[i]
                ci = cov[i]
                for j in range(i, n):
                    ci[j] += xi * x[j]


@njit(cache=True, fastmath=FASTMATH, nogil=True)
def _trajectory_error(B, noise, dt, scale, reference):
    """sqrt(sum_t |x_t - ref_t|^2 / sum_t |ref_t|^2) for the run of dx/dt = B x + sigma xi from
    x = 0 with the same noise as the reference run ``reference`` (steps, n) of the original network."""
    n = B.shape[0]
    x = np.zeros(n)
    bx = np.empty(n)
    num = 0.0
    den = 0.0
    for t in range(noise.shape[0]):
        for i in range(n):
            s = 0.0
            for j in range(n):
                s += B[i, j] * x[j]
            bx[i] = s
        for i in range(n):
            x[i] += dt * bx[i] + scale * noise[t, i]
            d = x[i] - reference[t, i]
            num += d * d
            den += reference[t, i] * reference[t, i]
    return np.sqrt(num / den) if den > 0 else 0.0


def noise_trajectory(A: np.ndarray, noise: np.ndarray, dt: float, sigma: float) -> np.ndarray:
    """The run (steps, n) of dx/dt = A x + sigma xi from x = 0 by Euler-Maruyama, noise (steps, n)."""
    A = np.ascontiguousarray(A, np.float64)
    noise = np.ascontiguousarray(noise, np.float64)
    out = np.empty_like(noise)
    x = np.zeros(A.shape[0])
    for t in range(noise.shape[0]):  # NumPy per step: done once per task, not per candidate
        x = x + dt * (A @ x) + sigma * np.sqrt(dt) * noise[t]
        out[t] = x
    return out


def noise_run_steps(A: np.ndarray, dt: float, sample_time: float, burn_in_time: float) -> tuple[int, int]:
    """(burn-in steps, sampled steps) of a run of ``sample_time`` after ``burn_in_time``."""
    return int(np.ceil(burn_in_time / dt)), max(1, int(round(sample_time / dt)))


def sampled_covariance(A: np.ndarray, sigma: float, dt: float, sample_time: float, burn_in_time: float,
                       seed: int) -> np.ndarray:
    """Covariance (n, n) of dx/dt = A x + sigma xi estimated from one simulated run.

    The run starts at x = 0, is integrated by Euler-Maruyama with step ``dt`` (time units of A)
    for ``burn_in_time`` (not sampled: the start is far from stationary), then for
    ``sample_time``; the estimate is mean_t x_t x_t^T (the stationary mean is 0). Its bias is
    O(dt) (a mode of eigenvalue lambda has variance sigma^2 / (2|lambda|) / (1 - |lambda| dt / 2)),
    its noise ~ sqrt(2 tau / sample_time) for a mode of time constant tau. Noise: standard
    normals from ``np.random.default_rng(seed)``, ``CHUNK_STEPS`` steps at a time.
    """
    A = np.ascontiguousarray(A, np.float64)
    n = A.shape[0]
    if dt <= 0 or sample_time <= 0 or burn_in_time < 0:
        raise ValueError(f"dt {dt}, sample_time {sample_time}, burn_in_time {burn_in_time}: expected "
                         "positive dt and sample_time, non-negative burn_in_time")
    burn, steps = noise_run_steps(A, dt, sample_time, burn_in_time)
    rng = np.random.default_rng(seed)
    x = np.zeros(n)
    cov = np.zeros((n, n))
    scale = sigma * np.sqrt(dt)
    for total, accumulate in ((burn, False), (steps, True)):
        done = 0
        while done < total:
            k = min(CHUNK_STEPS, total - done)
            _ou_steps(A, x, rng.standard_normal((k, n)), dt, scale, cov, accumulate)
            done += k
    cov /= steps
    return np.triu(cov) + np.triu(cov, 1).T


# ---------------------------------------------------------------- pruning

@njit(cache=True, nogil=True)
def _keep_probabilities(score, keep_count, p):
    """p = min(1, k * max(score, 0)) with k such that sum(p) = keep_count ("water filling": the
    largest scores are capped at 1 and k is re-solved on the rest). Scores <= 0 give p = 0; when
    fewer than keep_count scores are positive, each positive one gets p = 1. The scores are
    divided by their largest first (p does not change; sums cannot overflow).
    Returns False when a score is NaN or inf or none is positive (p untouched)."""
    m = score.shape[0]
    top = 0.0
    for k in range(m):
        s = score[k]
        if not np.isfinite(s):
            return False
        top = max(top, s)
    if not top > 0.0:
        return False
    v = np.empty(m)
    positive = 0
    for k in range(m):
        s = score[k] / top
        if s > 0.0:
            v[positive] = s
            positive += 1
    if keep_count >= positive:
        for k in range(m):
            p[k] = 1.0 if score[k] > 0.0 else 0.0
        return True
    v = -np.sort(-v[:positive])  # descending
    tail = np.empty(positive + 1)
    tail[positive] = 0.0
    for k in range(positive - 1, -1, -1):
        tail[k] = tail[k + 1] + v[k]
    scale = 0.0
    for capped in range(positive):  # the first 'capped' scores have p = 1
        scale = (keep_count - capped) / tail[capped]
        if scale * v[capped] <= 1.0:
            break
    for k in range(m):
        s = score[k]
        p[k] = min(1.0, scale * s / top) if s > 0.0 else 0.0
    return True


@njit(cache=True, nogil=True)
def _pruned(rows, cols, w, margin, p, u, B):
    """The pruned network into B (n, n): synapse pair k = (rows[k], cols[k]) is kept when
    u[k] < p[k], as w[k] / p[k] on both sides; the diagonal is margin_i - sum_j |B_ij| (the
    published row-sum compensation). Returns the number of pairs kept."""
    n = B.shape[0]
    B[:] = 0.0
    kept = 0
    for k in range(rows.shape[0]):
        if u[k] < p[k]:
            v = w[k] / p[k]
            B[rows[k], cols[k]] = v
            B[cols[k], rows[k]] = v
            kept += 1
    for i in range(n):
        s = 0.0
        for j in range(n):
            if j != i:
                s += abs(B[i, j])
        B[i, i] = margin[i] - s
    return kept


@njit(cache=True, parallel=True)
def _prune_population(scores, rows, cols, w, margin, keep_count, uniforms, n, record, matrices,
                      noise, dt, scale, reference):
    n_ind, m = scores.shape
    samples = uniforms.shape[0]
    eig = np.zeros((n_ind, samples, n))
    kept = np.zeros((n_ind, samples))
    traj = np.zeros((n_ind, samples))
    expected = np.zeros(n_ind)
    blown = np.zeros(n_ind, np.bool_)
    for ind in prange(n_ind):
        p = np.empty(m)
        if not _keep_probabilities(scores[ind], keep_count, p):
            blown[ind] = True
            continue
        expected[ind] = p.sum() / m
        B = np.empty((n, n))
        for s in range(samples):
            kept[ind, s] = _pruned(rows, cols, w, margin, p, uniforms[s], B) / m
            if noise.shape[0] > 0:
                traj[ind, s] = _trajectory_error(B, noise, dt, scale, reference)
            eig[ind, s] = np.linalg.eigvalsh(B)
            if record:
                matrices[ind, s] = B
    return eig, kept, expected, blown, traj


def keep_probabilities(score: np.ndarray, keep: float) -> np.ndarray:
    """p (m,) for one rule's scores (m,) and the kept fraction ``keep``; ValueError when the
    scores are not usable (a NaN or inf, or none positive)."""
    score = np.ascontiguousarray(score, np.float64)
    p = np.empty_like(score)
    if not _keep_probabilities(score, keep * score.shape[0], p):
        raise ValueError("scores have NaN or inf, or none is positive: nothing can be kept")
    return p


def prune_population(scores: np.ndarray, rows: np.ndarray, cols: np.ndarray, w: np.ndarray, margin: np.ndarray,
                     keep: float, uniforms: np.ndarray, record: bool = False,
                     trajectories: tuple | None = None) -> PruneResult:
    """Prune the network once per row of ``uniforms`` under each rule's scores.

    scores (n_ind, m): one score per synapse pair k = (rows[k] < cols[k]) and rule; w (m,) the
    pairs' weights A_ij; margin (n,) = A_ii + sum_j |A_ij| (<= 0: what the diagonal has beyond the
    off-diagonal row sums, kept as it is); keep: expected kept fraction in (0, 1]; uniforms
    (samples, m) in [0, 1), shared by all rules. ``record`` keeps every pruned matrix
    (n_ind * samples * n * n floats). ``trajectories`` = (noise (steps, n), dt, sigma, reference
    (steps, n)): also run every pruned network on that noise and compare with the original's run
    ``reference`` (``noise_trajectory``); costs steps * n^2 per draw.
    """
    scores = np.ascontiguousarray(scores, np.float64)
    uniforms = np.ascontiguousarray(uniforms, np.float64)
    margin = np.ascontiguousarray(margin, np.float64)
    n_ind, m = scores.shape
    if not (rows.shape == cols.shape == w.shape == (m,) and uniforms.shape[1] == m):
        raise ValueError(f"scores {scores.shape}, rows {rows.shape}, cols {cols.shape}, w {w.shape} and uniforms "
                         f"{uniforms.shape} must agree on the number of synapse pairs")
    if not 0 < keep <= 1:
        raise ValueError(f"keep {keep}: expected a fraction in (0, 1]")
    n = margin.shape[0]
    matrices = np.zeros((n_ind, uniforms.shape[0], n, n) if record else (1, 1, 1, 1))
    # One LAPACK thread per eigenvalue problem: the parallelism is over individuals (prange), and
    # BLAS threads spinning inside every Numba thread made a search 25x slower on a busy 2-core machine.
    if trajectories is None:
        noise, dt, sigma, reference = np.zeros((0, n)), 0.0, 0.0, np.zeros((0, n))
    else:
        noise, dt, sigma, reference = trajectories
    with threadpool_limits(limits=1, user_api="blas"):
        eig, kept, expected, blown, traj = _prune_population(scores, np.ascontiguousarray(rows, np.int64),
                                                       np.ascontiguousarray(cols, np.int64),
                                                       np.ascontiguousarray(w, np.float64), margin, keep * m,
                                                       uniforms, n, record, matrices,
                                                       np.ascontiguousarray(noise, np.float64), float(dt),
                                                       float(sigma * np.sqrt(dt)),
                                                       np.ascontiguousarray(reference, np.float64))
    return PruneResult(eig, kept, expected, blown, traj if trajectories is not None else None,
                       matrices if record else None)


def pruned_matrix(rows: np.ndarray, cols: np.ndarray, w: np.ndarray, margin: np.ndarray, p: np.ndarray,
                  u: np.ndarray) -> np.ndarray:
    """One pruned network (n, n) for keep probabilities p (m,) and one draw u (m,)."""
    B = np.empty((margin.shape[0], margin.shape[0]))
    _pruned(np.ascontiguousarray(rows, np.int64), np.ascontiguousarray(cols, np.int64),
            np.ascontiguousarray(w, np.float64), np.ascontiguousarray(margin, np.float64),
            np.ascontiguousarray(p, np.float64), np.ascontiguousarray(u, np.float64), B)
    return B
