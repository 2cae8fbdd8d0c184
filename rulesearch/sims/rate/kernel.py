"""Rate network: y_t = act(W_t x_t), then W_{t+1} = W_t + eta * f(x_t, y_t, W_t) per synapse.

With a lateral pathway (``lateral`` "symmetric" or "hierarchical") the outputs also
receive lateral weights M among themselves and are linear: y_t = W_t x_t + M_t y_t,
solved exactly each step, y_t = (I - M_t)^{-1} W_t x_t (Gaussian elimination with partial
pivoting; in the hierarchical network M is strictly lower-triangular, so forward
substitution), i.e. the steady state of fast linear output dynamics. Then, with the same
y_t, W changes by eta * f(x_j, y_i, W_ij) and M by eta_lat * g(y_k, y_i, M_ik) (the lateral
rule's presynaptic activity is the other output y_k); M has no self-connections and, in
the hierarchical network, only entries i > k.

One call simulates a whole population of rules over all trials; individuals run in
parallel across threads (``threads.run_strided``), trials as one batch through the VM. All individuals
see the same inputs and initial weights.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from numba import njit

from ..._borrow import address, borrowed, floats, floats2d, ints, segment
from ...threads import run_strided
from ...vm import CLS_POST, CLS_PRE, CLS_SYN, FASTMATH, PackedPrograms, compile_plan, run_plan, swap_rows

ACTIVATIONS = {"linear": 0, "sigmoid": 1, "tanh": 2}
LATERAL = {"none": 0, "symmetric": 1, "hierarchical": 2}
SINGULAR = 1e-12  # |pivot| of (I - M) below this: the lateral network has no steady state (blown)


@dataclass  # not frozen: a frozen dataclass's __init__ costs a microsecond, felt by one-rule calls
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


@njit(cache=True, fastmath=FASTMATH, nogil=True, inline="always")
def _add_checked(w, d, eta, bound, n):
    """w[:n] += eta * d[:n]; returns how many weights left [-bound, bound] and a sum that NaN or inf
    poison (v * 0 is NaN for them): counted rather than a running maximum, so that it vectorises."""
    over = 0
    poison = 0.0
    for j in range(n):
        v = w[j] + eta * d[j]
        w[j] = v
        over += abs(v) > bound
        poison += v * 0.0
    return over, poison


@njit(cache=True, fastmath=FASTMATH, nogil=True, inline="always")
def _apply_update(cls, mem, r, eta, mask, w_row, bound, n_batch, n_out, n_in):
    """mem[w_row] += eta * mem[r], mem[r] a compact VM result of class ``cls`` (mask: 1 where a
    synapse exists, or empty for all). Returns whether every weight stayed finite and within ``bound``."""
    return _apply_update_at(cls, mem.ctypes.data, mem.shape[0], mem.shape[1], r, eta, mask.ctypes.data,
                            mask.shape[0], w_row, bound, n_batch, n_out, n_in)


@njit(cache=True, fastmath=FASTMATH, nogil=True)
def _apply_update_at(cls, mem_at, n_rows, n_cols, r, eta, mask_at, n_mask, w_row, bound, n_batch, n_out, n_in):
    """_apply_update on arrays given by address (no reference counting at the call, ``_borrow``)."""
    mem, mask = floats2d(mem_at, n_rows, n_cols), floats(mask_at, n_mask)
    over = 0
    poison = 0.0
    m = n_out * n_in
    if cls == CLS_SYN and mask.shape[0] == 0:
        o, p = _add_checked(segment(mem, w_row, 0, n_batch * m), segment(mem, r, 0, n_batch * m), eta, bound,
                            n_batch * m)
        return o == 0 and p == 0.0
    for b in range(n_batch):
        for i in range(n_out):
            base = b * m + i * n_in
            w = segment(mem, w_row, base, n_in)
            if mask.shape[0]:  # the lateral pathway (n_out * n_out synapses per trial): no need to vectorise
                for j in range(n_in):
                    if cls == CLS_SYN:
                        d = mem[r, base + j]
                    elif cls == CLS_PRE:
                        d = mem[r, b * n_in + j]
                    else:
                        d = mem[r, b * n_out + i] if cls == CLS_POST else mem[r, b]
                    v = w[j] + eta * d * mask[base + j]
                    w[j] = v
                    over += abs(v) > bound
                    poison += v * 0.0
            elif cls == CLS_SYN or cls == CLS_PRE:
                o, p = _add_checked(w, segment(mem, r, base if cls == CLS_SYN else b * n_in, n_in), eta, bound, n_in)
                over += o
                poison += p
            else:
                d = eta * (mem[r, b * n_out + i] if cls == CLS_POST else mem[r, b])
                for j in range(n_in):
                    v = w[j] + d
                    w[j] = v
                    over += abs(v) > bound
                    poison += v * 0.0
    return over == 0 and poison == 0.0


# Rows of the VM's memory (``vm.run_rows``): the presynaptic input, the output, the weights, then
# the stack. The lateral rule's presynaptic activity is the other output: its X row is the Y row.
X, Y, W, STACK = 0, 1, 2, 3  # X must be row 0: vm.run_plan reads row 0 where the inputs are
FF_ROWS = np.array([X, Y, W, -1, STACK])  # no trial variables
LATERAL_ROWS = np.array([Y, Y, W, -1, STACK])


@njit(cache=True, fastmath=FASTMATH, nogil=True)
def _feed_forward(mem_at, n_rows, n_cols, x_at, n_trials, n_out, n_in, act, w_row):
    """The outputs act(W x) into the Y row of the memory at mem_at (addresses, not arrays: ``_borrow``), W
    in row w_row, x one step's inputs (n_trials * n_in floats at x_at, which the rule's plan reads there
    too: ``vm.run_plan``'s row 0). Only a simulation's first step needs it: the weight update computes
    the next step's W x in the pass that writes W (``vm._update``)."""
    mem, x_now = floats(mem_at, (n_rows, n_cols)), floats(x_at, n_trials * n_in)
    m = n_out * n_in
    for b in range(n_trials):
        x_b = x_now[b * n_in:(b + 1) * n_in]
        for i in range(n_out):
            w_bi = segment(mem, w_row, b * m + i * n_in, n_in)
            s = 0.0
            for j in range(n_in):
                s += w_bi[j] * x_b[j]
            mem[Y, b * n_out + i] = s if act == 0 else _activate(s, act)


