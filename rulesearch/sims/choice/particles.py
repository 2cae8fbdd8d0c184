"""Particle-filter likelihood of recorded choices: the fly model's decisions marginalised over the
input noise the data do not record and over the unknown initial weights, by sequential Monte Carlo.

The weight filter (kernel.py) approximates each animal's belief over its weights by a Gaussian and
linearises tanh and the update around its mean. At large learning rates that belief is far from
Gaussian and the filter's likelihood curves where the exact one is flat: on 18 flies from
``x*(r - rbar)`` at eta 1, readout 2 (seed 1, 6072 fitted decisions), ``c*x*(r - rbar)`` scores 19.9
nats worse at c = 1 than at c = 0.6 under the filter, and 0.2-2.2 under this likelihood
(benchmarks/fly_marginal.py; README, "Where the filter is approximate").
Here each particle is one possible animal: initial weights drawn from the prior, its own input
noise at every encounter, reweighted by every decision of a fitted trial (held-out decisions are
only scored), resampled (systematic) when the effective sample size falls below half, updated at
each acceptance by the rule with its own input and activity. The particles are the VM's batch.

Random numbers are a counter-based hash (SplitMix64) of (seed, animal, encounter, particle): every
rule sees the same noise (common random numbers, so that rule comparisons are paired), results do
not depend on the number of threads, and nothing is stored. Slower than the filter (about 0.5 s of
CPU per rule and animal at 4000 particles) and not differentiable: rulesearch uses it to judge a
search's front (``protocol.judge_particles``), not inside the search or the fits.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from ...vm import PackedPrograms, run_program
from .kernel import _forward

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_TO_UNIT = 1.0 / 9007199254740992.0  # 2**-53


@njit(cache=True, nogil=True)
def _splitmix(z):
    z = z + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


@njit(cache=True, nogil=True)
def _uniform(key, counter):
    """U(0, 1), never 0: the hash of (key, counter)."""
    return ((_splitmix(key ^ _splitmix(np.uint64(counter))) >> np.uint64(11)) + 0.5) * _TO_UNIT


@njit(cache=True, nogil=True)
def _normal(key, counter):
    """N(0, 1) by Box-Muller from the uniforms at counters 2 counter and 2 counter + 1."""
    u1 = _uniform(key, 2 * counter)
    u2 = _uniform(key, 2 * counter + 1)
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)


@njit(cache=True, nogil=True)
def _outputs(W, x, readout, y, P, n_out, n_in):
    """Hidden activity of every particle into y (P, n_out); P(accept) per particle returned."""
    p = np.empty(P)
    for q in range(P):
        p[q] = 1.0 / (1.0 + np.exp(-_forward(W, q * n_out * n_in, x[q], n_out, n_in, readout, y[q])))
    return p


@njit(cache=True, nogil=True)
def _resample(key, counter, weights, W, x, y, P, m):
    """Systematic resampling of the particles (W rows, this encounter's x and y) by ``weights``
    (normalised); the weights become uniform."""
    u = _uniform(key, 2 * counter) / P
    idx = np.empty(P, np.int64)
    cum = weights[0]
    k = 0
    for q in range(P):
        t = u + q / P
        while cum < t and k < P - 1:
            k += 1
            cum += weights[k]
        idx[q] = k
    W2, x2, y2 = W.copy(), x.copy(), y.copy()
    for q in range(P):
        s = idx[q]
        for t in range(m):
            W[q * m + t] = W2[s * m + t]
        for j in range(x.shape[1]):
            x[q, j] = x2[s, j]
        for i in range(y.shape[1]):
            y[q, i] = y2[s, i]
        weights[q] = 1.0 / P


@njit(cache=True, nogil=True)
def _run_animal(code, arg, consts, depth, b, seed, P, odour, patterns, decision, n_enc, trial_end, n_trials, r,
                rbar, score, heldout, w0, prior_std, readout, noise_std, eta, bound):
    """Negative log-likelihood of animal b's scored decisions under one rule, and whether a particle's
    weights left the bound."""
    n_in = patterns.shape[1]
    n_out = w0.shape[1]
    m = n_out * n_in
    key = _splitmix(np.uint64(seed) * np.uint64(1000003) + np.uint64(b))
    counter = 0  # every draw of this animal has its own counter
    W = np.empty(P * m)
    for q in range(P):
        for i in range(n_out):
            for j in range(n_in):
                W[q * m + i * n_in + j] = w0[b, i, j] + prior_std * _normal(key, counter)
                counter += 1
    weights = np.full(P, 1.0 / P)
    x = np.empty((P, n_in))
    y = np.empty((P, n_out))
    pre = np.empty((1, P, n_in))
    post = np.empty((1, P, n_out))
    syn = np.empty((1, P * m))
    trial = np.empty((2, P))
    stack = np.empty((depth, P * m))
    dw = np.empty(P * m)
    nll = 0.0
    e = 0
    for k in range(n_trials[b] + 1):
        last = trial_end[b, k] if k < n_trials[b] else n_enc[b] - 1
        condition = not heldout[k]
        while e <= last:
            pat = patterns[odour[b, e]]
            for q in range(P):
                for j in range(n_in):
                    x[q, j] = pat[j] + noise_std * _normal(key, counter)
                    counter += 1
            p = _outputs(W, x, readout, y, P, n_out, n_in)
            accepted = decision[b, e] == 1
            total = 0.0
            for q in range(P):
                lik = p[q] if accepted else 1.0 - p[q]
                lik = max(lik, 1e-300)
                p[q] = weights[q] * lik
                total += p[q]
            if score[b, k] > 0:
                nll -= np.log(total)
            if condition:
                ess_inv = 0.0
                for q in range(P):
                    weights[q] = p[q] / total
                    ess_inv += weights[q] * weights[q]
                if ess_inv * P > 2.0:  # effective sample size below P / 2
                    _resample(key, counter, weights, W, x, y, P, m)
                    counter += 1
            e += 1
        if k == n_trials[b]:
            break
        for q in range(P):  # the acceptance: every particle's own input and activity
            for j in range(n_in):
                pre[0, q, j] = x[q, j]
            for i in range(n_out):
                post[0, q, i] = y[q, i]
            trial[0, q] = r[b, k]
            trial[1, q] = rbar[b, k]
        for t in range(P * m):
            syn[0, t] = W[t]
        run_program(code, arg, consts, pre, post, syn, trial, stack, dw)
        for t in range(P * m):
            v = W[t] + eta * dw[t]
            if not abs(v) <= bound:
                return nll, True
            W[t] = v
    return nll, False


@njit(cache=True, parallel=True, nogil=True)
def _population(code, arg, consts, code_start, const_start, depth, seed, P, odour, patterns, decision, n_enc,
                trial_end, n_trials, r, rbar, score, heldout, w0, prior_std, readout, noise_std, eta, bound):
    n_ind = code_start.shape[0] - 1
    A = odour.shape[0]
    nll = np.zeros((n_ind, A))
    blown = np.zeros((n_ind, A), np.bool_)
    for job in prange(n_ind * A):
        ind, b = job // A, job % A
        c0, c1 = code_start[ind], code_start[ind + 1]
        k0, k1 = const_start[ind], const_start[ind + 1]
        nll[ind, b], blown[ind, b] = _run_animal(code[c0:c1], arg[c0:c1], consts[k0:k1], depth, b, seed, P, odour,
                                                 patterns, decision, n_enc, trial_end, n_trials, r, rbar, score,
                                                 heldout, w0, prior_std, readout, noise_std, eta, bound)
    return nll, blown


def particle_nll(packed: PackedPrograms, arrays, w0: np.ndarray, readout: np.ndarray, eta: float,
                 weight_bound: float, noise_var: float, prior_var: float, particles: int,
                 seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Each rule's negative log-likelihood of each animal's scored decisions (n_rules, animals), nats,
    marginalised over the unrecorded input noise (variance ``noise_var`` per input and encounter)
    and the initial weights (N(w0, prior_var) per synapse) with ``particles`` particles; and
    whether each rule's weights blew up (n_rules,). ``arrays``: the kernel's ChoiceArrays."""
    a = arrays
    if particles < 1:
        raise ValueError(f"particles must be >= 1, got {particles}")
    nll, blown = _population(
        packed.code, packed.arg, packed.consts, packed.code_start, packed.const_start, packed.depth, int(seed),
        int(particles), a.odour, a.patterns, a.decision, a.n_enc, a.trial_end, a.n_trials, a.r, a.rbar, a.score,
        a.heldout, np.ascontiguousarray(w0, np.float64), float(np.sqrt(prior_var)),
        np.ascontiguousarray(readout, np.float64), float(np.sqrt(noise_var)), float(eta), float(weight_bound))
    return nll, blown.any(axis=1)
