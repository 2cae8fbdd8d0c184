"""Fly mushroom-body choice model: odours -> plastic tanh layer -> fixed readout -> P(accept).

Each encounter presents one odour (input pattern x, n_in); hidden activity
y = tanh(W x) (n_out plastic units); P(accept) = sigmoid(readout . y). A trial
ends with an acceptance; then every plastic synapse changes by
eta * f(x_j, y_i, w_ij, r, rbar) with x and y of the accepted encounter, r its
reward and rbar the mean of the last ``window`` rewards at the trial's start.

Two kernels: ``simulate`` drives the model with an animal's recorded odours,
decisions and rewards (teacher forcing) and returns the negative log-likelihood
of its decisions, optionally tracking each animal's weights from its decisions (an
assumed-density filter: ``_predict``, ``_condition``, ``_propagate``); ``sample`` runs the
protocol (baited rewards, blocks of reward probabilities) and samples decisions from the
model, to make synthetic animals. Animals are the VM's batch: one VM call per trial
updates every animal (with the filter, in forward-mode: the rule and its derivatives in x, y, w).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
from numba import njit, prange

from ...vm import FASTMATH, PackedPrograms, run_program, run_program_tangents

PROVIDED_NAMES = ("x", "y", "w", "r", "rbar")
MAX_ENCOUNTERS_PER_TRIAL = 1000  # a sampled animal that rejects this often in a row stops (its data end there)


@dataclass(frozen=True)
class ChoiceArrays:
    """Recorded behaviour laid out for the kernel (padded per animal)."""

    odour: np.ndarray  # int64 (A, E) each encounter's row of ``patterns`` (its odour; with recorded inputs its own row)
    patterns: np.ndarray  # (n_patterns, n_in) the model's inputs: each odour's mean, or every recorded encounter's
    decision: np.ndarray  # int64 (A, E)
    n_enc: np.ndarray  # int64 (A,)
    trial_end: np.ndarray  # int64 (A, T): encounter index of each trial's acceptance
    n_trials: np.ndarray  # int64 (A,) completed trials (acceptances)
    r: np.ndarray  # (A, T) reward of each trial
    rbar: np.ndarray  # (A, T) expected reward at each trial's start
    score: np.ndarray  # (A, T + 1) 1 where a trial's decisions count in the loss (T: after the last acceptance)
    heldout: np.ndarray  # bool (T + 1,) trials held out from fitting
    activity: np.ndarray | None = None  # (A, E) recorded output (P(accept)) per encounter, NaN where not recorded


@dataclass(frozen=True)
class ChoiceResult:
    nll: np.ndarray  # (n_ind, A) summed negative log-likelihood of scored decisions
    count: np.ndarray  # (A,) scored decisions
    blown: np.ndarray  # bool (n_ind,)
    w: np.ndarray | None = None  # (n_ind, A, T + 1, n_out, n_in): weights before each trial's update
    sse: np.ndarray | None = None  # (n_ind, A) squared error of P(accept) against recorded activity (scored trials)
    activity_count: np.ndarray | None = None  # (A,) recorded activity entries compared
    p: np.ndarray | None = None  # (n_ind, A, E) model P(accept) per encounter (recorded runs)


def scored_decisions(arrays: ChoiceArrays) -> np.ndarray:
    """Decisions per animal that the loss counts (A,), from the data alone: the same for every
    rule, also for one whose weights blew up part-way."""
    out = np.zeros(len(arrays.n_enc))
    for b, n in enumerate(arrays.n_enc):
        trial_of = np.searchsorted(arrays.trial_end[b, :arrays.n_trials[b]], np.arange(n))
        out[b] = arrays.score[b, trial_of].sum()
    return out


def scored_activity(arrays: ChoiceArrays) -> np.ndarray:
    """Recorded activity entries per animal that the activity loss counts (A,), from the data alone."""
    out = np.zeros(len(arrays.n_enc))
    for b, n in enumerate(arrays.n_enc):
        trial_of = np.searchsorted(arrays.trial_end[b, :arrays.n_trials[b]], np.arange(n))
        out[b] = np.sum((arrays.score[b, trial_of] > 0) & ~np.isnan(arrays.activity[b, :n]))
    return out


def expected_rewards(r: np.ndarray, n_trials: np.ndarray, window: int) -> np.ndarray:
    """rbar[a, k] = mean of r[a, k - window : k] with zeros before the first trial; (A, T)."""
    A, T = r.shape
    padded = np.concatenate([np.zeros((A, window)), r], axis=1)
    c = np.cumsum(padded, axis=1)
    c = np.concatenate([np.zeros((A, 1)), c], axis=1)
    return (c[:, window:window + T] - c[:, :T]) / window


@njit(cache=True, fastmath=FASTMATH, nogil=True)
def _forward(w, base, x, n_out, n_in, readout, h):
    """Hidden activity into h; returns the logit."""
    logit = 0.0
    for i in range(n_out):
        s = 0.0
        for j in range(n_in):
            s += w[base + i * n_in + j] * x[j]
        h[i] = np.tanh(s)
        logit += readout[i] * h[i]
    return logit


@njit(cache=True, fastmath=FASTMATH, nogil=True)
def _expected_logit(w, base, x, n_out, n_in, readout, h, noise_var):
    """Logit whose sigmoid approximates E[P(accept)] when the input carries N(0, noise_var)
    noise that the data do not record: the logit's variance s2 from a linearisation of
    tanh, then the probit approximation E[sigmoid(a)] ~ sigmoid(m / sqrt(1 + pi s2 / 8))."""
    logit = _forward(w, base, x, n_out, n_in, readout, h)
    if noise_var == 0.0:
        return logit
    s2 = 0.0
    for j in range(n_in):
        g = 0.0
        for i in range(n_out):
            g += readout[i] * (1.0 - h[i] * h[i]) * w[base + i * n_in + j]
        s2 += g * g
    return logit / np.sqrt(1.0 + np.pi * noise_var * s2 / 8.0)


SQRT_LAMBDA = np.sqrt(np.pi / 8.0)  # probit approximation: sigmoid(a) ~ Phi(SQRT_LAMBDA * a)


@njit(cache=True, fastmath=FASTMATH, nogil=True)
def _inverse_mills(u):
    """phi(u) / Phi(u), also where Phi(u) underflows (u -> -inf: ~ -u)."""
    if u > -30.0:
        return np.exp(-0.5 * u * u) / (np.sqrt(2.0 * np.pi) * 0.5 * math.erfc(-u / np.sqrt(2.0)))
    return -u / (1.0 - 1.0 / (u * u) + 3.0 / (u * u * u * u))


@njit(cache=True, fastmath=FASTMATH, nogil=True)
def _predict(w, base, x, n_out, n_in, readout, h, S, noise_var, J, c, eps):
    """Logit mean and variance of one encounter under weights ~ N(w, S[:m, :m]) and fresh input
    noise eps ~ N(0, noise_var I) (the last n_in entries of the filter's state, reset here).
    Leaves dlogit/dstate in J and S @ J in c."""
    m = n_out * n_in
    nz = m + n_in
    for p in range(nz):
        for k in range(m, nz):
            S[p, k] = 0.0
            S[k, p] = 0.0
    for k in range(n_in):
        S[m + k, m + k] = noise_var
        eps[k] = 0.0
        J[m + k] = 0.0
    logit = _forward(w, base, x, n_out, n_in, readout, h)
    for i in range(n_out):
        g = readout[i] * (1.0 - h[i] * h[i])
        for j in range(n_in):
            J[i * n_in + j] = g * x[j]
            J[m + j] += g * w[base + i * n_in + j]
    v = 0.0
    for p in range(nz):
        s = 0.0
        for q in range(nz):
            s += S[p, q] * J[q]
        c[p] = s
        v += J[p] * s
    return logit, max(v, 0.0)


@njit(cache=True, fastmath=FASTMATH, nogil=True)
def _condition(w, base, m, n_in, S, c, eps, logit, v, accepted):
    """Assumed-density update of the state (weights and this encounter's input noise) on the
    decision: the logit's posterior mean and variance under a probit likelihood, carried to the
    state through their covariance c = S J (Gaussian moment matching)."""
    s = 1.0 if accepted else -1.0
    den2 = 1.0 + SQRT_LAMBDA * SQRT_LAMBDA * v
    den = np.sqrt(den2)
    u = s * SQRT_LAMBDA * logit / den
    beta = _inverse_mills(u)
    gain_mean = s * SQRT_LAMBDA * beta / den  # (E[a | d] - a) / v
    gain_var = -SQRT_LAMBDA * SQRT_LAMBDA * beta * (u + beta) / den2  # (Var[a | d] - v) / v^2
    nz = m + n_in
    for p in range(m):
        w[base + p] += c[p] * gain_mean
    for k in range(n_in):
        eps[k] += c[m + k] * gain_mean
    for p in range(nz):
        cp = c[p] * gain_var
        for q in range(nz):
            S[p, q] += cp * c[q]


@njit(cache=True, fastmath=FASTMATH, nogil=True)
def _propagate(S, b, w, m, n_out, n_in, x, y, eta, fx, fy, fw, a_w, a_eps, C, CT):
    """State covariance through one update w' = w + eta f(x + eps, y, w, r, rbar), linearised at the
    posterior mean (x: the accepted input incl. its noise estimate, y its hidden activity):
    S[:m, :m] <- A S A^T with A = d w' / d (w, eps); each row of A has 2 n_in nonzeros."""
    base = b * m
    nz = m + n_in
    for i in range(n_out):
        gy = 1.0 - y[i] * y[i]
        for j in range(n_in):
            q = i * n_in + j
            for k in range(n_in):
                a_w[q, k] = eta * fy[base + q] * gy * x[k]
                a_eps[q, k] = eta * fy[base + q] * gy * w[base + i * n_in + k]
            a_w[q, j] += 1.0 + eta * fw[base + q]
            a_eps[q, j] += eta * fx[base + q]
    # C = A S, then S' = A C^T (= A S A^T; S is symmetric)
    _times_update_jacobian(a_w, a_eps, S, C, m, n_in, nz)
    for p in range(nz):
        for q in range(m):
            CT[p, q] = C[q, p]
    _times_update_jacobian(a_w, a_eps, CT, S, m, n_in, m)


@njit(cache=True, fastmath=FASTMATH, nogil=True)
def _times_update_jacobian(a_w, a_eps, M, out, m, n_in, width):
    """out[:m, :width] = A M[:, :width] for the update's Jacobian A (row q = (i, j) has nonzeros
    a_w[q] in the columns of unit i's weights and a_eps[q] in the input-noise columns), as row
    axpys that vectorise."""
    for q in range(m):
        i0 = (q // n_in) * n_in
        for p in range(width):
            out[q, p] = 0.0
        for k in range(n_in):
            aw, ae = a_w[q, k], a_eps[q, k]
            for p in range(width):
                out[q, p] += aw * M[i0 + k, p] + ae * M[m + k, p]


@njit(cache=True, nogil=True)
def _vm_buffers(w0, depth):
    """VM variables for A animals (the batch): stack, dw, pre (x), post (y), syn (w from w0), trial (r, rbar)."""
    A, n_out, n_in = w0.shape
    m = n_out * n_in
    syn = np.empty((1, A * m))
    for b in range(A):
        for i in range(n_out):
            for j in range(n_in):
                syn[0, b * m + i * n_in + j] = w0[b, i, j]
    return (np.empty((depth, A * m)), np.empty(A * m), np.zeros((1, A, n_in)), np.zeros((1, A, n_out)), syn,
            np.zeros((2, A)))


@njit(cache=True, fastmath=FASTMATH, nogil=True)
def _apply_update(w, dw, eta, updated, m):
    """w += eta * dw for the animals that updated; returns False if a weight left the bound."""
    largest = 0.0
    poison = 0.0
    for b in range(updated.shape[0]):
        if updated[b]:
            for q in range(b * m, (b + 1) * m):
                v = w[q] + eta * dw[q]
                w[q] = v
                largest = max(largest, abs(v))
                poison += v * 0.0
    return largest, poison


@njit(cache=True, fastmath=FASTMATH, nogil=True)
def _run_animals(code, arg, consts, depth, odour, patterns, decision, n_enc, trial_end, n_trials, r, rbar,
                 score, heldout, w0, readout, noise_var, prior_var, filtered, eta, bound, record, w_rec, target,
                 p_rec):
    A = odour.shape[0]
    n_odours, n_in = patterns.shape
    n_out = w0.shape[1]
    m = n_out * n_in
    T = trial_end.shape[1]
    stack, dw, pre, post, syn, trial = _vm_buffers(w0, depth)
    w = syn[0]
    nll = np.zeros(A)
    sse = np.zeros(A)
    compare = target.shape[1] > 0
    e_next = np.zeros(A, np.int64)
    updated = np.zeros(A, np.bool_)
    h = np.empty((n_odours, n_out))
    logits = np.empty(n_odours)
    fresh = np.zeros(n_odours, np.bool_)
    # filter state per animal: weights (mean in w) and the current encounter's input noise
    nz = m + n_in if filtered else 0
    S = np.zeros((A, nz, nz))
    for b in range(A):
        for q in range(m if filtered else 0):
            S[b, q, q] = prior_var
    eps = np.zeros(n_in)
    J = np.empty(nz)
    c = np.empty(nz)
    x = np.empty(n_in)
    grad = np.empty((3, A * m if filtered else 0))  # the rule's derivatives in x, y, w
    tangent = np.empty((3, depth if filtered else 0, A * m))
    scratch = np.empty(A * m)
    a_w, a_eps, C, CT = np.empty((m, n_in)), np.empty((m, n_in)), np.empty((m, nz)), np.empty((nz, m))
    blown = False
    for k in range(T + 1):
        condition = filtered and not heldout[k]
        for b in range(A):
            updated[b] = False
            if k > n_trials[b]:
                continue
            last = trial_end[b, k] if k < n_trials[b] else n_enc[b] - 1
            if record:
                for q in range(m):
                    w_rec[b, k, q] = w[b * m + q]
            # without the filter weights are fixed within a trial and inputs are the odours'
            # patterns: one forward pass per odour presented serves every encounter of that odour
            # (recorded inputs: one pattern per encounter, so only this trial's are reset)
            for e in range(e_next[b], last + 1):
                fresh[odour[b, e]] = False
            for e in range(e_next[b], last + 1):
                o = odour[b, e]
                if filtered:
                    logit, v = _predict(w, b * m, patterns[o], n_out, n_in, readout, h[o], S[b], noise_var, J, c,
                                        eps)
                    z = logit / np.sqrt(1.0 + np.pi * v / 8.0)
                    if condition:
                        _condition(w, b * m, m, n_in, S[b], c, eps, logit, v, decision[b, e] == 1)
                else:
                    if not fresh[o]:
                        logits[o] = _expected_logit(w, b * m, patterns[o], n_out, n_in, readout, h[o], noise_var)
                        fresh[o] = True
                    z = logits[o]
                if compare or record:  # the model's output, P(accept), against the recorded activity
                    prob = 1.0 / (1.0 + np.exp(-z))
                    if record:
                        p_rec[b, e] = prob
                    if compare and score[b, k] > 0 and not np.isnan(target[b, e]):
                        sse[b] += (prob - target[b, e]) ** 2
                z = -z if decision[b, e] == 1 else z  # -log P(decision) = softplus(z)
                if score[b, k] > 0:
                    nll[b] += max(z, 0.0) + np.log1p(np.exp(-abs(z)))
            e_next[b] = last + 1
            if k < n_trials[b]:  # the accepted encounter's input and hidden activity
                o = odour[b, last]
                for j in range(n_in):
                    x[j] = patterns[o, j] + (eps[j] if filtered else 0.0)
                    pre[0, b, j] = x[j]
                if filtered:  # at the posterior mean of the weights and of the input noise
                    _forward(w, b * m, x, n_out, n_in, readout, h[o])
                for i in range(n_out):
                    post[0, b, i] = h[o, i]
                trial[0, b] = r[b, k]
                trial[1, b] = rbar[b, k]
                updated[b] = True
        if k == T:
            break
        if filtered:
            run_program_tangents(code, arg, consts, pre, post, syn, trial, stack, tangent, scratch, dw, grad)
            for b in range(A):
                if updated[b]:
                    _propagate(S[b], b, w, m, n_out, n_in, pre[0, b], post[0, b], eta, grad[0], grad[1], grad[2],
                               a_w, a_eps, C, CT)
        else:
            run_program(code, arg, consts, pre, post, syn, trial, stack, dw)
        largest, poison = _apply_update(w, dw, eta, updated, m)
        if not (largest <= bound and poison == 0.0):
            blown = True
            break
    return nll, sse, blown


@njit(cache=True, parallel=True)
def _simulate_population(code, arg, consts, code_start, const_start, depth, odour, patterns, decision, n_enc,
                         trial_end, n_trials, r, rbar, score, heldout, w0, readout, noise_var, prior_var, filtered,
                         eta, bound, record, w_rec, target, p_rec):
    n_ind = code_start.shape[0] - 1
    A = odour.shape[0]
    nll = np.zeros((n_ind, A))
    sse = np.zeros((n_ind, A))
    blown = np.zeros(n_ind, np.bool_)
    for ind in prange(n_ind):
        c0, c1 = code_start[ind], code_start[ind + 1]
        k0, k1 = const_start[ind], const_start[ind + 1]
        q = np.int64(ind) if record else np.int64(0)
        s, se, bl = _run_animals(code[c0:c1], arg[c0:c1], consts[k0:k1], depth, odour, patterns, decision, n_enc,
                                 trial_end, n_trials, r, rbar, score, heldout, w0, readout, noise_var, prior_var,
                                 filtered, eta, bound, record, w_rec[q], target, p_rec[q])
        nll[ind] = s
        sse[ind] = se
        blown[ind] = bl
    return nll, sse, blown


def simulate(packed: PackedPrograms, arrays: ChoiceArrays, w0: np.ndarray, readout: np.ndarray, eta: float,
             weight_bound: float = 1e3, record: bool = False, noise_var: float = 0.0, filtered: bool = False,
             prior_var: float = 0.0, activity: bool = False) -> ChoiceResult:
    """Teacher-forced run of every packed rule on every animal: likelihood of the recorded decisions,
    and with ``activity`` the squared error of the model's P(accept) against ``arrays.activity``
    (the recorded output per encounter; NaN entries skipped) on the scored trials.

    w0: (A, n_out, n_in) initial weights; readout: (n_out,) fixed readout weights;
    noise_var: variance of the unrecorded input noise, averaged out of P(accept).
    filtered: carry a Gaussian belief over each animal's weights (prior variance ``prior_var``
    around w0) and update it on every decision of a fitted (not held-out) trial (assumed-density
    filter). The input noise also enters each update, so the animal's weights drift from the
    noise-free trajectory; the filter tracks that drift from its decisions. Each decision's
    probability is its one-step-ahead prediction. Without the filter the weights follow the
    deterministic trajectory of the mean inputs.
    """
    a = arrays
    A = a.odour.shape[0]
    n_in = a.patterns.shape[1]
    n_out = w0.shape[1]
    T = a.trial_end.shape[1]
    n_ind = packed.n_programs
    if w0.shape != (A, n_out, n_in) or readout.shape != (n_out,):
        raise ValueError(f"w0 {w0.shape} must be (animals, n_out, n_in) = {(A, n_out, n_in)}, readout (n_out,)")
    if activity and a.activity is None:
        raise ValueError("activity=True needs arrays.activity (the recorded output per encounter)")
    E = a.odour.shape[1]
    w_rec = np.zeros((n_ind, A, T + 1, n_out * n_in) if record else (1, 0, 0, 0))
    p_rec = np.full((n_ind, A, E) if record else (1, 0, 0), np.nan)
    target = np.ascontiguousarray(a.activity, np.float64) if activity else np.zeros((A, 0))
    nll, sse, blown = _simulate_population(
        packed.code, packed.arg, packed.consts, packed.code_start, packed.const_start, packed.depth,
        a.odour, a.patterns, a.decision, a.n_enc, a.trial_end, a.n_trials, a.r, a.rbar, a.score, a.heldout,
        np.ascontiguousarray(w0, np.float64), np.ascontiguousarray(readout, np.float64), float(noise_var),
        float(prior_var), bool(filtered), float(eta), float(weight_bound), record, w_rec, target, p_rec)
    return ChoiceResult(nll, scored_decisions(arrays), blown,
                        w_rec.reshape(n_ind, A, T + 1, n_out, n_in) if record else None,
                        sse if activity else None, scored_activity(arrays) if activity else None,
                        p_rec if record else None)


@njit(cache=True, fastmath=FASTMATH)
def _sample_animals(code, arg, consts, depth, w0, patterns, noise_std, block_probs, trials_per_block, window,
                    readout, eta, bound, seed, odour_out, decision_out, reward_out, input_out, prob_out):
    np.random.seed(seed)
    A, n_out, n_in = w0.shape
    m = n_out * n_in
    cap = odour_out.shape[1]
    stack, dw, pre, post, syn, trial = _vm_buffers(w0, depth)
    w = syn[0]
    n_enc = np.zeros(A, np.int64)
    available = np.zeros((A, 2))
    history = np.zeros((A, window))
    pos = np.zeros(A, np.int64)
    stopped = np.zeros(A, np.bool_)
    updated = np.zeros(A, np.bool_)
    x = np.empty(n_in)
    h = np.empty(n_out)
    n_blocks = block_probs.shape[0]
    for k in range(n_blocks * trials_per_block):
        block = k // trials_per_block
        for b in range(A):
            updated[b] = False
            if stopped[b]:
                continue
            for o in range(2):  # baiting: availability persists until consumed
                if np.random.random() < block_probs[block, o]:
                    available[b, o] = 1.0
            rbar = history[b].mean()
            for _ in range(MAX_ENCOUNTERS_PER_TRIAL):
                if n_enc[b] >= cap:
                    break
                o = 1 if np.random.random() < 0.5 else 0
                for j in range(n_in):
                    x[j] = patterns[o, j] + noise_std * np.random.standard_normal()
                logit = _forward(w, b * m, x, n_out, n_in, readout, h)
                prob = 1.0 / (1.0 + np.exp(-logit))
                accept = np.random.random() < prob
                e = n_enc[b]
                odour_out[b, e] = o
                if input_out.shape[1] > 0:
                    prob_out[b, e] = prob
                    for j in range(n_in):
                        input_out[b, e, j] = x[j]
                decision_out[b, e] = 1 if accept else 0
                n_enc[b] += 1
                if accept:
                    reward = available[b, o]
                    available[b, o] = 0.0
                    reward_out[b, e] = reward
                    history[b, pos[b]] = reward
                    pos[b] = (pos[b] + 1) % window
                    for j in range(n_in):
                        pre[0, b, j] = x[j]
                    for i in range(n_out):
                        post[0, b, i] = h[i]
                    trial[0, b] = reward
                    trial[1, b] = rbar
                    updated[b] = True
                    break
            if not updated[b]:
                stopped[b] = True
        run_program(code, arg, consts, pre, post, syn, trial, stack, dw)
        largest, poison = _apply_update(w, dw, eta, updated, m)
        if not (largest <= bound and poison == 0.0):
            return n_enc, stopped, True
    return n_enc, stopped, False


def sample(packed: PackedPrograms, w0: np.ndarray, patterns: np.ndarray, noise_std: float,
           block_probs: np.ndarray, trials_per_block: int, window: int, readout: np.ndarray, eta: float,
           weight_bound: float, seed: int, record_inputs: bool = False):
    """Run the protocol for A animals under one rule (``packed`` holds one program).

    Returns (odour, decision, reward) lists of per-animal arrays, and per animal
    whether it stopped early (rejected ``MAX_ENCOUNTERS_PER_TRIAL`` times in a row);
    with ``record_inputs`` also the lists of each animal's encounter inputs (n, n_in), noise included,
    and of the model's P(accept) at each encounter (n,).
    Raises ``ValueError`` if the rule's weights blow up.
    """
    if packed.n_programs != 1:
        raise ValueError("sample() takes exactly one rule")
    A = w0.shape[0]
    cap = block_probs.shape[0] * trials_per_block * 50
    odour = np.zeros((A, cap), np.int64)
    decision = np.zeros((A, cap), np.int64)
    reward = np.zeros((A, cap))
    inputs = np.zeros((A, cap, patterns.shape[1]) if record_inputs else (A, 0, 0))
    prob = np.zeros((A, cap) if record_inputs else (A, 0))
    n_enc, stopped, blown = _sample_animals(
        packed.code, packed.arg, packed.consts, packed.depth, np.ascontiguousarray(w0, np.float64),
        np.ascontiguousarray(patterns, np.float64), float(noise_std), np.ascontiguousarray(block_probs, np.float64),
        int(trials_per_block), int(window), np.ascontiguousarray(readout, np.float64), float(eta),
        float(weight_bound), int(seed), odour, decision, reward, inputs, prob)
    if blown:
        raise ValueError(f"the rule's weights left the bound |w| <= {weight_bound:g} while sampling animals")
    out = ([odour[b, :n_enc[b]] for b in range(A)], [decision[b, :n_enc[b]] for b in range(A)],
           [reward[b, :n_enc[b]] for b in range(A)], stopped)
    if not record_inputs:
        return out
    return out + ([inputs[b, :n_enc[b]] for b in range(A)], [prob[b, :n_enc[b]] for b in range(A)])


def arrays_from_choices(odour, decision, reward, patterns: np.ndarray, window: int,
                        heldout_every: int) -> ChoiceArrays:
    """Kernel arrays from per-animal lists of odour, decision, reward (in time order).

    Each encounter's input is its odour's pattern (2, n_in); every
    ``heldout_every``-th trial (k % heldout_every == heldout_every - 1) is held out:
    scored only by the "test" view (``with_score``). 0: nothing held out.
    """
    A = len(odour)
    E = max(len(o) for o in odour)
    n_trials = np.array([int(np.sum(d)) for d in decision], np.int64)
    T = max(1, int(n_trials.max()))
    odours = np.zeros((A, E), np.int64)
    dec = np.zeros((A, E), np.int64)
    trial_end = np.zeros((A, T), np.int64)
    r = np.zeros((A, T))
    for b in range(A):
        n = len(odour[b])
        odours[b, :n] = odour[b]
        dec[b, :n] = decision[b]
        ends = np.flatnonzero(decision[b] == 1)
        trial_end[b, :len(ends)] = ends
        r[b, :len(ends)] = reward[b][ends]
    rbar = expected_rewards(r, n_trials, window)
    k = np.arange(T + 1)
    heldout = (k % heldout_every == heldout_every - 1) if heldout_every else np.zeros(T + 1, bool)
    arrays = ChoiceArrays(odours, np.ascontiguousarray(patterns, np.float64), dec, np.array([len(o) for o in odour], np.int64), trial_end, n_trials, r, rbar,
                          np.zeros((A, T + 1)), heldout)
    return with_score(arrays, "train")


def with_score(arrays: ChoiceArrays, which: str) -> ChoiceArrays:
    """The same data scoring the fitted trials ("train"), the held-out ones ("test") or all ("all")."""
    keep = {"train": ~arrays.heldout, "test": arrays.heldout, "all": np.ones_like(arrays.heldout)}[which]
    return replace(arrays, score=np.broadcast_to(keep, arrays.score.shape).astype(np.float64))


def acceptance_probability(W: np.ndarray, patterns: np.ndarray, readout: np.ndarray,
                           noise_var: float = 0.0) -> np.ndarray:
    """P(accept) of each odour's mean pattern under weights W (..., n_out, n_in) -> (..., n_odours),
    averaged over input noise as in the likelihood (linearised tanh, probit approximation)."""
    h = np.tanh(np.einsum("...ij,oj->...oi", W, patterns))  # (..., odours, n_out)
    logit = h @ readout
    g = np.einsum("...oi,i,...ij->...oj", 1 - h**2, readout, W)  # d logit / d x
    s2 = noise_var * np.sum(g**2, axis=-1)
    return 1.0 / (1.0 + np.exp(-logit / np.sqrt(1.0 + np.pi * s2 / 8.0)))