@njit(cache=True, fastmath=FASTMATH, nogil=True, inline="always")
def _activate_row(y_at, n, act):
    """act applied in place to the n outputs at y_at (the weight update's products with the next inputs)."""
    if act != 0:
        y = floats(y_at, n)
        for e in range(n):
            y[e] = _activate(y[e], act)


@njit(cache=True, fastmath=FASTMATH, nogil=True, inline="always")
def _sound(squares, w, bound):
    """Whether every weight is finite and within [-bound, bound], given the sum of their squares (NaN or
    inf when one is not finite): weights one by one only when that sum exceeds bound^2."""
    if squares <= bound * bound and squares < np.inf:  # false for NaN (and when bound * bound overflows)
        return True
    return _within(w.ctypes.data, w.shape[0], bound)


@njit(cache=True, fastmath=FASTMATH, nogil=True)
def _within(w_at, n, bound):
    """Whether the n weights at address w_at are finite and within [-bound, bound]."""
    w = floats(w_at, n)
    over = 0
    poison = 0.0
    for k in range(w.shape[0]):
        over += abs(w[k]) > bound
        poison += w[k] * 0.0
    return over == 0 and poison == 0.0


@njit(cache=True, fastmath=FASTMATH, nogil=True)
def _feed_forward_steps(plans_at, imms_at, n_plans, mem_at, n_rows, n_cols, w_next, xt_at, n_steps, n_trials, n_out,
                        n_in, act, eta, bound, target_at, has_target, sse_at, count_at, average_from, w_sum_at):
    """The time loop of a network without lateral weights, not recorded (``_run_plain``; arrays by address,
    ``_borrow``).

    The weights alternate between rows W and w_next, the rule's two plans (``vm.compile_plan``, at
    plans_at[0] and [1], imms_at likewise, n_plans entries each) each ending with the update from one
    into the other. The update also computes the next step's outputs and the sum of the new weights'
    squares (``vm._update``), so only the first step has a pass of its own over the weights
    (``_feed_forward``); an update's blow-up check opens the next step, or follows the loop. Returns
    whether the weights blew up; the final weights are left in row W."""
    mem = floats2d(mem_at, n_rows, n_cols)
    plans, imms, n_plan = ints(plans_at, 2), ints(imms_at, 2), ints(n_plans, 2)
    n = n_trials * n_out * n_in
    target = floats(target_at, n_trials * n_steps * n_out if has_target else 0)
    sse, count, w_sum = floats(sse_at, n_trials), ints(count_at, n_trials), floats(w_sum_at, n)
    step_bytes = n_trials * n_in * 8
    y_at = mem_at + Y * n_cols * 8
    now = W
    blown = False
    squares = 0.0
    for t in range(n_steps):
        if t == 0:
            _feed_forward(mem_at, n_rows, n_cols, xt_at, n_trials, n_out, n_in, act, now)
        elif not _sound(squares, segment(mem, now, 0, n), bound):
            blown = True  # by the previous step's update
            break
        if has_target:
            for b in range(n_trials):
                for i in range(n_out):
                    v = target[(b * n_steps + t) * n_out + i]
                    if v == v:  # NaN marks an unrecorded neuron
                        d = mem[Y, b * n_out + i] - v
                        sse[b] += d * d
                        count[b] += 1
        odd = t & 1
        x_at = xt_at + t * step_bytes
        squares = run_plan(plans[odd], imms[odd], n_plan[odd], mem_at, n_cols, x_at, n_trials, n_out, n_in, eta,
                           x_at + step_bytes if t + 1 < n_steps else x_at, y_at)
        _activate_row(y_at, n_trials * n_out, act)
        now = W if odd else w_next
        if t >= average_from:
            w = segment(mem, now, 0, n)
            for k in range(n):
                w_sum[k] += w[k]
    w = segment(mem, now, 0, n)
    if not blown and n_steps and not _sound(squares, w, bound):  # the last update's check
        blown = True
    if now != W:
        w_final = segment(mem, W, 0, n)
        for k in range(n):
            w_final[k] = w[k]
    return blown


