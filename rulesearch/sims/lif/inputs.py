"""Poisson afferents grouped in channels whose rates fluctuate in time (Vogels et al. 2011).

Channel k's rate is rate_hz * drive * max(0, s_k(t)), where s_k is an Ornstein-Uhlenbeck
process with mean 1, standard deviation ``fluctuation`` and correlation time ``tau_ms``
(independent across channels). Every afferent of a channel, excitatory or inhibitory, fires as
an inhomogeneous Poisson process with that rate, so a channel's excitation and inhibition are
co-modulated. Spikes are drawn per step as the superposition of the channel's afferents
(Poisson count, then uniformly chosen afferents), at most one spike per afferent per step.
"""
from __future__ import annotations

import numpy as np


def channel_rates(rng: np.random.Generator, n_channels: int, n_steps: int, dt_ms: float, rate_hz: float,
                  fluctuation: float, tau_ms: float) -> np.ndarray:
    """Rates (n_channels, n_steps) in Hz; the OU process starts in its stationary distribution."""
    from scipy.signal import lfilter  # here, not at import: scipy.signal costs every command 0.5 s

    a = np.exp(-dt_ms / tau_ms)
    noise = rng.normal(size=(n_channels, n_steps))
    noise[:, 0] *= 1.0 / np.sqrt(1.0 - a * a)  # stationary start
    s = lfilter([np.sqrt(1.0 - a * a)], [1.0, -a], noise, axis=1)
    return rate_hz * np.maximum(0.0, 1.0 + fluctuation * s)


def poisson_spikes(rng: np.random.Generator, rates_hz: np.ndarray, groups: list[np.ndarray],
                   dt_ms: float) -> tuple[np.ndarray, np.ndarray]:
    """Spikes of afferent groups; group g's afferents all fire with rate ``rates_hz[g]`` (n_steps,).

    Returns (ptr (n_steps + 1,), afferent (n_spikes,)): the spikes of step s are
    ``afferent[ptr[s]:ptr[s + 1]]``, sorted by afferent within a step.
    """
    n_steps = rates_hz.shape[1]
    steps, affs = [], []
    for g, members in enumerate(groups):
        if len(members) == 0:
            continue
        p = np.minimum(rates_hz[g] * dt_ms * 1e-3, 1.0)
        counts = rng.poisson(len(members) * p)
        step = np.repeat(np.arange(n_steps), counts)
        steps.append(step)
        affs.append(np.asarray(members)[rng.integers(0, len(members), size=len(step))])
    step = np.concatenate(steps) if steps else np.zeros(0, np.int64)
    aff = np.concatenate(affs) if affs else np.zeros(0, np.int64)
    n_aff = 1 + max((int(np.max(m)) for m in groups if len(m)), default=0)
    key = np.unique(step.astype(np.int64) * n_aff + aff)  # sorted; one spike per afferent and step
    step, aff = key // n_aff, key % n_aff
    ptr = np.searchsorted(step, np.arange(n_steps + 1)).astype(np.int64)
    return ptr, aff.astype(np.int64)


def tuning(n_channels: int, base: float, peak: float, preferred: int, width: float) -> np.ndarray:
    """Excitatory weight per channel: base + peak / (1 + ((k - preferred) / width)^4)."""
    k = np.arange(n_channels)
    return base + peak / (1.0 + ((k - preferred) / width) ** 4)
