"""Losses of the rate network: the function a network should reach (PCA), or recorded activity."""
from __future__ import annotations

import numpy as np

from .kernel import RateResult


def pca_loss(task, result: RateResult) -> np.ndarray:
    """Mean over trials of (1 - cos^2(w, pc1)) + (|w| - 1)^2 for a single output neuron.

    w is the weight vector averaged over the last ``objective.average_fraction`` of
    each trial, so that the loss measures the rule's fixed point rather than the
    fluctuations that any finite learning rate leaves around it.
    """
    w = result.w_mean[:, :, 0, :]  # (n_ind, trials, n_in)
    norm = np.linalg.norm(w, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = np.abs(w @ task.state.pc1) / norm
    loss = (1.0 - cos**2) + (norm - 1.0) ** 2
    return np.where(norm > 0, loss, 2.0).mean(axis=1)


def pca_subspace_parts(W: np.ndarray, M: np.ndarray | None, pcs: np.ndarray, cov: np.ndarray,
                       hierarchical: bool) -> dict:
    """The parts of ``pca_subspace_loss`` for weights W (..., k, n_in) and lateral M (..., k, k).

    subspace: 1 - ||U^T B||_F^2 / k, U the top-k principal axes (n_in, k), B an orthonormal
    basis of W's row space (missing rank counts as 0), i.e. the mean sin^2 of the principal
    angles; hierarchical networks instead score the alignment of row i with the i-th axis,
    mean_i (1 - cos^2(w_i, u_i)). norm: mean_i (|w_i| - 1)^2. decorrelation: mean over
    i != l of the squared correlation of outputs i and l, with the outputs' covariance
    F C F^T, F = (I - M)^-1 W. Each (...,).
    """
    k = W.shape[-2]
    U = pcs[:, :k]
    norms = np.linalg.norm(W, axis=-1)  # (..., k)
    norm = np.mean((norms - 1.0) ** 2, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        if hierarchical:
            cos = np.einsum("...ij,ji->...i", W, U) / norms
            subspace = np.mean(1.0 - np.nan_to_num(cos) ** 2, axis=-1)
        else:
            u, s, _ = np.linalg.svd(np.swapaxes(W, -1, -2), full_matrices=False)  # (..., n_in, k)
            rank_ok = s > 1e-9 * np.maximum(s[..., :1], 1e-300)
            proj = np.einsum("ni,...nj->...ij", U, u) ** 2  # (..., k, k)
            subspace = 1.0 - np.sum(proj * rank_ok[..., None, :], axis=(-1, -2)) / k
        singular = np.zeros(W.shape[:-2], bool)
        if M is None:
            F = W
        else:
            A = np.eye(k) - M
            singular = ~(np.abs(np.linalg.det(A)) > 1e-12)
            F = np.linalg.solve(np.where(singular[..., None, None], np.eye(k), A), W)
        C = F @ cov @ np.swapaxes(F, -1, -2)
        d = np.sqrt(np.clip(np.einsum("...ii->...i", C), 0.0, None))
        rho = C / (d[..., :, None] * d[..., None, :])
        off = ~np.eye(k, dtype=bool)
        decorrelation = np.sum(np.where(off, np.nan_to_num(rho, nan=1.0) ** 2, 0.0), axis=(-1, -2)) / max(k * (k - 1), 1)
    decorrelation = np.where(singular, np.inf, decorrelation)
    return {"subspace": subspace, "norm": norm, "decorrelation": decorrelation}


def pca_subspace_loss(task, result: RateResult) -> np.ndarray:
    """Mean over trials of subspace (or alignment) + norm + decorrelation
    (``pca_subspace_parts``), on weights averaged over the last ``average_fraction`` of each trial."""
    s = task.state
    parts = pca_subspace_parts(result.w_mean, result.m_mean, s.pcs, s.cov, task.config.lateral == "hierarchical")
    loss = parts["subspace"] + parts["norm"] + parts["decorrelation"]
    return np.where(np.isfinite(loss), loss, np.inf).mean(axis=1)


def fit_activity_loss(task, result: RateResult) -> np.ndarray:
    """Mean squared error between simulated and recorded activity over recorded entries."""
    return result.sse.sum(axis=1) / np.maximum(result.count.sum(axis=1), 1)


def fit_activity_trials(task, result: RateResult) -> np.ndarray:
    """``fit_activity_loss`` split by recorded trial (n_ind, trials): each trial's squared error over
    all recorded entries, so the trials sum to the loss."""
    return result.sse / np.maximum(result.count.sum(axis=1, keepdims=True), 1)
