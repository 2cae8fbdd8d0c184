"""Slow, obvious NumPy references for the compiled kernels (the STUMPY pattern)."""
from __future__ import annotations

import numpy as np
import sympy

from rulesearch.rules import Rule, symbol


def rule_function(rule: Rule, pathway: int = 0):
    """A pathway's exact meaning as a NumPy function f(x, y, w, ...) via sympy.lambdify."""
    expr = rule.to_sympy()[pathway]
    names = rule.space.grammar(pathway).names
    return sympy.lambdify([symbol(n) for n in names], expr, modules="numpy"), names


def simulate_lateral(rule: Rule, x, w0, m0, eta, eta_lat, hierarchical=False, bound=1e3):
    """Plain NumPy network with lateral weights, one rule ("ff: ...; lat: ..."): y = (I - M)^-1 W x
    by np.linalg.solve; W += eta * f(x_j, y_i, W_ij); M_ik += eta_lat * g(y_k, y_i, M_ik) on
    existing lateral synapses (i != k; hierarchical: i > k).

    Returns (W final (trials, n_out, n_in), M final (trials, n_out, n_out), y (trials, steps, n_out), blown).
    """
    f, f_names = rule_function(rule, 0)
    g, g_names = rule_function(rule, 1)
    trials, steps, n_in = x.shape
    n_out = w0.shape[1]
    mask = np.tril(np.ones((n_out, n_out)), -1) if hierarchical else 1.0 - np.eye(n_out)
    W_all, M_all = np.empty_like(w0), np.empty((trials, n_out, n_out))
    ys = np.zeros((trials, steps, n_out))
    blown = False
    for b in range(trials):
        W, M = w0[b].copy(), m0[b] * mask
        for t in range(steps):
            y = np.linalg.solve(np.eye(n_out) - M, W @ x[b, t])
            ys[b, t] = y
            env = {"x": np.broadcast_to(x[b, t][None, :], W.shape), "y": np.broadcast_to(y[:, None], W.shape), "w": W}
            lat = {"x": np.broadcast_to(y[None, :], M.shape), "y": np.broadcast_to(y[:, None], M.shape), "w": M}
            dW = np.broadcast_to(f(*[env[n] for n in f_names]), W.shape)
            dM = np.broadcast_to(g(*[lat[n] for n in g_names]), M.shape)
            W, M = W + eta * dW, M + eta_lat * dM * mask
            if not (np.all(np.abs(W) <= bound) and np.all(np.abs(M) <= bound)):
                blown = True
                break
        W_all[b], M_all[b] = W, M
    return W_all, M_all, ys, blown


def simulate_rate(rule: Rule, x, w0, eta, activation="linear", bound=1e3, target=None):
    """Plain NumPy rate network: y = act(W x); W += eta * f(x_j, y_i, W_ij). One rule.

    Returns (w_final (trials, n_out, n_in), y (trials, steps, n_out), sse, count, blown).
    """
    f, names = rule_function(rule)
    act = {"linear": lambda s: s, "tanh": np.tanh, "sigmoid": lambda s: 1 / (1 + np.exp(-s))}[activation]
    trials, steps, n_in = x.shape
    n_out = w0.shape[1]
    w_all = np.empty_like(w0)
    ys = np.zeros((trials, steps, n_out))
    sse, count, blown = 0.0, 0, False
    for b in range(trials):
        w = w0[b].copy()
        for t in range(steps):
            y = act(w @ x[b, t])
            ys[b, t] = y
            if target is not None:
                rec = ~np.isnan(target[b, t])
                sse += np.sum((y[rec] - target[b, t][rec]) ** 2)
                count += rec.sum()
            env = {"x": np.broadcast_to(x[b, t][None, :], w.shape),
                   "y": np.broadcast_to(y[:, None], w.shape), "w": w}
            dw = np.broadcast_to(f(*[env[n] for n in names]), w.shape)
            w = w + eta * dw
            if not np.all(np.abs(w) <= bound):
                blown = True
                break
        w_all[b] = w
    return w_all, ys, sse, count, blown


def mlp_numpy(family, params, inputs):
    """A family's MLP by plain NumPy: inputs (n_vars, n) in ``family.variables`` order -> (n,)."""
    h = np.asarray(inputs, float)
    act = {"tanh": np.tanh, "sigmoid": lambda z: 1 / (1 + np.exp(-z)), "linear": lambda z: z}[family.activation]
    k = 0
    for layer, (n_out, n_in) in enumerate(family.layers):
        W = params[k:k + n_out * n_in].reshape(n_out, n_in)
        b = params[k + n_out * n_in:k + n_out * n_in + n_out]
        k += n_out * n_in + n_out
        h = W @ h + b[:, None]
        if layer < len(family.layers) - 1:
            h = act(h)
    return h[0]


