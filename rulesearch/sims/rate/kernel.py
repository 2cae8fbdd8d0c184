"""Rate network: y_t = act(W_t x_t), then W_{t+1} = W_t + eta * f(x_t, y_t, W_t) per synapse.

With a lateral pathway (``lateral`` "symmetric" or "hierarchical") the outputs also
receive lateral weights M among themselves and are linear: y_t = W_t x_t + M_t y_t,
solved exactly each step, y_t = (I - M_t)^{-1} W_t x_t (Gaussian elimination with partial
pivoting; in the hierarchical network M is strictly lower-triangular, so forward
substitution), i.e. the steady state of fast linear output dynamics. Then, with the same
y_t, W changes by eta * f(x_j, y_i, W_ij) and M by eta_lat * g(y_k, y_i, M_ik) (the lateral
rule's presynaptic activity is the other output y_k); M has no self-connections and, in
the hierarchical network, only entries i > k.

One Numba call simulates a whole population of rules over all trials; individuals
run in parallel across threads, trials as one batch through the VM. All individuals
see the same inputs and initial weights.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit, prange

from ...vm import FASTMATH, PackedPrograms, run_program

ACTIVATIONS = {"linear": 0, "sigmoid": 1, "tanh": 2}
LATERAL = {"none": 0, "symmetric": 1, "hierarchical": 2}
SINGULAR = 1e-12  # |pivot| of (I - M) below this: the lateral network has no steady state (blown)


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
    m_final: np.ndarray | None = None  # lateral networks: (n_ind, trials, n_out, n_out)
    m_mean: np.ndarray | None = None  # lateral networks: like w_mean
    m: np.ndarray | None = None  # lateral networks, recorded: (n_ind, trials, steps, n_out, n_out)


@njit(cache=True, fastmath=FASTMATH, nogil=True)
def _activate(s, act):
    if act == 1:
        return 1.0 / (1.0 + np.exp(-s))
    if act == 2:
        return np.tanh(s)
    return s


@njit(cache=True, fastmath=FASTMATH, nogil=True)
def _solve_lateral(mb, h, y, a, n_out, lateral):
    """y = (I - M) ^ -1 h for one trial's M (n_out * n_out, row-major); a: scratch (n_out, n_out + 1).
    Returns False when I - M is (numerically) singular."""
    if lateral == 2:  # unit lower-triangular: forward substitution
        for i in range(n_out):
            s = h[i]
            for k in range(i):
                s += mb[i * n_out + k] * y[k]
            y[i] = s
        return True
    for i in range(n_out):
        for k in range(n_out):
            a[i, k] = (1.0 if i == k else 0.0) - mb[i * n_out + k]
        a[i, n_out] = h[i]
    for c in range(n_out):
        p = c
        for r in range(c + 1, n_out):
            if abs(a[r, c]) > abs(a[p, c]):
                p = r
        if not abs(a[p, c]) > SINGULAR:
            return False
        if p != c:
            for k in range(n_out + 1):
                a[c, k], a[p, k] = a[p, k], a[c, k]
        for r in range(c + 1, n_out):
            f = a[r, c] / a[c, c]
            for k in range(c, n_out + 1):
                a[r, k] -= f * a[c, k]
    for i in range(n_out - 1, -1, -1):
        s = a[i, n_out]
        for k in range(i + 1, n_out):
            s -= a[i, k] * y[k]
        y[i] = s / a[i, i]
    return True


@njit(cache=True, fastmath=FASTMATH, nogil=True)
def _run_rule(code, arg, consts, lcode, larg, lconsts, depth, x, w0, m0, target, eta, eta_lat, act, lateral,
              bound, average_from, w_final, w_sum, m_final, m_sum, record, y_rec, w_rec, m_rec):
    """One rule on all trials at once (trials are the VM's batch). Returns (sse, count, blown).

    lcode/larg/lconsts: the lateral pathway's program (used when lateral > 0)."""
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
    mm = n_out * n_out
    nl = n_trials * mm if lateral else 0
    lstack = np.empty((depth, nl))
    dm = np.empty(nl)
    lsyn = np.empty((1, nl))
    mask = np.zeros(nl)  # 1 where a lateral synapse exists (i != k; hierarchical: i > k)
    h = np.empty(n_out)
    scratch = np.empty((n_out, n_out + 1))
    for b in range(n_trials):
        for i in range(n_out):
            for j in range(n_in):
                syn[0, b * m + i * n_in + j] = w0[b, i, j]
            if lateral:
                for k in range(n_out):
                    ok = (i > k) if lateral == 2 else (i != k)
                    mask[b * mm + i * n_out + k] = 1.0 if ok else 0.0
                    lsyn[0, b * mm + i * n_out + k] = m0[b, i, k] if ok else 0.0
    has_target = target.shape[0] > 0
    sse = np.zeros(n_trials)
    count = np.zeros(n_trials, np.int64)
    blown = False
    w = syn[0]
    ml = lsyn[0]
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
                if lateral:
                    h[i] = s
                else:
                    post[0, b, i] = _activate(s, act)
            if lateral and not _solve_lateral(ml[b * mm:(b + 1) * mm], h, post[0, b], scratch, n_out, lateral):
                blown = True
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
                for k in range(mm if lateral else 0):
                    m_rec[b, t, k] = ml[b * mm + k]
        if blown:
            break
        run_program(code, arg, consts, pre, post, syn, trial, stack, dw)
        if lateral:  # the lateral rule sees the other output as its presynaptic activity
            run_program(lcode, larg, lconsts, post, post, lsyn, trial, lstack, dm)
        # Branch-free so that the loop vectorises: the largest |w| and a sum that NaN/inf poison.
        largest = 0.0
        poison = 0.0
        for k in range(n):
            v = w[k] + eta * dw[k]
            w[k] = v
            largest = max(largest, abs(v))
            poison += v * 0.0
        for k in range(nl):
            v = ml[k] + (eta_lat * dm[k] if mask[k] > 0.0 else 0.0)
            ml[k] = v
            largest = max(largest, abs(v))
            poison += v * 0.0
        if not (largest <= bound and poison == 0.0):
            blown = True
            break
        if t >= average_from:
            for k in range(n):
                w_sum[k] += w[k]
            for k in range(nl):
                m_sum[k] += ml[k]
    for k in range(n):
        w_final[k] = syn[0, k]
    for k in range(nl):
        m_final[k] = ml[k]
    return sse, count, blown


@njit(cache=True, parallel=True)
def _simulate_population(code, arg, consts, code_start, const_start, depth, parts, x, w0, m0, target,
                         eta, eta_lat, act, lateral, bound, average_from, record, y_rec, w_rec, m_rec):
    n_ind = (code_start.shape[0] - 1) // parts
    n_trials, n_steps, n_in = x.shape
    n_out = w0.shape[1]
    n = n_trials * n_out * n_in
    nl = n_trials * n_out * n_out if lateral else 0
    w_final = np.empty((n_ind, n))
    w_mean = np.zeros((n_ind, n))
    m_final = np.empty((n_ind, nl))
    m_mean = np.zeros((n_ind, nl))
    sse = np.zeros((n_ind, n_trials))
    count = np.zeros((n_ind, n_trials), np.int64)
    blown = np.zeros(n_ind, np.bool_)
    for ind in prange(n_ind):
        p = ind * parts
        c0, c1 = code_start[p], code_start[p + 1]
        k0, k1 = const_start[p], const_start[p + 1]
        q = p + parts - 1  # the lateral program (the same as the first when parts == 1)
        l0, l1 = code_start[q], code_start[q + 1]
        j0, j1 = const_start[q], const_start[q + 1]
        r = np.int64(ind) if record else np.int64(0)
        s, c, b = _run_rule(code[c0:c1], arg[c0:c1], consts[k0:k1], code[l0:l1], arg[l0:l1], consts[j0:j1],
                            depth, x, w0, m0, target, eta, eta_lat, act, lateral, bound, average_from,
                            w_final[ind], w_mean[ind], m_final[ind], m_mean[ind], record,
                            y_rec[r], w_rec[r], m_rec[r])
        sse[ind] = s
        count[ind] = c
        blown[ind] = b
        for k in range(n):
            w_mean[ind, k] /= max(n_steps - average_from, 1)
        for k in range(nl):
            m_mean[ind, k] /= max(n_steps - average_from, 1)
    return w_final, w_mean, m_final, m_mean, sse, count, blown


def simulate(packed: PackedPrograms, x: np.ndarray, w0: np.ndarray, eta: float,
             activation: str = "linear", weight_bound: float = 1e3,
             target: np.ndarray | None = None, record: bool = False,
             average_from: int | None = None, lateral: str = "none", m0: np.ndarray | None = None,
             eta_lat: float = 0.0) -> RateResult:
    """Simulate every packed rule on the same trials.

    Trials run as one batch through the VM; individuals run in parallel.
    x: (trials, steps, n_in) presynaptic rates; w0: (trials, n_out, n_in) initial
    weights; target: (trials, steps, n_out) activity to compare with (NaN = not
    recorded) or None. ``average_from``: first step whose updated weights enter
    ``w_mean`` (default: the last step only). ``record`` keeps y and W before every update (memory:
    n_ind * trials * steps * n_out * (n_in + 1) floats). ``lateral`` "symmetric" or
    "hierarchical": linear outputs with lateral weights M, initial ``m0`` (trials, n_out, n_out;
    default 0), learning rate ``eta_lat``; each individual then has two programs (feed-forward,
    lateral: ``packed.parts == 2``).
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"Invalid activation {activation!r}. Valid options: {', '.join(ACTIVATIONS)}")
    if lateral not in LATERAL:
        raise ValueError(f"Invalid lateral {lateral!r}. Valid options: {', '.join(LATERAL)}")
    if lateral != "none" and activation != "linear":
        raise ValueError("a network with lateral weights has linear outputs (activation 'linear')")
    parts = 2 if lateral != "none" else 1
    if packed.parts != parts:
        raise ValueError(f"the network has {parts} plastic pathway(s); the packed population has "
                         f"{packed.parts} program(s) per individual")
    x = np.ascontiguousarray(x, np.float64)
    w0 = np.ascontiguousarray(w0, np.float64)
    if x.ndim != 3 or w0.ndim != 3 or w0.shape[0] != x.shape[0] or w0.shape[2] != x.shape[2]:
        raise ValueError(f"x {x.shape} and w0 {w0.shape} must be (trials, steps, n_in) and "
                         "(trials, n_out, n_in)")
    n_ind = packed.n_individuals
    trials, steps, n_in = x.shape
    n_out = w0.shape[1]
    m0 = np.zeros((trials, n_out, n_out)) if m0 is None else np.ascontiguousarray(m0, np.float64)
    if m0.shape != (trials, n_out, n_out):
        raise ValueError(f"m0 {m0.shape} must be (trials, n_out, n_out) = {(trials, n_out, n_out)}")
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
    m_rec = np.zeros(shape + (n_out * n_out if parts == 2 else 0,))
    average_from = steps - 1 if average_from is None else int(np.clip(average_from, 0, steps - 1))
    w_final, w_mean, m_final, m_mean, sse, count, blown = _simulate_population(
        packed.code, packed.arg, packed.consts, packed.code_start, packed.const_start,
        packed.depth, parts, x, w0, m0, target, float(eta), float(eta_lat), ACTIVATIONS[activation],
        LATERAL[lateral], float(weight_bound), average_from, record, y_rec, w_rec, m_rec)
    lat = parts == 2
    return RateResult(w_final.reshape(n_ind, trials, n_out, n_in),
                      w_mean.reshape(n_ind, trials, n_out, n_in), sse, count, blown,
                      y_rec if record else None,
                      w_rec.reshape(n_ind, trials, steps, n_out, n_in) if record else None,
                      m_final.reshape(n_ind, trials, n_out, n_out) if lat else None,
                      m_mean.reshape(n_ind, trials, n_out, n_out) if lat else None,
                      m_rec.reshape(n_ind, trials, steps, n_out, n_out) if lat and record else None)