@njit(cache=True, fastmath=FASTMATH, nogil=True)
def _run_rule(code_, arg_, consts_, lcode_, larg_, lconsts_, depth, xt_, w0, m0, target, eta, eta_lat, act,
              lateral, bound, average_from, w_final, w_sum, m_final, m_sum, record, y_rec, w_rec, m_rec):
    """One rule on all trials at once (trials are the VM's batch), recorded or with lateral weights (else
    ``_run_plain``). Returns (sse, count, blown).

    xt: inputs (steps, trials * n_in), a step's inputs of every trial in one row; lcode/larg/lconsts:
    the lateral pathway's program (used when lateral > 0)."""
    n_steps = xt_.shape[0]
    n_trials, n_out, n_in = w0.shape
    m = n_out * n_in
    n = n_trials * m
    mem_ = np.zeros((STACK + depth + 1, n))  # the last row: the weights after a step (``_feed_forward_steps``)
    w_next = STACK + depth
    mm = n_out * n_out
    nl = n_trials * mm if lateral else 0
    lmem_ = np.zeros((STACK + depth, nl))
    # the time loop works on borrowed views (no reference counting); the owners stay alive to the end
    code, arg, consts, mem, xt = borrowed(code_), borrowed(arg_), borrowed(consts_), borrowed(mem_), borrowed(xt_)
    lcode, larg, lconsts, lmem = borrowed(lcode_), borrowed(larg_), borrowed(lconsts_), borrowed(lmem_)
    ff_rows_, lateral_rows_ = FF_ROWS.copy(), LATERAL_ROWS.copy()
    ff_rows, lateral_rows = borrowed(ff_rows_), borrowed(lateral_rows_)
    mask_ = np.zeros(nl)  # 1 where a lateral synapse exists (i != k; hierarchical: i > k)
    mask = borrowed(mask_)
    h = np.empty(n_out)
    y = np.empty(n_out)
    scratch = np.empty((n_out, n_out + 1))
    for b in range(n_trials):
        for i in range(n_out):
            for j in range(n_in):
                mem[W, b * m + i * n_in + j] = w0[b, i, j]
            if lateral:
                for k in range(n_out):
                    ok = (i > k) if lateral == 2 else (i != k)
                    mask[b * mm + i * n_out + k] = 1.0 if ok else 0.0
                    lmem[W, b * mm + i * n_out + k] = m0[b, i, k] if ok else 0.0
    has_target = target.shape[0] > 0
    sse = np.zeros(n_trials)
    count = np.zeros(n_trials, np.int64)
    blown = False
    squares = 0.0  # of the weights after the last update (vm.run_plan)
    no_mask_ = np.zeros(0)
    no_mask = borrowed(no_mask_)
    # the plans (vm.compile_plan); without lateral weights the rule's plan updates the weights itself, from
    # row W into row w_next (rows as run-time int64 values, never literals: each literal argument would
    # compile another version)
    none, w_row = w_next - w_next - 1, w_next - w_next + W
    plan_, imm_, cls = compile_plan(code, arg, consts, ff_rows, none if lateral else w_next, none if lateral else w_row)
    lplan_, limm_, lcls = compile_plan(lcode, larg, lconsts, lateral_rows, none, none) if lateral else (plan_, imm_, cls)
    plan, imm, lplan, limm = borrowed(plan_), borrowed(imm_), borrowed(lplan_), borrowed(limm_)
    n_plan, n_lplan = plan.shape[0], lplan.shape[0] if lateral else 0
    for t in range(n_steps):
        if not lateral:  # the outputs: by the first step's pass, then by each update (as in _feed_forward_steps)
            if t == 0:
                _feed_forward(mem.ctypes.data, mem.shape[0], mem.shape[1], address(xt, t, 0), n_trials, n_out, n_in,
                              act, W)
            elif not _sound(squares, mem[W, :n], bound):
                blown = True  # by the previous step's update
                break
        else:
            for b in range(n_trials):
                x_b = segment(xt, t, b * n_in, n_in)
                for k in range(n_in):
                    mem[X, b * n_in + k] = x_b[k]
                for i in range(n_out):
                    w_bi = segment(mem, W, b * m + i * n_in, n_in)
                    s = 0.0
                    for j in range(n_in):
                        s += w_bi[j] * x_b[j]
                    h[i] = s
                if not _solve_lateral(lmem[W, b * mm:(b + 1) * mm], h, y, scratch, n_out, lateral):
                    blown = True
                for i in range(n_out):
                    mem[Y, b * n_out + i] = y[i]
                    lmem[Y, b * n_out + i] = y[i]
        for b in range(n_trials if has_target or record else 0):
            if has_target:
                for i in range(n_out):
                    v = target[b, t, i]
                    if v == v:  # NaN marks an unrecorded neuron
                        d = mem[Y, b * n_out + i] - v
                        sse[b] += d * d
                        count[b] += 1
            if record:
                for i in range(n_out):
                    y_rec[b, t, i] = mem[Y, b * n_out + i]
                for k in range(m):
                    w_rec[b, t, k] = mem[W, b * m + k]
                for k in range(mm if lateral else 0):
                    m_rec[b, t, k] = lmem[W, b * mm + k]
        if blown:
            break
        # (plan addresses as int64, as in _feed_forward_steps: one compiled version of run_plan)
        # row 0, the inputs: in place, or (lateral) copied into row X above; the update's products with the
        # next inputs into row Y
        at = np.int64(mem.ctypes.data)
        squares = run_plan(np.int64(plan.ctypes.data), np.int64(imm.ctypes.data), n_plan, mem.ctypes.data,
                           mem.shape[1], at if lateral else address(xt, t, 0), n_trials, n_out, n_in, eta,
                           address(xt, t + 1 if t + 1 < n_steps else t, 0), at + Y * mem.shape[1] * 8)
        if not lateral:  # (recorded: the new weights back into row W)
            _activate_row(at + Y * mem.shape[1] * 8, n_trials * n_out, act)
            for k in range(n):
                mem[W, k] = mem[w_next, k]
        if lateral:
            lat = np.int64(lmem.ctypes.data)
            run_plan(np.int64(lplan.ctypes.data), np.int64(limm.ctypes.data), n_lplan, lmem.ctypes.data, lmem.shape[1],
                     lat, n_trials, n_out, n_out, 0.0, lat, lat)
            ok = _apply_update(cls, mem, STACK, eta, no_mask, W, bound, n_trials, n_out, n_in)
            ok = _apply_update(lcls, lmem, STACK, eta_lat, mask, W, bound, n_trials, n_out, n_out) and ok
            if not ok:
                blown = True
                break
        if t >= average_from:
            for k in range(n):
                w_sum[k] += mem[W, k]
            for k in range(nl):
                m_sum[k] += lmem[W, k]
    if not lateral and record and not blown and n_steps and not _sound(squares, mem[W, :n], bound):  # the last update
        blown = True
    ff_rows_[0] += (lateral_rows_[0] * 0 + mask_.size * 0 + no_mask_.size * 0  # the views' owners live to here
                    + plan_.size * 0 + imm_.size * 0 + lplan_.size * 0 + limm_.size * 0)
    for k in range(n):
        w_final[k] = mem_[W, k]
    for k in range(nl):
        m_final[k] = lmem_[W, k]
    return sse, count, blown