def choice_nll_numpy(rule: Rule, odour, decision, reward, patterns, w0, readout, eta, window, noise_var,
                     score_trial=lambda k: True):
    """The teacher-forced choice model for one animal, encounter by encounter in plain NumPy.

    Returns (summed -log P(decision) over scored trials, weights before each trial).
    """
    f, names = rule_function(rule)
    W = np.array(w0, float)
    history = [0.0] * window
    nll, trial, weights = 0.0, 0, [W.copy()]
    rbar = 0.0
    for o, d, rew in zip(odour, decision, reward):
        x = patterns[o]
        h = np.tanh(W @ x)
        logit = readout @ h
        g = (readout * (1 - h**2)) @ W  # d logit / d x
        logit = logit / np.sqrt(1 + np.pi * noise_var * np.sum(g**2) / 8)
        p = 1 / (1 + np.exp(-logit))
        if score_trial(trial):
            nll -= np.log(p if d == 1 else 1 - p)
        if d == 1:
            values = {"x": x[None, :], "y": h[:, None], "w": W, "r": rew, "rbar": rbar}
            W = W + eta * np.broadcast_to(f(*[values[n] for n in names]), W.shape)
            history.append(rew)
            trial += 1
            rbar = float(np.mean(history[-window:]))
            weights.append(W.copy())
    return nll, np.array(weights)


def choice_nll_filtered_numpy(rule: Rule, odour, decision, reward, patterns, w0, readout, eta, window, noise_var,
                              prior_var, condition_trial=lambda k: True, score_trial=lambda k: True):
    """The choice model with the weight filter, for one animal, in dense NumPy matrices.

    State z = (vec W, eps): eps is the encounter's input noise ~ N(0, noise_var I). Each
    encounter: logit linearised in z, P(decision) = sigmoid(mean / sqrt(1 + pi var / 8)); on
    conditioned trials the state takes the probit posterior's mean and covariance (moment
    matching); an accepted encounter's update W + eta f(x + eps, y, W) is linearised in z with
    the rule's exact derivatives (sympy). Returns (summed -log P(decision) over scored trials,
    mean weights before each trial).
    """
    from scipy.stats import norm
    expr = rule.to_sympy()[0]
    names = rule.grammar.names
    syms = [symbol(n) for n in names]

    def lam(e):
        return sympy.lambdify(syms, e, modules="numpy")
    f = lam(expr)
    df = {v: lam(sympy.diff(expr, symbol(v))) for v in ("x", "y", "w")}
    n_out, n_in = np.shape(w0)
    m, nz = n_out * n_in, n_out * n_in + n_in
    lam2 = np.pi / 8
    mean = np.concatenate([np.ravel(w0), np.zeros(n_in)])
    P = prior_var * np.eye(m)
    history = [0.0] * window
    nll, trial, rbar, weights = 0.0, 0, 0.0, [np.reshape(w0, (n_out, n_in)).copy()]
    for o, d, rew in zip(odour, decision, reward):
        S = np.zeros((nz, nz))
        S[:m, :m] = P
        S[m:, m:] = noise_var * np.eye(n_in)
        mean[m:] = 0.0
        W = mean[:m].reshape(n_out, n_in)
        x = patterns[o]
        h = np.tanh(W @ x)
        a0 = readout @ h
        g = readout * (1 - h**2)
        J = np.concatenate([np.outer(g, x).ravel(), g @ W])
        v = J @ S @ J
        p = 1 / (1 + np.exp(-a0 / np.sqrt(1 + lam2 * v)))
        if score_trial(trial):
            nll -= np.log(p if d == 1 else 1 - p)
        if condition_trial(trial):
            s = 1.0 if d == 1 else -1.0
            u = s * np.sqrt(lam2) * a0 / np.sqrt(1 + lam2 * v)
            ratio = norm.pdf(u) / norm.cdf(u)
            post_mean = a0 + s * v * np.sqrt(lam2) * ratio / np.sqrt(1 + lam2 * v)
            post_var = v - v**2 * lam2 * ratio * (u + ratio) / (1 + lam2 * v)
            cov_za = S @ J
            mean = mean + cov_za * (post_mean - a0) / v
            S = S + np.outer(cov_za, cov_za) * (post_var - v) / v**2
        P = S[:m, :m]
        if d == 1:
            W = mean[:m].reshape(n_out, n_in)
            xe = x + mean[m:]
            y = np.tanh(W @ xe)
            env = {"x": np.broadcast_to(xe[None, :], W.shape), "y": np.broadcast_to(y[:, None], W.shape),
                   "w": W, "r": rew, "rbar": rbar}
            args = [env[n] for n in names]
            fx, fy, fw = (np.broadcast_to(df[v](*args), W.shape) for v in ("x", "y", "w"))
            A = np.zeros((m, nz))  # d W' / d (vec W, eps)
            for i in range(n_out):
                for j in range(n_in):
                    q = i * n_in + j
                    dy = fy[i, j] * (1 - y[i] ** 2)  # dy_i/dW_ik = (1 - y_i^2) x_k, dy_i/deps_k = (1 - y_i^2) W_ik
                    A[q, i * n_in:(i + 1) * n_in] = eta * dy * xe
                    A[q, m:] = eta * dy * W[i]
                    A[q, q] += 1 + eta * fw[i, j]
                    A[q, m + j] += eta * fx[i, j]
            W = W + eta * np.broadcast_to(f(*args), W.shape)
            P = A @ S @ A.T
            mean = np.concatenate([W.ravel(), np.zeros(n_in)])
            history.append(rew)
            trial += 1
            rbar = float(np.mean(history[-window:]))
            weights.append(W.copy())
    return nll, np.array(weights)


