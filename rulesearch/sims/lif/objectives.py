"""Objectives of the spiking simulator."""
from __future__ import annotations

import numpy as np


def output_rates(task, result) -> np.ndarray:
    """Output rate (Hz) of neuron 0 in the scoring window, (n_ind, trials)."""
    s, c = task.state, task.config
    window_s = (s.n_steps - s.score_from) * c.dt_ms * 1e-3
    return result.spikes_scored[:, :, 0] / window_s


def balance(task, result) -> np.ndarray:
    """Pearson correlation across channels between the mean final inhibitory weight and the
    excitatory weight of each channel, (n_ind, trials); 0 where the inhibitory profile is flat
    (no tuning at all) or there are no inhibitory afferents."""
    s = task.state
    inh = ~s.exc
    n_ind, trials = result.w_final.shape[:2]
    if not inh.any() or len(s.tuning) < 2:
        return np.zeros((n_ind, trials))
    counts = np.bincount(s.channel[inh], minlength=len(s.tuning))
    w = result.w_final[:, :, 0][..., inh]  # (n_ind, trials, n_inh)
    profile = np.zeros((n_ind, trials, len(s.tuning)))
    for k in range(len(s.tuning)):
        profile[..., k] = w[..., s.channel[inh] == k].mean(axis=-1) if counts[k] else 0.0
    a = profile - profile.mean(axis=-1, keepdims=True)
    b = s.tuning - s.tuning.mean()
    denom = np.sqrt((a * a).sum(axis=-1) * (b * b).sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = (a * b).sum(axis=-1) / denom
    return np.where(denom > 1e-12, corr, 0.0)


def target_rate_loss(task, result) -> np.ndarray:
    """Mean over trials of ((rate - target) / target)^2 + balance_weight * (1 - tuning correlation).

    Infinite (the task's worst loss) where the neuron is silent in the scoring window of some trial, fires above
    ``objective.max_rate`` in some trial, or its weights blew up (non-finite).
    """
    c = task.config
    rates = output_rates(task, result)
    rel = (rates - c.target_rate_hz) / c.target_rate_hz
    loss = np.mean(rel ** 2, axis=1) + c.balance_weight * np.mean(1.0 - balance(task, result), axis=1)
    bad = (rates <= 0).any(axis=1) | (rates > c.max_rate_hz).any(axis=1) | result.blown
    return np.where(bad, np.inf, loss)
