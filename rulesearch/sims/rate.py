"""Rate network: y_t = act(W_t x_t), then W_{t+1} = W_t + eta * f(x_t, y_t, W_t) per synapse.

One Numba call simulates a whole population of rules over all trials; jobs
(individual, trial) run in parallel across threads. All individuals see the
same inputs and initial weights.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit, prange

from ..primitives import PRE, POST, SYN, TRIAL
from ..vm import FASTMATH, PackedPrograms, run_program

ACTIVATIONS = {"linear": 0, "sigmoid": 1, "tanh": 2}
# Variables this simulator fills, by kind: number of slots it provides.
PROVIDES = {PRE: 1, POST: 1, SYN: 1, TRIAL: 0}
PROVIDED_NAMES = ("x", "y", "w")


@dataclass(frozen=True)
class RateResult:
    """Outputs per individual and trial; trajectories only when recorded."""

    w_final: np.ndarray  # (n_ind, trials, n_out, n_in)
    sse: np.ndarray  # (n_ind, trials) squared error against the target, recorded entries only
    count: np.ndarray  # (n_ind, trials) number of recorded target entries compared
    blown: np.ndarray  # bool (n_ind, trials): weights left the bound or became non-finite
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
def _run_trial(code, arg, consts, depth, x_trial, w_init, target_trial, eta, act, bound,
               record, y_rec, w_rec):
    """One rule, one trial. Returns (final weights, sse, count, blown)."""
    n_steps, n_in = x_trial.shape
    n_out = w_init.shape[0]
    n = n_out * n_in
    stack = np.empty((depth, n))
    dw = np.empty(n)
    pre = np.empty((1, n_in))
    post = np.empty((1, n_out))
    syn = np.empty((1, n))
    trial = np.zeros(1)
    w = syn[0]
    for i in range(n_out):
        for j in range(n_in):
            w[i * n_in + j] = w_init[i, j]
    has_target = target_trial.shape[0] > 0
    sse = 0.0
    count = 0
    blown = False
    for t in range(n_steps):
        for j in range(n_in):
            pre[0, j] = x_trial[t, j]
        for i in range(n_out):
            s = 0.0
            for j in range(n_in):
                s += w[i * n_in + j] * pre[0, j]
            post[0, i] = _activate(s, act)
        if has_target:
            for i in range(n_out):
                v = target_trial[t, i]
                if v == v:  # NaN marks an unrecorded neuron
                    d = post[0, i] - v
                    sse += d * d
                    count += 1
        if record:
            for i in range(n_out):
                y_rec[t, i] = post[0, i]
            for k in range(n):
                w_rec[t, k] = w[k]
        run_program(code, arg, consts, pre, post, syn, trial, stack, dw)
        for k in range(n):
            w[k] += eta * dw[k]
            if not abs(w[k]) <= bound:  # also true for NaN
                blown = True
        if blown:
            break
    return w, sse, count, blown


@njit(cache=True, parallel=True)
def _simulate_population(code, arg, consts, code_start, const_start, depth, x, w0, target,
                         eta, act, bound, record, y_rec, w_rec):
    n_ind = code_start.shape[0] - 1
    n_trials, n_steps, n_in = x.shape
    n_out = w0.shape[1]
    w_final = np.empty((n_ind, n_trials, n_out * n_in))
    sse = np.zeros((n_ind, n_trials))
    count = np.zeros((n_ind, n_trials), np.int64)
    blown = np.zeros((n_ind, n_trials), np.bool_)
    empty = np.empty((0, n_out))
    for job in prange(n_ind * n_trials):
        ind = job // n_trials
        tr = job % n_trials
        c0, c1 = code_start[ind], code_start[ind + 1]
        k0, k1 = const_start[ind], const_start[ind + 1]
        tgt = target[tr] if target.shape[0] > 0 else empty
        yr = y_rec[ind, tr] if record else y_rec[0, 0]
        wr = w_rec[ind, tr] if record else w_rec[0, 0]
        w, s, c, b = _run_trial(code[c0:c1], arg[c0:c1], consts[k0:k1], depth, x[tr], w0[tr],
                                tgt, eta, act, bound, record, yr, wr)
        w_final[ind, tr] = w
        sse[ind, tr] = s
        count[ind, tr] = c
        blown[ind, tr] = b
    return w_final, sse, count, blown


def simulate(packed: PackedPrograms, x: np.ndarray, w0: np.ndarray, eta: float,
             activation: str = "linear", weight_bound: float = 1e3,
             target: np.ndarray | None = None, record: bool = False) -> RateResult:
    """Simulate every packed rule (one program per individual) on the same trials.

    x: (trials, steps, n_in) presynaptic rates; w0: (trials, n_out, n_in) initial
    weights; target: (trials, steps, n_out) activity to compare with (NaN = not
    recorded) or None. ``record`` keeps y and W before every update (memory:
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
    shape = (n_ind, trials) if record else (1, 1)
    y_rec = np.zeros(shape + (steps if record else 0, n_out))
    w_rec = np.zeros(shape + (steps if record else 0, n_out * n_in))
    w_final, sse, count, blown = _simulate_population(
        packed.code, packed.arg, packed.consts, packed.code_start, packed.const_start,
        packed.depth, x, w0, target, float(eta), ACTIVATIONS[activation], float(weight_bound),
        record, y_rec, w_rec)
    return RateResult(w_final.reshape(n_ind, trials, n_out, n_in), sse, count, blown,
                      y_rec if record else None,
                      w_rec.reshape(n_ind, trials, steps, n_out, n_in) if record else None)