def simulate_lif(rule: Rule, spikes_by_step, w0, exc, path, neuron: dict, eta, w_max, tau_pre, tau_post):
    """One LIF neuron driven by afferent spikes, written out step by step (kernel.py's order):
    exponential-Euler V with conductances frozen over the step, exact conductance decay;
    threshold V > V_th outside the refractory period; then each input spike: trace +1, weight
    update by the pathway's pre expression (clipped to [0, w_max]), conductance += w * g_unit;
    then, if the neuron spiked: post trace +1, every plastic afferent's weight updated by the
    post expression; reset. Traces are kept decayed every step (not lazily, as the kernel does).

    rule: parts (pre, post) per plastic pathway; spikes_by_step: list of afferent-index arrays;
    w0 (n_aff,); path (n_aff,) plastic pathway or -1. Returns (final weights, output spike steps).
    """
    fns = [rule_function(rule, k) for k in range(len(rule.exprs))]
    n = neuron
    dt = n["dt_ms"]
    w = np.array(w0, float)
    n_path = len(eta)
    x_pre = np.zeros(len(w))
    x_post = np.zeros(n_path)
    v, g_e, g_i = n["e_leak_mv"], 0.0, 0.0
    last = -10**9
    out = []

    def call(k, env):
        f, names = fns[k]
        return float(f(*[env[name] for name in names]))
    for s, affs in enumerate(spikes_by_step):
        x_pre *= np.exp(-dt / np.asarray(tau_pre)[np.maximum(path, 0)])
        x_post *= np.exp(-dt / np.asarray(tau_post))
        refractory = s - last < n["refractory_steps"]
        if not refractory:
            g_tot = n["g_leak_ns"] + g_e + g_i
            v_inf = (n["g_leak_ns"] * n["e_leak_mv"] + g_e * n["e_exc_mv"] + g_i * n["e_inh_mv"]) / g_tot
            v = v_inf + (v - v_inf) * np.exp(-dt * g_tot / n["capacitance_pf"])
        g_e *= np.exp(-dt / n["tau_exc_ms"])
        g_i *= np.exp(-dt / n["tau_inh_ms"])
        spiked = v > n["v_threshold_mv"] and not refractory
        v_scaled = (v - n["e_leak_mv"]) / (n["v_threshold_mv"] - n["e_leak_mv"])
        for j in affs:
            p = path[j]
            if p >= 0:
                x_pre[j] += 1.0
                dw = call(2 * p, {"x_pre": x_pre[j], "x_post": x_post[p], "w": w[j], "v": v_scaled})
                w[j] = min(max(w[j] + eta[p] * dw, 0.0), w_max)
            if exc[j]:
                g_e += w[j] * n["g_exc_ns"]
            else:
                g_i += w[j] * n["g_inh_ns"]
        if spiked:
            x_post += 1.0
            for j in np.flatnonzero(path >= 0):
                p = path[j]
                dw = call(2 * p + 1, {"x_pre": x_pre[j], "x_post": x_post[p], "w": w[j], "v": v_scaled})
                w[j] = min(max(w[j] + eta[p] * dw, 0.0), w_max)
            v = n["v_reset_mv"]
            last = s
            out.append(s)
    return w, np.array(out, np.int64)


