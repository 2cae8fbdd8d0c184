"""Losses of a pruned network: how far its dynamics moved from the original's."""
from __future__ import annotations

import numpy as np

from .kernel import PruneResult


def mode_weights(eigenvalues: np.ndarray) -> np.ndarray:
    """Weights (n,) of the modes of a stable network, summing to 1: 1 / |lambda_k|.

    A mode of eigenvalue lambda_k < 0 driven by white noise of std sigma has stationary variance
    sigma^2 / (2 |lambda_k|) and time constant 1 / |lambda_k|: the weight is each mode's share of
    the noise-driven activity, so the slow modes (eigenvalues nearest 0), which dominate the
    activity and its autocorrelation, count most. In the default networks the slowest mode
    weighs about 40 times the fastest.
    """
    w = 1.0 / np.abs(eigenvalues)
    return w / w.sum()


def relative_eigenvalue_errors(original: np.ndarray, pruned: np.ndarray) -> np.ndarray:
    """lambda'_k / lambda_k - 1 for eigenvalues sorted alike (ascending), broadcast over leading axes."""
    return pruned / original - 1.0


def slow_mode_error(original: np.ndarray, pruned: np.ndarray, fraction: float = 0.1) -> np.ndarray:
    """Median |relative error| of the slowest ``fraction`` of the eigenvalues (those nearest 0),
    over the last axis: the figure of merit of the issue (and of the benchmark)."""
    k = max(1, int(round(fraction * original.shape[-1])))
    rel = np.abs(relative_eigenvalue_errors(original, pruned))
    return np.median(rel[..., -k:], axis=-1)


def preserve_dynamics_loss(task, result: PruneResult) -> np.ndarray:
    """Mean over the shared sampling draws of sum_k q_k (lambda'_k / lambda_k - 1)^2, q = ``mode_weights``:
    the weighted mean squared relative error of the pruned network's eigenvalues (both sorted).

    Squared, so that one mode moved far costs more than many moved a little (an unbiased rule
    that keeps each synapse with probability p and rescales it by 1/p has an error variance
    that this measures). With ``pruning.trajectory_weight`` > 0 the loss adds that weight times
    the mean over draws of the relative error of the noise-driven trajectories, sqrt(sum_t
    |x'_t - x_t|^2 / sum_t |x_t|^2), the pruned and the original network driven from 0 by the
    same noise for ``pruning.trajectory_time``. Blown rules (``result.blown``) get the worst loss
    from the task.
    """
    lam0 = task.state.eigenvalues
    rel = relative_eigenvalue_errors(lam0, result.eigenvalues)  # (n_ind, samples, n)
    loss = (rel**2 @ mode_weights(lam0)).mean(axis=1)
    if result.trajectory_error is not None:
        loss = loss + task.config.trajectory_weight * result.trajectory_error.mean(axis=1)
    return loss
