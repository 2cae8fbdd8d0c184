"""The ``sbi`` proposal backend of ``rulesearch families``: neural posterior estimation, as the
published families study used (Confavreux et al. 2023, fSBI). Optional: ``pip install sbi`` (it
brings PyTorch); without it the backend is refused with one line.

A round's proposal from the simulations so far:
1. a density estimator q(theta | x) is trained by sbi's NPE (a masked autoregressive flow) on every
   simulation whose checked metrics could be measured: theta the candidate's parameters in the
   prior's unit box (prior: uniform on the box), x those metrics, each clipped to its allowed range
   widened by ``CLIP_SPAN`` range widths on either side so that an exploded network's 500 Hz does not
   dominate the scaling;
2. every candidate gets its own target x_o, drawn uniformly from the constraints' allowed ranges (a
   one-sided range is closed at the most extreme value the simulations reached), and one theta from
   q(theta | x_o) inside the box (sbi rejects what leaks outside).

Conditioning on targets spread over the allowed ranges, rather than on one point, asks for every
plausible network the constraints admit, which is what a family is. Seeded: training and sampling
use torch's generator seeded from the round's own generator, inside ``torch.random.fork_rng``,
which restores torch's global state afterwards.
"""
from __future__ import annotations

import contextlib
import io
import warnings

import numpy as np

CLIP_SPAN = 2.0  # metrics are clipped to [low - 2 w, high + 2 w] for a range of width w
MIN_TRAINING = 20  # fewer measured simulations than this: the prior instead


def available() -> bool:
    try:
        import sbi  # noqa: F401
    except ImportError:
        return False
    return True


def propose_sbi(theta: np.ndarray, metrics: np.ndarray, low: np.ndarray, high: np.ndarray, n: int,
                rng: np.random.Generator) -> np.ndarray:
    """n candidates in the unit box from q(theta | x_o), x_o uniform in the allowed ranges.

    theta: (N, d) simulated candidates in the unit box; metrics: (N, m) their checked metrics (NaN:
    not measured, e.g. an exploded network; such rows are left out); low, high: (m,) the allowed
    range of each metric (-inf / inf for an open side). Returns (n, d)."""
    import torch
    from sbi.inference import NPE
    from sbi.utils import BoxUniform

    theta = np.asarray(theta, float)
    metrics = np.asarray(metrics, float).reshape(len(theta), -1)
    low, high = np.asarray(low, float), np.asarray(high, float)
    ok = np.all(np.isfinite(metrics), axis=1)
    if ok.sum() < MIN_TRAINING:
        return rng.random((n, theta.shape[1]))
    theta, metrics = theta[ok], metrics[ok]
    seen_low, seen_high = metrics.min(axis=0), metrics.max(axis=0)
    lo = np.where(np.isfinite(low), low, seen_low)  # a one-sided range closed where the data reach
    hi = np.where(np.isfinite(high), high, seen_high)
    hi = np.maximum(hi, lo)
    width = np.maximum(hi - lo, 1e-9)
    x = np.clip(metrics, lo - CLIP_SPAN * width, hi + CLIP_SPAN * width)
    targets = lo + rng.random((n, len(lo))) * (hi - lo)
    seed = int(rng.integers(2 ** 31))
    # sbi prints its training summary and warns about its own batch sizes: neither is the user's concern
    with torch.random.fork_rng(), contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        torch.manual_seed(seed)
        d = theta.shape[1]
        prior = BoxUniform(torch.zeros(d), torch.ones(d))
        inference = NPE(prior=prior, density_estimator="maf", show_progress_bars=False)
        inference.append_simulations(torch.as_tensor(theta, dtype=torch.float32),
                                     torch.as_tensor(x, dtype=torch.float32))
        inference.train(show_train_summary=False)
        posterior = inference.build_posterior()
        samples = posterior.sample_batched((1,), x=torch.as_tensor(targets, dtype=torch.float32),
                                           show_progress_bars=False)
    out = samples.reshape(n, d).numpy().astype(float)
    return np.clip(out, 0.0, 1.0)