_MASK64 = (1 << 64) - 1


def _splitmix(state: int) -> tuple[int, int]:
    """splitmix64 on Python integers (the kernel's generator, written independently)."""
    state = (state + 0x9E3779B97F4A7C15) & _MASK64
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return state, z ^ (z >> 31)


def _exp_interval(state: int, lam: float) -> tuple[int, float]:
    state, z = _splitmix(state)
    u = ((z >> 11) + 1) * (1.0 / 9007199254740992.0)
    return state, -np.log(u) / lam


def simulate_lif_network(rule: Rule, part_of, n_e, n_total, src, tgt, w0, neuron: dict, g_unit, g_ext, lam, seed, eta,
                         w_max, tau_pre, tau_post, n_steps):
    """The recurrent E/I network written out step by step (kernel order of sims/lif_network):
    neuron update and conductance decay; threshold; external Poisson events (splitmix64 stream per
    neuron, exponential intervals in steps) into g_E; each spiking neuron's outgoing synapses in
    synapse order: its pre trace +1, the pre rule, conductance += w * g_unit; each spiking neuron's
    incoming synapses, source type E then I: post trace +1, the post rule; reset. Traces decay
    every step (the kernel decays them lazily). No early stop.

    rule: parts (pre, post) per plastic pathway; n_e of n_total neurons are excitatory; part_of (4,): index of a pathway's pre part or -1;
    src, tgt (n_syn,): the synapses in the kernel's order; lam: external events per step.
    Returns (final weights (n_syn,), spikes [(step, neuron)]).
    """
    fns = [rule_function(rule, k) for k in range(len(rule.exprs))]
    n = neuron
    dt = n["dt_ms"]
    N = n_total
    typ = (np.arange(N) >= n_e).astype(int)
    path = 2 * typ[src] + typ[tgt]
    w = np.array(w0, float)
    x_pre = np.zeros((N, 2))  # per target type
    x_post = np.zeros((N, 2))  # per source type
    v = np.full(N, n["e_leak_mv"])
    g_e, g_i = np.zeros(N), np.zeros(N)
    last = np.full(N, -10**9)
    states, nxt = [], []
    for i in range(N):
        st = (int(seed) * 0x100000001B3 + i * 0x9E3779B97F4A7C15) & _MASK64
        st, _ = _splitmix(st)
        st, first = _exp_interval(st, lam)
        states.append(st)
        nxt.append(first)
    spikes = []

    def call(k, env):
        f, names = fns[k]
        return float(f(*[env[name] for name in names]))
    for s in range(n_steps):
        for i in range(N):
            for q in range(2):
                x_pre[i, q] *= np.exp(-dt / tau_pre[2 * typ[i] + q])
                x_post[i, q] *= np.exp(-dt / tau_post[2 * q + typ[i]])
        refractory = s - last < n["refractory_steps"]
        for i in range(N):
            if not refractory[i]:
                g_tot = n["g_leak_ns"] + g_e[i] + g_i[i]
                v_inf = (n["g_leak_ns"] * n["e_leak_mv"] + g_e[i] * n["e_exc_mv"] + g_i[i] * n["e_inh_mv"]) / g_tot
                v[i] = v_inf + (v[i] - v_inf) * np.exp(-dt * g_tot / n["capacitance_pf"])
        g_e *= np.exp(-dt / n["tau_exc_ms"])
        g_i *= np.exp(-dt / n["tau_inh_ms"])
        spiked = (v > n["v_threshold_mv"]) & ~refractory
        v_scaled = (v - n["e_leak_mv"]) / (n["v_threshold_mv"] - n["e_leak_mv"])
        for i in range(N):
            while nxt[i] < s + 1.0:
                g_e[i] += g_ext
                states[i], gap = _exp_interval(states[i], lam)
                nxt[i] += gap
        for j in np.flatnonzero(spiked):
            x_pre[j] += 1.0
            for k in np.flatnonzero(src == j):
                p, i = path[k], tgt[k]
                if part_of[p] >= 0:
                    dw = call(part_of[p], {"x_pre": x_pre[j, typ[i]], "x_post": x_post[i, typ[j]], "w": w[k],
                                           "v": v_scaled[i]})
                    w[k] = min(max(w[k] + eta * dw, 0.0), w_max)
                if typ[j] == 0:
                    g_e[i] += w[k] * g_unit[p]
                else:
                    g_i[i] += w[k] * g_unit[p]
        for i in np.flatnonzero(spiked):
            for r in range(2):
                x_post[i, r] += 1.0
                incoming = [k for k in np.flatnonzero(tgt == i) if typ[src[k]] == r]
                for k in sorted(incoming, key=lambda k: src[k]):
                    p, j = path[k], src[k]
                    if part_of[p] >= 0:
                        dw = call(part_of[p] + 1, {"x_pre": x_pre[j, typ[i]], "x_post": x_post[i, r], "w": w[k],
                                                   "v": v_scaled[i]})
                        w[k] = min(max(w[k] + eta * dw, 0.0), w_max)
            v[i] = n["v_reset_mv"]
            last[i] = s
            spikes.append((s, i))
    return w, spikes


