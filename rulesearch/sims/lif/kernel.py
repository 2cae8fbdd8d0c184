"""Conductance-based leaky integrate-and-fire neurons driven by Poisson afferents, with
event-driven plasticity run by the rule VM.

Neuron i (units: mV, nS, pF, ms)::

    C dV/dt = g_L (E_L - V) + g_E (E_E - V) + g_I (E_I - V)
    dg_E/dt = -g_E / tau_E,   dg_I/dt = -g_I / tau_I

Integration scheme (the same as Brian2's ``exponential_euler`` for these equations): over a
step dt the conductances are frozen at their values at the start of the step, so V relaxes
exactly towards V_inf = (g_L E_L + g_E E_E + g_I E_I) / g_tot with time constant C / g_tot;
the conductances decay exactly (factor exp(-dt / tau)). Each step then runs, in Brian2's order:

1. state update; V stays clamped at reset until ``refractory`` steps have passed since the
   neuron's last spike (Brian2's timing); conductances always decay;
2. threshold: a neuron spikes when V > V_th and it is not refractory;
3. presynaptic events of the afferents that spike in this step (in afferent order): a plastic
   synapse's trace x_pre += 1, then w <- clip(w + eta * f_pre, 0, w_max), then the synapse's
   conductance g += w * g_unit (fixed synapses only add their conductance);
4. postsynaptic events of the neurons that spiked: x_post += 1, then for every plastic
   afferent w <- clip(w + eta * f_post, 0, w_max);
5. reset: V = V_reset.

Traces decay exactly between events (x <- x exp(-(t - t_last) / tau), evaluated at an event,
as Brian2's event-driven variables do), so nothing is paid per step for them. The rule sees
``x_pre`` and ``x_post`` after this step's increments of steps 3 and 4, ``w`` before its
update and ``v = (V - E_L) / (V_th - E_L)`` (0 at rest, 1 at threshold), V before reset.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit, prange

from ...primitives import POST, PRE, SYN, VARIABLES
from ...vm import FASTMATH, PackedPrograms, run_program, run_program_at

# rows of the arrays the VM reads (every catalogue slot of each kind; unused rows stay 0)
N_PRE_SLOTS = 1 + max(v.slot for v in VARIABLES.values() if v.kind == PRE)
N_POST_SLOTS = 1 + max(v.slot for v in VARIABLES.values() if v.kind == POST)
N_SYN_SLOTS = 1 + max(v.slot for v in VARIABLES.values() if v.kind == SYN)
X_PRE, X_POST, V_SCALED, W = VARIABLES["x_pre"].slot, VARIABLES["x_post"].slot, VARIABLES["v"].slot, 0

# indices into the neuron-constant vector ``neuron`` of the kernel
(C_PF, G_LEAK, E_LEAK, E_EXC, E_INH, V_TH, V_RESET, REF_STEPS, TAU_EXC, TAU_INH, DT_MS,
 G_EXC_UNIT, G_INH_UNIT) = range(13)


@dataclass(frozen=True)
class LifResult:
    """Per individual and trial; recordings only when asked for."""

    spikes_scored: np.ndarray  # (n_ind, trials, n_post) output spikes in the scoring window
    spikes_total: np.ndarray  # (n_ind, trials, n_post)
    w_final: np.ndarray  # (n_ind, trials, n_post, n_aff)
    blown: np.ndarray  # bool (n_ind,): a weight became non-finite in some trial
    trial_blown: np.ndarray  # bool (n_ind, trials)
    spike_steps: np.ndarray | None = None  # (n_ind, trials, cap) step of each output spike (-1 after the last)
    w_trace: np.ndarray | None = None  # (n_ind, trials, n_rec, n_post, n_aff) weights every record_every steps


@njit(cache=True, fastmath=FASTMATH, nogil=True)
def update_neurons(s, v, g_e, g_i, last_spike, ref_steps, g_leak, e_leak, e_exc, e_inh, dt, c_pf, decay_e, decay_i):
    """Step 1 for every neuron: exponential Euler on V with the conductances of the start of the step
    (V stays at reset until ``ref_steps`` steps after its last spike), exact decay of the
    conductances. Shared by the spiking kernels."""
    for i in range(v.shape[0]):
        if s - last_spike[i] >= ref_steps:
            g_tot = g_leak + g_e[i] + g_i[i]
            v_inf = (g_leak * e_leak + g_e[i] * e_exc + g_i[i] * e_inh) / g_tot
            v[i] = v_inf + (v[i] - v_inf) * np.exp(-dt * g_tot / c_pf)
        g_e[i] *= decay_e
        g_i[i] *= decay_i


@njit(cache=True, fastmath=FASTMATH, nogil=True)
def _trial(code, arg, consts, code_start, const_start, depth, ind, parts, trial_index,
           path, exc, w0, spk_ptr, spk_aff, path_ptr, path_aff, neuron, eta, w_max, tau_pre, tau_post,
           score_from, spikes_scored, spikes_total, w_out, spike_rec, w_rec, record_every):
    """One rule (individual ``ind``) on one trial; returns False when a weight became non-finite."""
    n_post, n_aff = w0.shape
    n_steps = spk_ptr.shape[0] - 1
    n_path = path_ptr.shape[0] - 1
    dt = neuron[DT_MS]
    c_pf, g_leak, e_leak = neuron[C_PF], neuron[G_LEAK], neuron[E_LEAK]
    e_exc, e_inh, v_th, v_reset = neuron[E_EXC], neuron[E_INH], neuron[V_TH], neuron[V_RESET]
    ref_steps = int(neuron[REF_STEPS])
    decay_e, decay_i = np.exp(-dt / neuron[TAU_EXC]), np.exp(-dt / neuron[TAU_INH])
    v_scale = 1.0 / (v_th - e_leak)

    w = w0.copy()
    v = np.full(n_post, e_leak)
    g_e = np.zeros(n_post)
    g_i = np.zeros(n_post)
    last_spike = np.full(n_post, -(10 ** 9), np.int64)
    spiked = np.zeros(n_post, np.bool_)
    x_pre = np.zeros(n_aff)
    t_pre = np.zeros(n_aff)  # step of the trace's last update
    x_post = np.zeros((n_path, n_post))
    t_post = np.zeros((n_path, n_post))
    # VM scratch: slot values at one synapse (presynaptic events), and the variables' rows for the
    # synapses of one neuron (postsynaptic events)
    pre1 = np.zeros(N_PRE_SLOTS)
    post1 = np.zeros(N_POST_SLOTS)
    syn1 = np.zeros(N_SYN_SLOTS)
    stack1 = np.empty(depth)
    trial1 = np.zeros(2)
    trial_vars = np.zeros((2, 1))
    n_spk = 0
    for s in range(n_steps):
        # 1. state update with the conductances of the start of the step
        update_neurons(s, v, g_e, g_i, last_spike, ref_steps, g_leak, e_leak, e_exc, e_inh, dt, c_pf,
                       decay_e, decay_i)
        # 2. threshold
        any_spike = False
        for i in range(n_post):
            spiked[i] = v[i] > v_th and s - last_spike[i] >= ref_steps
            any_spike = any_spike or spiked[i]
        # 3. presynaptic events
        for q in range(spk_ptr[s], spk_ptr[s + 1]):
            j = spk_aff[q]
            p = path[j]
            if p >= 0:
                x_pre[j] = x_pre[j] * np.exp(-(s - t_pre[j]) * dt / tau_pre[p]) + 1.0
                t_pre[j] = s
                pre1[X_PRE] = x_pre[j]
                k = ind * parts + 2 * p
                for i in range(n_post):
                    post1[X_POST] = x_post[p, i] * np.exp(-(s - t_post[p, i]) * dt / tau_post[p])
                    post1[V_SCALED] = (v[i] - e_leak) * v_scale
                    syn1[W] = w[i, j]
                    f = run_program_at(code, arg, consts, code_start[k], code_start[k + 1], const_start[k],
                                       pre1, post1, syn1, trial1, stack1)
                    u = w[i, j] + eta[p] * f
                    if not np.isfinite(u):
                        return False
                    w[i, j] = min(max(u, 0.0), w_max[p])
            if exc[j]:
                for i in range(n_post):
                    g_e[i] += w[i, j] * neuron[G_EXC_UNIT]
            else:
                for i in range(n_post):
                    g_i[i] += w[i, j] * neuron[G_INH_UNIT]
        if any_spike:
            for i in range(n_post):
                if not spiked[i]:
                    continue
                # 4. postsynaptic events, pathway by pathway
                for p in range(n_path):
                    x_post[p, i] = x_post[p, i] * np.exp(-(s - t_post[p, i]) * dt / tau_post[p]) + 1.0
                    t_post[p, i] = s
                    a0, a1 = path_ptr[p], path_ptr[p + 1]
                    m = a1 - a0
                    if m == 0:
                        continue
                    pre_m = np.zeros((N_PRE_SLOTS, 1, m))
                    post_m = np.zeros((N_POST_SLOTS, 1, 1))
                    syn_m = np.zeros((N_SYN_SLOTS, m))
                    out_m = np.empty(m)
                    post_m[X_POST, 0, 0] = x_post[p, i]
                    post_m[V_SCALED, 0, 0] = (v[i] - e_leak) * v_scale
                    for a in range(m):
                        j = path_aff[a0 + a]
                        pre_m[X_PRE, 0, a] = x_pre[j] * np.exp(-(s - t_pre[j]) * dt / tau_pre[p])
                        syn_m[W, a] = w[i, j]
                    k = ind * parts + 2 * p + 1
                    c0, c1 = code_start[k], code_start[k + 1]
                    k0, k1 = const_start[k], const_start[k + 1]
                    run_program(code[c0:c1], arg[c0:c1], consts[k0:k1], pre_m, post_m, syn_m, trial_vars,
                                np.empty((depth, m)), out_m)
                    for a in range(m):
                        j = path_aff[a0 + a]
                        u = w[i, j] + eta[p] * out_m[a]
                        if not np.isfinite(u):
                            return False
                        w[i, j] = min(max(u, 0.0), w_max[p])
                # 5. reset
                v[i] = v_reset
                last_spike[i] = s
                spikes_total[i] += 1
                if s >= score_from:
                    spikes_scored[i] += 1
                if i == 0 and n_spk < spike_rec.shape[0]:
                    spike_rec[n_spk] = s
                    n_spk += 1
        if record_every > 0 and s % record_every == 0 and s // record_every < w_rec.shape[0]:
            w_rec[s // record_every] = w
    w_out[:] = w
    return True


@njit(cache=True, parallel=True)
def _simulate(code, arg, consts, code_start, const_start, depth, parts, path, exc, w0, spk_ptr, spk_aff,
              path_ptr, path_aff, neuron, eta, w_max, tau_pre, tau_post, score_from, record_every, n_rec,
              spike_cap):
    n_ind = tau_pre.shape[0]
    n_trials, n_post, n_aff = w0.shape
    spikes_scored = np.zeros((n_ind, n_trials, n_post), np.int64)
    spikes_total = np.zeros((n_ind, n_trials, n_post), np.int64)
    w_final = np.zeros((n_ind, n_trials, n_post, n_aff))
    ok = np.ones((n_ind, n_trials), np.bool_)
    spike_rec = np.full((n_ind, n_trials, spike_cap), -1, np.int64)
    w_rec = np.zeros((n_ind, n_trials, n_rec, n_post, n_aff))
    for job in prange(n_ind * n_trials):
        ind, b = job // n_trials, job % n_trials
        ok[ind, b] = _trial(code, arg, consts, code_start, const_start, depth, ind, parts, b, path, exc, w0[b],
                            spk_ptr[b], spk_aff, path_ptr, path_aff, neuron, eta, w_max, tau_pre[ind],
                            tau_post[ind], score_from, spikes_scored[ind, b], spikes_total[ind, b],
                            w_final[ind, b], spike_rec[ind, b], w_rec[ind, b], record_every)
    return spikes_scored, spikes_total, w_final, ok, spike_rec, w_rec


def simulate(packed: PackedPrograms, path: np.ndarray, exc: np.ndarray, w0: np.ndarray, spk_ptr: np.ndarray,
             spk_aff: np.ndarray, neuron: np.ndarray, eta: np.ndarray, w_max: np.ndarray,
             tau_pre_ms: np.ndarray, tau_post_ms: np.ndarray, score_from: int, record_every: int = 0,
             n_rec: int = 0, spike_cap: int = 0) -> LifResult:
    """Simulate every individual of ``packed`` on every trial (one Numba call).

    packed: 2 programs (pre, post) per plastic pathway per individual; path (n_aff,) int:
    the plastic pathway of each afferent, -1 for fixed ones; exc (n_aff,) bool: excitatory
    afferent; w0 (trials, n_post, n_aff) initial weights (dimensionless, x g_unit nS);
    spk_ptr (trials, n_steps + 1) offsets into spk_aff (afferent index of each input spike,
    grouped by step); neuron: the constants indexed by C_PF..G_INH_UNIT; eta, w_max (n_path,);
    tau_pre_ms, tau_post_ms (n_ind, n_path): trace time constants per individual (a fitted
    family may vary them); score_from: first step of the scoring window.
    """
    n_path = len(eta)
    if packed.parts != 2 * n_path:
        raise ValueError(f"{packed.parts} programs per individual for {n_path} plastic pathway(s): expected "
                         f"{2 * n_path} (pre and post per pathway)")
    order = np.argsort(path, kind="stable")
    counts = np.bincount(path[path >= 0], minlength=n_path)
    path_ptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    path_aff = order[np.sum(path < 0):].astype(np.int64)
    n_ind = packed.n_individuals
    tau_pre_ms = np.ascontiguousarray(np.broadcast_to(tau_pre_ms, (n_ind, n_path)), np.float64)
    tau_post_ms = np.ascontiguousarray(np.broadcast_to(tau_post_ms, (n_ind, n_path)), np.float64)
    scored, total, w_final, ok, spike_rec, w_rec = _simulate(
        packed.code, packed.arg, packed.consts, packed.code_start, packed.const_start, max(packed.depth, 1),
        packed.parts, path.astype(np.int64), exc.astype(np.bool_), np.ascontiguousarray(w0, np.float64),
        spk_ptr.astype(np.int64), spk_aff.astype(np.int64), path_ptr, path_aff, neuron.astype(np.float64),
        eta.astype(np.float64), w_max.astype(np.float64), tau_pre_ms, tau_post_ms, int(score_from),
        int(record_every), int(n_rec), int(spike_cap))
    trial_blown = ~ok
    recorded = record_every > 0 or spike_cap > 0
    return LifResult(scored, total, w_final, trial_blown.any(axis=1), trial_blown,
                     spike_rec if recorded else None, w_rec if recorded else None)
