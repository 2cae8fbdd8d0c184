"""A recurrent network of excitatory (E) and inhibitory (I) conductance-based LIF neurons with
four event-driven plastic pathways (EE, EI, IE, II; ``ei`` is E -> I), driven by independent
Poisson input per neuron, run by the rule VM.

Neuron model and integration are those of ``sims/lif/kernel.py`` (exponential Euler with the
conductances frozen over a step, exact conductance decay, Brian2's step order). Neurons
0..n_e-1 are excitatory, n_e..N-1 inhibitory. Each step s:

1. state update (V clamped at reset during the refractory period); conductances decay;
2. threshold: V > V_th and not refractory;
3. external input: neuron i receives the Poisson events of its drive that fall in [s, s+1)
   steps, g_E += count * g_ext (the events are drawn in the kernel from the simulation's own
   seed, one splitmix64 stream per neuron: exponential inter-event intervals);
   presynaptic events, spiking neurons in index order, over each one's outgoing synapses
   (E targets first): the pathway's pre trace of the neuron += 1 (once per spike), a plastic
   synapse's w <- clip(w + eta * f_pre, 0, w_max), then the target's conductance
   += w * g_unit[pathway] (g_E for an E source, g_I for an I source);
4. postsynaptic events of the spiking neurons: for each incoming pathway, x_post += 1, then every
   plastic incoming synapse's w <- clip(w + eta * f_post, 0, w_max);
5. reset V; a running estimate of the E population rate (time constant ``tau_checker``) above
   ``max_rate`` stops the simulation (marked ``exploded``).

Traces are stored as their value just after the neuron's last update and decayed lazily
(x(t) = x_last exp(-(t - t_last) / tau)); each neuron has one pre trace per outgoing pathway and
one post trace per incoming pathway, with the time constants of the individual's rule. The rule
sees x_pre and x_post after this step's increments of steps 3 and 4 respectively (a pre event
sees the target's post trace before its own spike of this step), w before its update and
v = (V - E_L) / (V_th - E_L), V before reset.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit, prange

from ...vm import FASTMATH, PackedPrograms, run_program
from ..lif.kernel import update_neurons
from ..lif.kernel import (C_PF, DT_MS, E_EXC, E_INH, E_LEAK, G_LEAK, N_POST_SLOTS, N_PRE_SLOTS, N_SYN_SLOTS,
                          REF_STEPS, TAU_EXC, TAU_INH, V_RESET, V_SCALED, V_TH, W, X_POST, X_PRE)

N_PATH = 4  # ee, ei, ie, ii: pathway = 2 * (source is I) + (target is I)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


@njit(cache=True, nogil=True)
def _splitmix(state):
    """(new state, 64 random bits): splitmix64 (Steele et al. 2014), uint64 arithmetic wraps."""
    state = state + _GOLDEN
    z = state
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return state, z ^ (z >> np.uint64(31))


@njit(cache=True, nogil=True)
def _exp_interval(state, lam):
    """(new state, an exponential interval of rate ``lam`` per step, in steps)."""
    state, z = _splitmix(state)
    u = (np.float64(z >> np.uint64(11)) + 1.0) * (1.0 / 9007199254740992.0)  # (0, 1]
    return state, -np.log(u) / lam


@dataclass(frozen=True)
class NetworkResult:
    """Per individual: what the metrics read (``metrics.py``); recordings when asked for.

    counts: (n_ind, N, n_bins) spikes per neuron per bin of the scoring window; isi_n, isi_sum,
    isi_sum2: (n_ind, N) inter-spike intervals (in steps) within the scoring window: number, sum,
    sum of squares; w_start, w_end: (n_ind, 4) mean weight per pathway at the start of the scoring
    window and at the end; w_bound: (n_ind, 4) fraction of each pathway's weights at 0 or w_max,
    averaged over the weight snapshots strictly inside the scoring window (the end's alone when the
    window holds none); steps_run: (n_ind,) steps simulated (fewer when exploded); exploded, blown: bool
    (n_ind,) (population rate over the bound; a weight became non-finite).
    """

    counts: np.ndarray
    isi_n: np.ndarray
    isi_sum: np.ndarray
    isi_sum2: np.ndarray
    w_start: np.ndarray
    w_end: np.ndarray
    w_bound: np.ndarray
    steps_run: np.ndarray
    exploded: np.ndarray
    blown: np.ndarray
    w_final: np.ndarray | None = None  # (n_ind, n_syn) when recorded
    spike_steps: np.ndarray | None = None  # (n_ind, cap) step of each spike, -1 after the last
    spike_neurons: np.ndarray | None = None  # (n_ind, cap)


@njit(cache=True, fastmath=FASTMATH, nogil=True)
def _network(code, arg, consts, code_start, const_start, depth, ind, parts, part_of, n_e, syn_post, out_ptr,
             in_ptr, in_syn, in_pre, w0, neuron, g_unit, g_ext, lam_ext, seed, eta, w_max, tau_pre, tau_post,
             n_steps, score_from, bin_steps, snapshot_steps, rate_decay, rate_bound, counts, isi, w_means, w_bound,
             w_out, spike_steps, spike_neurons):
    """One network under individual ``ind``'s rule; returns (steps run, exploded, blown)."""
    n = v_len = out_ptr.shape[0] - 1
    dt = neuron[DT_MS]
    c_pf, g_leak, e_leak = neuron[C_PF], neuron[G_LEAK], neuron[E_LEAK]
    e_exc, e_inh, v_th, v_reset = neuron[E_EXC], neuron[E_INH], neuron[V_TH], neuron[V_RESET]
    ref_steps = int(neuron[REF_STEPS])
    decay_e, decay_i = np.exp(-dt / neuron[TAU_EXC]), np.exp(-dt / neuron[TAU_INH])
    v_scale = 1.0 / (v_th - e_leak)
    n_syn = w0.shape[0]
    w = w0.copy()
    v = np.full(v_len, e_leak)
    g_e = np.zeros(n)
    g_i = np.zeros(n)
    last_spike = np.full(n, -(10 ** 9), np.int64)
    spiked = np.zeros(n, np.bool_)
    # traces: pre trace per target type (E, I), post trace per source type, lazily decayed
    xp = np.zeros((n, 2))
    tp = np.zeros(n)
    xq = np.zeros((n, 2))
    tq = np.zeros(n)
    rng = np.empty(n, np.uint64)
    next_ext = np.empty(n)
    for i in range(n):
        state = np.uint64(seed) * np.uint64(0x100000001B3) + np.uint64(i) * _GOLDEN
        state, _ = _splitmix(state)
        state, first = _exp_interval(state, lam_ext)
        rng[i], next_ext[i] = state, first
    # VM scratch, sized for the largest fan-out and fan-in
    max_deg = 1
    for i in range(n):
        max_deg = max(max_deg, out_ptr[i + 1] - out_ptr[i], in_ptr[i + 1] - in_ptr[i])
    pre_s = np.zeros((N_PRE_SLOTS, 1, max_deg))
    post_s = np.zeros((N_POST_SLOTS, 1, max_deg))
    syn_s = np.zeros((N_SYN_SLOTS, max_deg))
    stack = np.empty((depth, max_deg))
    out_s = np.empty(max_deg)
    trial_vars = np.zeros((2, 1))
    last_isi_spike = np.full(n, -1, np.int64)
    n_bins = counts.shape[1]
    rate_est = 0.0
    n_rec = 0
    n_snapshots = 0  # weight snapshots inside the scoring window (w_bound)
    exploded = False
    s = 0
    while s < n_steps:
        # 1. state update
        update_neurons(s, v, g_e, g_i, last_spike, ref_steps, g_leak, e_leak, e_exc, e_inh, dt, c_pf,
                       decay_e, decay_i)
        # 2. threshold
        n_spk_e = 0
        any_spike = False
        for i in range(n):
            spiked[i] = v[i] > v_th and s - last_spike[i] >= ref_steps
            if spiked[i]:
                any_spike = True
                if i < n_e:
                    n_spk_e += 1
        # 3. external Poisson input, then presynaptic events
        for i in range(n):
            k = 0
            while next_ext[i] < s + 1.0:
                k += 1
                state, gap = _exp_interval(rng[i], lam_ext)
                rng[i] = state
                next_ext[i] += gap
            g_e[i] += k * g_ext
        if any_spike:
            for j in range(n):
                if not spiked[j]:
                    continue
                src = 0 if j < n_e else 1
                for q in range(2):  # pre traces of the neuron's two outgoing pathways (+1 once per spike)
                    tau = tau_pre[2 * src + q]
                    xp[j, q] = xp[j, q] * np.exp(-(s - tp[j]) * dt / tau) + 1.0
                tp[j] = s
                a0, a1 = out_ptr[j], out_ptr[j + 1]
                # outgoing synapses are sorted by target: E targets, then I targets
                b0 = a0
                for q in range(2):
                    p = 2 * src + q
                    b1 = b0
                    while b1 < a1 and (syn_post[b1] >= n_e) == (q == 1):
                        b1 += 1
                    m = b1 - b0
                    part = part_of[p]
                    if m > 0 and part >= 0:
                        pre_s[X_PRE, 0, 0] = xp[j, q]
                        for a in range(m):
                            i = syn_post[b0 + a]
                            post_s[X_POST, 0, a] = xq[i, src] * np.exp(-(s - tq[i]) * dt / tau_post[p])
                            post_s[V_SCALED, 0, a] = (v[i] - e_leak) * v_scale
                            syn_s[W, a] = w[b0 + a]
                        kk = ind * parts + part
                        c0, c1 = code_start[kk], code_start[kk + 1]
                        k0, k1 = const_start[kk], const_start[kk + 1]
                        run_program(code[c0:c1], arg[c0:c1], consts[k0:k1], pre_s[:, :, :1], post_s[:, :, :m],
                                    syn_s[:, :m], trial_vars, stack[:, :m], out_s[:m])
                        for a in range(m):
                            u = w[b0 + a] + eta[p] * out_s[a]
                            if not np.isfinite(u):
                                return s, False, True
                            w[b0 + a] = min(max(u, 0.0), w_max[p])
                    unit = g_unit[p]
                    if src == 0:
                        for a in range(b0, b1):
                            g_e[syn_post[a]] += w[a] * unit
                    else:
                        for a in range(b0, b1):
                            g_i[syn_post[a]] += w[a] * unit
                    b0 = b1
            # 4. postsynaptic events
            for i in range(n):
                if not spiked[i]:
                    continue
                tgt = 0 if i < n_e else 1
                a0, a1 = in_ptr[i], in_ptr[i + 1]
                b0 = a0
                for r in range(2):  # incoming synapses sorted by source: from E, then from I
                    p = 2 * r + tgt
                    xq[i, r] = xq[i, r] * np.exp(-(s - tq[i]) * dt / tau_post[p]) + 1.0
                    b1 = b0
                    while b1 < a1 and (in_pre[b1] >= n_e) == (r == 1):
                        b1 += 1
                    m = b1 - b0
                    part = part_of[p]
                    if m > 0 and part >= 0:
                        post_s[X_POST, 0, 0] = xq[i, r]
                        post_s[V_SCALED, 0, 0] = (v[i] - e_leak) * v_scale
                        for a in range(m):
                            j = in_pre[b0 + a]
                            pre_s[X_PRE, 0, a] = xp[j, tgt] * np.exp(-(s - tp[j]) * dt / tau_pre[p])
                            syn_s[W, a] = w[in_syn[b0 + a]]
                        kk = ind * parts + part + 1
                        c0, c1 = code_start[kk], code_start[kk + 1]
                        k0, k1 = const_start[kk], const_start[kk + 1]
                        run_program(code[c0:c1], arg[c0:c1], consts[k0:k1], pre_s[:, :, :m], post_s[:, :, :1],
                                    syn_s[:, :m], trial_vars, stack[:, :m], out_s[:m])
                        for a in range(m):
                            k = in_syn[b0 + a]
                            u = w[k] + eta[p] * out_s[a]
                            if not np.isfinite(u):
                                return s, False, True
                            w[k] = min(max(u, 0.0), w_max[p])
                    b0 = b1
                tq[i] = s
                # 5. reset, and what the metrics read
                v[i] = v_reset
                last_spike[i] = s
                if s >= score_from:
                    counts[i, min((s - score_from) // bin_steps, n_bins - 1)] += 1
                    if last_isi_spike[i] >= 0:
                        d = s - last_isi_spike[i]
                        isi[0, i] += 1
                        isi[1, i] += d
                        isi[2, i] += d * d
                    last_isi_spike[i] = s
                if n_rec < spike_steps.shape[0]:
                    spike_steps[n_rec] = s
                    spike_neurons[n_rec] = i
                    n_rec += 1
        rate_est = rate_est * rate_decay + n_spk_e
        s += 1
        if s == score_from:
            _pathway_means(w, w0, out_ptr, syn_post, n_e, w_means[0])
        if score_from < s < n_steps and (s - score_from) % snapshot_steps == 0:
            _add_bound_fractions(w, w_max, out_ptr, syn_post, n_e, w_bound)
            n_snapshots += 1
        # the estimate is in spikes per neuron and step x (1 - decay)^-1; compared in the same unit
        if rate_est > rate_bound:
            exploded = True
            break
    if score_from >= n_steps:
        _pathway_means(w, w0, out_ptr, syn_post, n_e, w_means[0])
    _pathway_means(w, w0, out_ptr, syn_post, n_e, w_means[1])
    if n_snapshots == 0:  # a window shorter than the snapshot interval: the end
        _add_bound_fractions(w, w_max, out_ptr, syn_post, n_e, w_bound)
        n_snapshots = 1
    for p in range(N_PATH):
        w_bound[p] /= n_snapshots
    if w_out.shape[0] == n_syn:
        w_out[:] = w
    return s, exploded, False


@njit(cache=True, nogil=True)
def _add_bound_fractions(w, w_max, out_ptr, syn_post, n_e, fractions):
    """Add each pathway's fraction of weights at 0 or w_max to ``fractions`` (4,) (a pathway without
    synapses: 0). The weights are clipped to [0, w_max], so 'at' is equality (as published)."""
    counter = np.zeros(N_PATH)
    at = np.zeros(N_PATH)
    for j in range(out_ptr.shape[0] - 1):
        src = 0 if j < n_e else 1
        for a in range(out_ptr[j], out_ptr[j + 1]):
            p = 2 * src + (1 if syn_post[a] >= n_e else 0)
            counter[p] += 1
            if w[a] <= 0.0 or w[a] >= w_max[p]:
                at[p] += 1
    for p in range(N_PATH):
        fractions[p] += at[p] / counter[p] if counter[p] > 0 else 0.0


@njit(cache=True, nogil=True)
def _pathway_means(w, w0, out_ptr, syn_post, n_e, means):
    """Mean weight per pathway into ``means`` (4,); 0 for a pathway without synapses."""
    total = np.zeros(N_PATH)
    count = np.zeros(N_PATH)
    for j in range(out_ptr.shape[0] - 1):
        src = 0 if j < n_e else 1
        for a in range(out_ptr[j], out_ptr[j + 1]):
            p = 2 * src + (1 if syn_post[a] >= n_e else 0)
            total[p] += w[a]
            count[p] += 1
    for p in range(N_PATH):
        means[p] = total[p] / count[p] if count[p] > 0 else 0.0


@njit(cache=True, parallel=True)
def _simulate(code, arg, consts, code_start, const_start, depth, parts, part_of, n_e, syn_post, out_ptr, in_ptr,
              in_syn, in_pre, w0, neuron, g_unit, g_ext, lam_ext, seeds, eta, w_max, tau_pre, tau_post, n_steps,
              score_from, bin_steps, snapshot_steps, n_bins, rate_decay, rate_bound, record_w, spike_cap):
    n_ind = seeds.shape[0]
    n = out_ptr.shape[0] - 1
    counts = np.zeros((n_ind, n, n_bins), np.int32)
    isi = np.zeros((n_ind, 3, n), np.float64)
    w_means = np.zeros((n_ind, 2, N_PATH))
    w_bound = np.zeros((n_ind, N_PATH))
    w_out = np.zeros((n_ind, w0.shape[0] if record_w else 0))
    spike_steps = np.full((n_ind, spike_cap), -1, np.int64)
    spike_neurons = np.full((n_ind, spike_cap), -1, np.int64)
    steps_run = np.zeros(n_ind, np.int64)
    exploded = np.zeros(n_ind, np.bool_)
    blown = np.zeros(n_ind, np.bool_)
    for ind in prange(n_ind):
        steps_run[ind], exploded[ind], blown[ind] = _network(
            code, arg, consts, code_start, const_start, depth, ind, parts, part_of, n_e, syn_post, out_ptr, in_ptr,
            in_syn, in_pre, w0, neuron, g_unit, g_ext, lam_ext[ind], seeds[ind], eta, w_max, tau_pre[ind],
            tau_post[ind], n_steps, score_from, bin_steps, snapshot_steps, rate_decay, rate_bound, counts[ind], isi[ind],
            w_means[ind], w_bound[ind], w_out[ind], spike_steps[ind], spike_neurons[ind])
    return counts, isi, w_means, w_bound, w_out, spike_steps, spike_neurons, steps_run, exploded, blown


def simulate_network(packed: PackedPrograms, part_of: np.ndarray, n_e: int, syn_post: np.ndarray,
                     out_ptr: np.ndarray, in_ptr: np.ndarray, in_syn: np.ndarray, in_pre: np.ndarray,
                     w0: np.ndarray, neuron: np.ndarray, g_unit: np.ndarray, g_ext_ns: float, ext_rate_hz: np.ndarray,
                     seeds: np.ndarray, eta: np.ndarray, w_max: np.ndarray, tau_pre_ms: np.ndarray,
                     tau_post_ms: np.ndarray, n_steps: int, score_from: int, bin_steps: int, max_rate_hz: float,
                     tau_checker_ms: float, record: bool = False, spike_cap: int = 0,
                     snapshot_steps: int = 1000) -> NetworkResult:
    """Simulate every individual of ``packed`` on the network (one Numba call, prange over individuals).

    part_of (4,): index of the pathway's pre part among an individual's parts (its post part is the
    next), -1 for a fixed pathway; n_e: excitatory neurons (the first n_e of N); synapses sorted by
    source, then target type (E first), then target: syn_post (n_syn,) target, out_ptr (N + 1,)
    offsets; incoming lists in_ptr (N + 1,), in_syn (n_syn,) synapse id, in_pre (n_syn,) source,
    sorted by source type (E first); w0 (n_syn,) initial weights; neuron: constants in
    ``sims/lif/kernel`` order; g_unit (4,) nS per unit weight per pathway; g_ext_ns: conductance of
    one external event; ext_rate_hz (n_ind,): total external event rate per neuron; seeds
    (n_ind,) int: each simulation's external input stream; eta, w_max (4,); tau_pre_ms,
    tau_post_ms (n_ind, 4); the scoring window starts at step ``score_from`` and is binned in
    ``bin_steps``, its weights' fraction at a bound taken every ``snapshot_steps`` (published: a
    weight monitor every 100 ms); a population rate estimate over ``max_rate_hz`` (time constant
    ``tau_checker_ms``) stops a simulation.
    """
    n_ind = packed.n_individuals
    n_parts = int(np.sum(np.asarray(part_of) >= 0)) * 2
    if packed.parts != n_parts:
        raise ValueError(f"{packed.parts} programs per individual for {n_parts // 2} plastic pathway(s): expected "
                         f"{n_parts} (pre and post per pathway)")
    dt = float(neuron[DT_MS])
    decay = np.exp(-dt / tau_checker_ms)
    # rate_est is a leaky sum of E spikes per step: at a steady rate r (Hz) it tends to
    # r * n_e * dt / (1 - decay)
    bound = max_rate_hz * n_e * dt * 1e-3 / (1.0 - decay)
    n_bins = max(1, -(-(n_steps - score_from) // bin_steps))
    taus = [np.ascontiguousarray(np.broadcast_to(t, (n_ind, 4)), np.float64) for t in (tau_pre_ms, tau_post_ms)]
    lam = np.ascontiguousarray(np.broadcast_to(ext_rate_hz, (n_ind,)), np.float64) * dt * 1e-3
    out = _simulate(packed.code, packed.arg, packed.consts, packed.code_start, packed.const_start,
                    max(packed.depth, 1), packed.parts, np.asarray(part_of, np.int64), int(n_e),
                    syn_post.astype(np.int64), out_ptr.astype(np.int64), in_ptr.astype(np.int64),
                    in_syn.astype(np.int64), in_pre.astype(np.int64), np.asarray(w0, np.float64),
                    np.asarray(neuron, np.float64), np.asarray(g_unit, np.float64), float(g_ext_ns),
                    np.maximum(lam, 1e-300), np.asarray(np.broadcast_to(seeds, (n_ind,)), np.int64),
                    np.asarray(eta, np.float64), np.asarray(w_max, np.float64), taus[0], taus[1], int(n_steps),
                    int(score_from), int(bin_steps), max(1, int(snapshot_steps)), int(n_bins), float(decay),
                    float(bound), bool(record),
                    int(spike_cap) if record else 0)
    counts, isi, w_means, w_bound, w_out, spike_steps, spike_neurons, steps_run, exploded, blown = out
    return NetworkResult(counts, isi[:, 0], isi[:, 1], isi[:, 2], w_means[:, 0], w_means[:, 1], w_bound, steps_run,
                         exploded, blown, w_out if record else None, spike_steps if record else None,
                         spike_neurons if record else None)