def noise_prune_numpy(rule: Rule, A, C, keep, uniforms):
    """Plain NumPy noise-driven pruning: the score of every pair i < j with A_ij != 0 is the mean of
    the rule's values (sympy) on synapse i <- j (post i, pre j) and j <- i, keep probabilities min(1, k max(score, 0)) with k found by bisection so that
    they sum to keep * pairs, then per draw u: kept pairs A_ij / p_ij on both sides, diagonal
    A_ii + sum_j |A_ij| - sum_j |B_ij|. Returns (p (m,), eigenvalues (draws, n)), or None when a
    score is NaN/inf or none is positive."""
    f, names = rule_function(rule)
    rows, cols = np.nonzero(np.triu(A, 1))
    def value(post, pre):
        env = {"w": A[post, pre], "c": C[post, pre], "c_pre": C[pre, pre], "c_post": C[post, post]}
        return np.broadcast_to(np.asarray(f(*[env[n] for n in names]), float), rows.shape)
    s = (value(rows, cols) + value(cols, rows)) / 2
    if not np.all(np.isfinite(s)) or not np.any(s > 0):
        return None
    s = np.maximum(s, 0.0) / s.max()
    target = keep * len(s)
    if target >= np.count_nonzero(s):
        p = (s > 0).astype(float)
    else:
        lo, hi = 0.0, 1.0
        while np.minimum(1.0, hi * s).sum() < target:
            hi *= 2.0
        for _ in range(200):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if np.minimum(1.0, mid * s).sum() < target else (lo, mid)
        p = np.minimum(1.0, hi * s)
    off = np.abs(A - np.diag(np.diag(A))).sum(axis=1)
    eigs = []
    for u in uniforms:
        kept = u < p
        B = np.zeros_like(A)
        B[rows[kept], cols[kept]] = A[rows[kept], cols[kept]] / p[kept]
        B = B + B.T
        B[np.diag_indices_from(B)] = np.diag(A) + off - np.abs(B).sum(axis=1)
        eigs.append(np.linalg.eigvalsh(B))
    return p, np.array(eigs)


def ou_covariance_numpy(A, sigma, dt, burn_steps, steps, seed, chunk):
    """Euler-Maruyama run of dx/dt = A x + sigma xi from 0, noise drawn as the kernel draws it
    (``chunk`` steps at a time from default_rng(seed)); mean of x x^T over the sampled steps."""
    rng = np.random.default_rng(seed)
    n = A.shape[0]
    x, cov = np.zeros(n), np.zeros((n, n))
    for total, sampled in ((burn_steps, False), (steps, True)):
        done = 0
        while done < total:
            k = min(chunk, total - done)
            for z in rng.standard_normal((k, n)):
                x = x + dt * (A @ x) + sigma * np.sqrt(dt) * z
                if sampled:
                    cov += np.outer(x, x)
            done += k
    return cov / steps


