"""Activity and weight metrics of a recurrent E/I network (Confavreux et al. 2023) and the
constraints on them.

Each function takes summary arrays the kernel accumulates (never the raw spike trains, which a
population of thousands of networks would not hold) and returns one value per individual:

- ``rates``: spikes per neuron and second of the scoring window, over a population's neurons;
- ``cv_isi``: mean over neurons with at least 3 inter-spike intervals in the window of
  std(ISI) / mean(ISI) (population std, as ``np.std``); NaN when no neuron has 3;
- ``fano``: mean over neurons with more than 3 spikes in the window of var / mean of their spike
  counts in consecutive bins (100 ms by default; ``np.var``); NaN when no neuron qualifies;
- ``w_blow``: fraction of weights at 0 or w_max, averaged over weight snapshots every 100 ms strictly
  inside the scoring window (as published: fSBI's weight monitor every 0.1 s, t_start < t < t_stop),
  then over the pathways;
- ``w_creep``: max over pathways of |2 (end - start) / (end + start)|, the relative change of
  the mean weight over the scoring window, for pathways with start + end > ``CREEP_FLOOR``.

The published analysis (fSBI ``analyse.py``) counts a neuron with too few spikes as CV 0 and
Fano 0; here such neurons are left out, so that a short scoring window does not drag a
low-rate network's CV below its bound by the neurons that happened not to fire 4 times.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CREEP_FLOOR = 0.1  # published: pathways whose mean weight is about 0 have no relative drift
MIN_ISIS = 3  # a neuron's CV needs this many intervals (published: more than 2)
MIN_SPIKES_FANO = 4  # a neuron's Fano factor needs more than 3 spikes (published)


@dataclass(frozen=True)
class Constraint:
    """A metric's allowed range [low, high]; ``stage``: 0 rates, 1 weights, 2 the rest (the order
    in which a staged family filter adds them)."""

    metric: str
    low: float
    high: float
    stage: int

    def holds(self, values: np.ndarray) -> np.ndarray:
        """Bool per value; NaN (not measurable, e.g. an exploded network) never holds."""
        values = np.asarray(values, float)
        with np.errstate(invalid="ignore"):
            return (values >= self.low) & (values <= self.high)

    def text(self) -> str:
        return f"{self.low:g} <= {self.metric} <= {self.high:g}"


def rates(counts: np.ndarray, window_s: np.ndarray) -> np.ndarray:
    """counts (n_ind, n_neurons, n_bins), window_s (n_ind,) -> Hz (n_ind,); NaN for an empty window."""
    total = counts.sum(axis=(1, 2)) / max(counts.shape[1], 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(window_s > 0, total / np.where(window_s > 0, window_s, 1.0), np.nan)


def cv_isi(isi_n: np.ndarray, isi_sum: np.ndarray, isi_sum2: np.ndarray) -> np.ndarray:
    """(n_ind, n_neurons) number, sum and sum of squares of each neuron's ISIs -> mean CV (n_ind,)."""
    ok = isi_n >= MIN_ISIS
    n = np.where(ok, isi_n, 1.0)
    mean = isi_sum / n
    var = np.maximum(isi_sum2 / n - mean * mean, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        cv = np.where(ok, np.sqrt(var) / np.where(mean > 0, mean, 1.0), 0.0)
        return np.where(ok.any(axis=1), cv.sum(axis=1) / ok.sum(axis=1), np.nan)


def fano(counts: np.ndarray) -> np.ndarray:
    """(n_ind, n_neurons, n_bins) spike counts -> mean Fano factor over neurons (n_ind,)."""
    total = counts.sum(axis=2)
    ok = total >= MIN_SPIKES_FANO
    mean = counts.mean(axis=2)
    var = counts.var(axis=2)
    with np.errstate(invalid="ignore", divide="ignore"):
        f = np.where(ok, var / np.where(mean > 0, mean, 1.0), 0.0)
        return np.where(ok.any(axis=1), f.sum(axis=1) / ok.sum(axis=1), np.nan)


def w_blow(w_bound: np.ndarray) -> np.ndarray:
    """(n_ind, n_pathways) fraction of each pathway's weights at a bound (averaged over the window's
    snapshots by the kernel) -> mean over pathways."""
    return w_bound.mean(axis=1)


def w_creep(w_start: np.ndarray, w_end: np.ndarray) -> np.ndarray:
    """(n_ind, n_pathways) mean weights at the start and end of the window -> max relative drift."""
    total = w_start + w_end
    big = total > CREEP_FLOOR
    with np.errstate(invalid="ignore", divide="ignore"):
        drift = np.where(big, np.abs(2.0 * (w_end - w_start) / np.where(big, total, 1.0)), 0.0)
    return drift.max(axis=1, initial=0.0)