@njit(cache=True, fastmath=FASTMATH, nogil=True)
def _run_plain(code_, arg_, consts_, depth, xt_, w0, target, eta, act, bound, average_from, w_final, w_sum, sse,
               count):
    """One rule on all trials at once, without lateral weights and not recorded (the searches' case; a
    kernel of its own so that they compile none of the lateral and recording code). Fills w_final,
    w_sum, sse and count (n_trials,); returns whether the weights blew up."""
    n_steps = xt_.shape[0]
    n_trials, n_out, n_in = w0.shape
    n = n_trials * n_out * n_in
    mem_ = np.zeros((STACK + depth + 1, n))  # the last row: the weights after even steps
    w_next = STACK + depth
    code, arg, consts, mem = borrowed(code_), borrowed(arg_), borrowed(consts_), borrowed(mem_)
    rows_ = FF_ROWS.copy()
    rows = borrowed(rows_)
    w = segment(mem, W, 0, n)
    k = 0
    for b in range(n_trials):
        for i in range(n_out):
            for j in range(n_in):
                w[k] = w0[b, i, j]
                k += 1
    for b in range(n_trials):
        sse[b] = 0.0
        count[b] = 0
    w_row = w_next - w_next + W  # a run-time value, not a literal (one compiled version of compile_plan)
    plan_, imm_, _ = compile_plan(code, arg, consts, rows, w_next, w_row)
    plan_odd_ = swap_rows(plan_, w_row, w_next)  # odd steps: from w_next back into W
    plans_ = np.array([plan_.ctypes.data, plan_odd_.ctypes.data])
    imms_ = np.array([imm_.ctypes.data, imm_.ctypes.data])
    n_plans_ = np.array([plan_.shape[0], plan_.shape[0]])
    blown = _feed_forward_steps(plans_.ctypes.data, imms_.ctypes.data, n_plans_.ctypes.data, mem.ctypes.data,
                                mem.shape[0], mem.shape[1], w_next, xt_.ctypes.data, n_steps, n_trials, n_out, n_in,
                                act, eta, bound, target.ctypes.data, target.shape[0] > 0, sse.ctypes.data,
                                count.ctypes.data, average_from, w_sum.ctypes.data)
    for k in range(n):
        w_final[k] = mem_[W, k]
    # every array read by address above lives to here: Numba frees an array after its last use by name
    rows_[0] += plan_.size * 0 + imm_.size * 0 + plan_odd_.size * 0 + plans_[0] * 0 + imms_[0] * 0 + n_plans_[0] * 0
    return blown