def choice_activity_numpy(rule: Rule, inputs, decision, reward, activity, w0, readout, eta, window,
                          score_trial=lambda k: True):
    """The choice model's output against recorded activity, for one animal, in plain NumPy: each
    encounter's P(accept) = sigmoid(readout . tanh(W x)) from its recorded input x, compared with the
    recorded activity where it is not NaN on scored trials; plasticity at acceptances.

    Returns (summed squared error, compared entries, P(accept) per encounter, weights before each trial).
    """
    f, names = rule_function(rule)
    W = np.array(w0, float)
    history = [0.0] * window
    sse, count, trial, rbar = 0.0, 0, 0, 0.0
    probs, weights = [], [W.copy()]
    for x, d, rew, target in zip(inputs, decision, reward, activity):
        h = np.tanh(W @ x)
        p = 1 / (1 + np.exp(-(readout @ h)))
        probs.append(p)
        if score_trial(trial) and not np.isnan(target):
            sse += (p - target) ** 2
            count += 1
        if d == 1:
            values = {"x": x[None, :], "y": h[:, None], "w": W, "r": rew, "rbar": rbar}
            W = W + eta * np.broadcast_to(f(*[values[n] for n in names]), W.shape)
            history.append(rew)
            trial += 1
            rbar = float(np.mean(history[-window:]))
            weights.append(W.copy())
    return sse, count, np.array(probs), np.array(weights)


def _splitmix_numpy(z):
    """SplitMix64 on uint64 scalars, as numbers (Python ints masked to 64 bits)."""
    mask = (1 << 64) - 1
    z = (int(z) + 0x9E3779B97F4A7C15) & mask
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
    return z ^ (z >> 31)


def _uniform_numpy(key, counter):
    return ((_splitmix_numpy(key ^ _splitmix_numpy(counter)) >> 11) + 0.5) * 2.0 ** -53


def _normal_numpy(key, counter):
    u1, u2 = _uniform_numpy(key, 2 * counter), _uniform_numpy(key, 2 * counter + 1)
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)


def choice_nll_particles_numpy(rule: Rule, animal, odour, decision, reward, patterns, w0, readout, eta, window,
                               noise_var, prior_var, particles, seed, condition_trial=lambda k: True,
                               score_trial=lambda k: True):
    """The particle-filter likelihood of one animal's decisions, particle by particle in plain Python
    with the same counter-based random numbers as rulesearch's kernel (so the two agree to rounding):
    initial weights w0 + sqrt(prior_var) N(0, 1), every encounter's input noise, reweighting by the
    decisions of conditioned trials, systematic resampling when the effective sample size drops below
    half, the rule (sympy.lambdify) at each acceptance with every particle's own input and activity.
    Returns the summed -log P(decision) over scored trials."""
    f, names = rule_function(rule)
    n_out, n_in = w0.shape
    key = _splitmix_numpy(seed * 1000003 + animal)
    counter = 0
    Ws = []
    for _ in range(particles):
        W = np.empty((n_out, n_in))
        for i in range(n_out):
            for j in range(n_in):
                W[i, j] = w0[i, j] + np.sqrt(prior_var) * _normal_numpy(key, counter)
                counter += 1
        Ws.append(W)
    weights = np.full(particles, 1.0 / particles)
    history = [0.0] * window
    nll, trial = 0.0, 0
    for o, d, rew in zip(odour, decision, reward):
        xs = []
        for _ in range(particles):
            x = np.empty(n_in)
            for j in range(n_in):
                x[j] = patterns[o][j] + np.sqrt(noise_var) * _normal_numpy(key, counter)
                counter += 1
            xs.append(x)
        p = np.array([1 / (1 + np.exp(-readout @ np.tanh(W @ x))) for W, x in zip(Ws, xs)])
        joint = weights * np.maximum(p if d == 1 else 1 - p, 1e-300)
        if score_trial(trial):
            nll -= np.log(joint.sum())
        if condition_trial(trial):
            weights = joint / joint.sum()
            if np.sum(weights ** 2) * particles > 2.0:
                u = _uniform_numpy(key, 2 * counter) / particles
                counter += 1
                cum = np.cumsum(weights)
                idx = [min(int(np.searchsorted(cum, u + q / particles)), particles - 1) for q in range(particles)]
                Ws, xs = [Ws[s].copy() for s in idx], [xs[s].copy() for s in idx]
                weights = np.full(particles, 1.0 / particles)
        if d == 1:
            rbar = float(np.mean(history[-window:]))
            for q in range(particles):
                h = np.tanh(Ws[q] @ xs[q])
                values = {"x": xs[q][None, :], "y": h[:, None], "w": Ws[q], "r": rew, "rbar": rbar}
                Ws[q] = Ws[q] + eta * np.broadcast_to(f(*[values[n] for n in names]), Ws[q].shape)
            history.append(rew)
            trial += 1
    return nll
