"""Rate network: y_t = act(W_t x_t), then W_{t+1} = W_t + eta * f(x_t, y_t, W_t) per synapse.

One Numba call simulates a whole population of rules over all trials; jobs
(individual, trial) run in parallel across threads. All individuals see the
same inputs and initial weights.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit, prange

from ..vm import FASTMATH, PackedPrograms, run_program

ACTIVATIONS = {"linear": 0, "sigmoid": 1, "tanh": 2}
PROVIDED_NAMES = ("x", "y", "w")


@dataclass(frozen=True)
class RateResult:
    """Outputs per individual and trial; trajectories only when recorded."""

    w_final: np.ndarray  # (n_ind, trials, n_out, n_in)
    w_mean: np.ndarray  # (n_ind, trials, n_out, n_in) mean of W_t after each update for t >= average_from
    sse: np.ndarray  # (n_ind, trials) squared error against the target, recorded entries only
    count: np.ndarray  # (n_ind, trials) number of recorded target entries compared
    blown: np.ndarray  # bool (n_ind,): weights left the bound or became non-finite in some trial
    y: np.ndarray | None = None  # (n_ind, trials, steps, n_out), before each update
    w: np.ndarray | None = None  # (n_ind, trials, steps, n_out, n_in), before each update


@njit(cache=True, fastmath=FASTMATH, nogil=True)
def _activate(s, act):
    if act == 1:
        return 1.0 / (1.0 + np.exp(-s))
    if act == 2:
        return np.tanh(s)
    return s


@njit(cache=True, fastmath=FASTMATH, nogil=True)
def _run_rule(code, arg, consts, depth, x, w0, target, eta, act, bound, average_from,
              w_final, w_sum, record, y_rec, w_rec):
    """One rule on all trials at once (trials are the VM's batch). Returns (sse, count, blown)."""
    n_trials, n_steps, n_in = x.shape
    n_out = w0.shape[1]
    m = n_out * n_in
    n = n_trials * m
    stack = np.empty((depth, n))
    dw = np.empty(n)
    pre = np.empty((1, n_trials, n_in))
    post = np.empty((1, n_trials, n_out))
    syn = np.empty((1, n))
    trial = np.zeros((0, n_trials))
    for b in range(n_trials):
        for i in range(n_out):
            for j in range(n_in):
                syn[0, b * m + i * n_in + j] = w0[b, i, j]
    has_target = target.shape[0] > 0
    sse = np.zeros(n_trials)
    count = np.zeros(n_trials, np.int64)
    blown = False
    w = syn[0]
    for t in range(n_steps):
        for b in range(n_trials):
            xb = x[b, t]
            pb = pre[0, b]
            for j in range(n_in):
                pb[j] = xb[j]
            for i in range(n_out):
                row = w[b * m + i * n_in: b * m + (i + 1) * n_in]
                s = 0.0
                for j in range(n_in):
                    s += row[j] * xb[j]
                post[0, b, i] = _activate(s, act)
            if has_target:
                for i in range(n_out):
                    v = target[b, t, i]
                    if v == v:  # NaN marks an unrecorded neuron
                        d = post[0, b, i] - v
                        sse[b] += d * d
                        count[b] += 1
            if record:
                for i in range(n_out):
                    y_rec[b, t, i] = post[0, b, i]
                for k in range(m):
                    w_rec[b, t, k] = syn[0, b * m + k]
        run_program(code, arg, consts, pre, post, syn, trial, stack, dw)
        # Branch-free so that the loop vectorises: the largest |w| and a sum that NaN/inf poison.
        largest = 0.0
        poison = 0.0
        for k in range(n):
            v = w[k] + eta * dw[k]
            w[k] = v
            largest = max(largest, abs(v))
            poison += v * 0.0
        if not (largest <= bound and poison == 0.0):
            blown = True
            break
        if t >= average_from:
            for k in range(n):
                w_sum[k] += w[k]
    for k in range(n):
        w_final[k] = syn[0, k]
    return sse, count, blown


@njit(cache=True, parallel=True)
def _simulate_population(code, arg, consts, code_start, const_start, depth, x, w0, target,
                         eta, act, bound, average_from, record, y_rec, w_rec):
    n_ind = code_start.shape[0] - 1
    n_trials, n_steps, n_in = x.shape
    n = n_trials * w0.shape[1] * n_in
    w_final = np.empty((n_ind, n))
    w_mean = np.zeros((n_ind, n))
    sse = np.zeros((n_ind, n_trials))
    count = np.zeros((n_ind, n_trials), np.int64)
    blown = np.zeros(n_ind, np.bool_)
    for ind in prange(n_ind):
        c0, c1 = code_start[ind], code_start[ind + 1]
        k0, k1 = const_start[ind], const_start[ind + 1]
        r = np.int64(ind) if record else np.int64(0)
        s, c, b = _run_rule(code[c0:c1], arg[c0:c1], consts[k0:k1], depth, x, w0, target, eta,
                            act, bound, average_from, w_final[ind], w_mean[ind], record,
                            y_rec[r], w_rec[r])
        sse[ind] = s
        count[ind] = c
        blown[ind] = b
        for k in range(n):
            w_mean[ind, k] /= max(n_steps - average_from, 1)
    return w_final, w_mean, sse, count, blown


def simulate(packed: PackedPrograms, x: np.ndarray, w0: np.ndarray, eta: float,
             activation: str = "linear", weight_bound: float = 1e3,
             target: np.ndarray | None = None, record: bool = False,
             average_from: int | None = None) -> RateResult:
    """Simulate every packed rule (one program per individual) on the same trials.

    Trials run as one batch through the VM; individuals run in parallel.
    x: (trials, steps, n_in) presynaptic rates; w0: (trials, n_out, n_in) initial
    weights; target: (trials, steps, n_out) activity to compare with (NaN = not
    recorded) or None. ``average_from``: first step whose updated weights enter
    ``w_mean`` (default: the last step only). ``record`` keeps y and W before every update (memory:
    n_ind * trials * steps * n_out * (n_in + 1) floats).
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"Invalid activation {activation!r}. Valid options: {', '.join(ACTIVATIONS)}")
    x = np.ascontiguousarray(x, np.float64)
    w0 = np.ascontiguousarray(w0, np.float64)
    if x.ndim != 3 or w0.ndim != 3 or w0.shape[0] != x.shape[0] or w0.shape[2] != x.shape[2]:
        raise ValueError(f"x {x.shape} and w0 {w0.shape} must be (trials, steps, n_in) and "
                         "(trials, n_out, n_in)")
    n_ind = packed.n_programs
    trials, steps, n_in = x.shape
    n_out = w0.shape[1]
    if target is None:
        target = np.empty((0, steps, n_out))
    else:
        target = np.ascontiguousarray(target, np.float64)
        if target.shape != (trials, steps, n_out):
            raise ValueError(f"target {target.shape} must be (trials, steps, n_out) = "
                             f"{(trials, steps, n_out)}")
    shape = (n_ind, trials, steps) if record else (1, 0, 0)
    y_rec = np.zeros(shape + (n_out,))
    w_rec = np.zeros(shape + (n_out * n_in,))
    average_from = steps - 1 if average_from is None else int(np.clip(average_from, 0, steps - 1))
    w_final, w_mean, sse, count, blown = _simulate_population(
        packed.code, packed.arg, packed.consts, packed.code_start, packed.const_start,
        packed.depth, x, w0, target, float(eta), ACTIVATIONS[activation], float(weight_bound),
        average_from, record, y_rec, w_rec)
    return RateResult(w_final.reshape(n_ind, trials, n_out, n_in),
                      w_mean.reshape(n_ind, trials, n_out, n_in), sse, count, blown,
                      y_rec if record else None,
                      w_rec.reshape(n_ind, trials, steps, n_out, n_in) if record else None)