@njit(cache=True, nogil=True)
def _simulate_plain(first, step, order, code, arg, consts, code_start, const_start, depth, xt, w0, target, eta, act,
                    bound, average_from, w_final, w_mean, sse, count, blown):
    """``_simulate_individuals`` without lateral weights and not recorded: individuals order[first],
    order[first + step], ... (one thread's share)."""
    n_ind = blown.shape[0]
    n_steps = xt.shape[0]
    for q in range(first, n_ind, step):
        ind = order[q]
        c0, c1 = code_start[ind], code_start[ind + 1]
        k0, k1 = const_start[ind], const_start[ind + 1]
        blown[ind] = _run_plain(code[c0:c1], arg[c0:c1], consts[k0:k1], depth, xt, w0, target, eta, act, bound,
                                average_from, w_final[ind], w_mean[ind], sse[ind], count[ind])
        for k in range(w_mean.shape[1]):
            w_mean[ind, k] /= max(n_steps - average_from, 1)


@njit(cache=True, nogil=True)
def _simulate_individuals(first, step, order, code, arg, consts, code_start, const_start, depth, parts, xt, w0, m0,
                          target, eta, eta_lat, act, lateral, bound, average_from, record, y_rec, w_rec, m_rec,
                          w_final, w_mean, m_final, m_mean, sse, count, blown):
    """Individuals order[first], order[first + step], ... of the population (one thread's share,
    ``threads``)."""
    n_ind = blown.shape[0]
    n_steps = xt.shape[0]
    for q in range(first, n_ind, step):
        ind = order[q]
        p = ind * parts
        c0, c1 = code_start[p], code_start[p + 1]
        k0, k1 = const_start[p], const_start[p + 1]
        q = p + parts - 1  # the lateral program (the same as the first when parts == 1)
        l0, l1 = code_start[q], code_start[q + 1]
        j0, j1 = const_start[q], const_start[q + 1]
        r = np.int64(ind) if record else np.int64(0)
        s, c, b = _run_rule(code[c0:c1], arg[c0:c1], consts[k0:k1], code[l0:l1], arg[l0:l1], consts[j0:j1],
                            depth, xt, w0, m0, target, eta, eta_lat, act, lateral, bound, average_from,
                            w_final[ind], w_mean[ind], m_final[ind], m_mean[ind], record,
                            y_rec[r], w_rec[r], m_rec[r])
        for b_ in range(s.shape[0]):  # element by element: a row assignment compiles a shape check's message
            sse[ind, b_] = s[b_]
            count[ind, b_] = c[b_]
        blown[ind] = b
        for k in range(w_mean.shape[1]):
            w_mean[ind, k] /= max(n_steps - average_from, 1)
        for k in range(m_mean.shape[1]):
            m_mean[ind, k] /= max(n_steps - average_from, 1)


@functools.lru_cache(maxsize=64)
def _thread_order(n: int) -> np.ndarray:
    """The order in which the threads share n individuals (thread k takes order[k::T]): a fixed
    shuffle, so that a population whose costs repeat with a period (offspring next to each other,
    copies of a few rules) does not hand one thread the expensive ones. Results do not depend on it."""
    order = np.arange(n) if n < 2 else np.random.default_rng(n).permutation(n)
    order.flags.writeable = False
    return order


# Arguments the kernel does not read in a call (no target, no lateral weights, not recorded): shared, as
# allocating them cost a fair part of a one-rule call (never written: the kernel writes them only when
# recording or lateral).
_NOTHING3 = np.zeros((0, 0, 0))
_NOT_RECORDED = np.zeros((1, 0, 0, 0))


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
    n_ind = (len(packed.code_start) - 1) // packed.parts  # (packed.n_individuals, without two property calls)
    trials, steps, n_in = x.shape
    n_out = w0.shape[1]
    if m0 is None:
        m0 = np.zeros((trials, n_out, n_out)) if parts == 2 else _NOTHING3
    else:
        m0 = np.ascontiguousarray(m0, np.float64)
        if m0.shape != (trials, n_out, n_out):
            raise ValueError(f"m0 {m0.shape} must be (trials, n_out, n_out) = {(trials, n_out, n_out)}")
    if target is None:
        target = _NOTHING3
    else:
        target = np.ascontiguousarray(target, np.float64)
        if target.shape != (trials, steps, n_out):
            raise ValueError(f"target {target.shape} must be (trials, steps, n_out) = "
                             f"{(trials, steps, n_out)}")
    if record:
        shape = (n_ind, trials, steps)
        y_rec = np.zeros(shape + (n_out,))
        w_rec = np.zeros(shape + (n_out * n_in,))
        m_rec = np.zeros(shape + (n_out * n_out if parts == 2 else 0,))
    else:
        y_rec = w_rec = m_rec = _NOT_RECORDED
    average_from = steps - 1 if average_from is None else int(np.clip(average_from, 0, steps - 1))
    n = trials * n_out * n_in
    nl = trials * n_out * n_out if parts == 2 else 0
    w_final, w_mean = np.empty((n_ind, n)), np.zeros((n_ind, n))
    m_final, m_mean = (np.empty((n_ind, nl)), np.zeros((n_ind, nl))) if parts == 2 or record else (None, None)
    # (the kernel writes every entry of these)
    sse, count, blown = np.empty((n_ind, trials)), np.empty((n_ind, trials), np.int64), np.empty(n_ind, np.bool_)
    # the VM reads a step's inputs of all trials as one contiguous row
    xt = np.ascontiguousarray(x.transpose(1, 0, 2)).reshape(steps, trials * n_in)
    order = _thread_order(n_ind)
    if parts == 1 and not record:
        run_strided(_simulate_plain, n_ind, order, packed.code, packed.arg, packed.consts, packed.code_start,
                    packed.const_start, packed.depth, xt, w0, target, float(eta), ACTIVATIONS[activation],
                    float(weight_bound), average_from, w_final, w_mean, sse, count, blown)
    else:
        run_strided(_simulate_individuals, n_ind, order, packed.code, packed.arg, packed.consts, packed.code_start,
                    packed.const_start, packed.depth, parts, xt, w0, m0, target, float(eta), float(eta_lat),
                    ACTIVATIONS[activation], LATERAL[lateral], float(weight_bound), average_from, record,
                    y_rec, w_rec, m_rec, w_final, w_mean, m_final, m_mean, sse, count, blown)
    lat = parts == 2
    return RateResult(w_final.reshape(n_ind, trials, n_out, n_in),
                      w_mean.reshape(n_ind, trials, n_out, n_in), sse, count, blown,
                      y_rec if record else None,
                      w_rec.reshape(n_ind, trials, steps, n_out, n_in) if record else None,
                      m_final.reshape(n_ind, trials, n_out, n_out) if lat else None,
                      m_mean.reshape(n_ind, trials, n_out, n_out) if lat else None,
                      m_rec.reshape(n_ind, trials, steps, n_out, n_out) if lat and record else None)
