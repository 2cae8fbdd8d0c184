"""Exact derivatives of the fly choice model's likelihood by a Taylor rule's coefficients.

The teacher-forced model without the weight filter (kernel.py, ``filtered=False``): in trial k of an
animal the weights W are fixed; an encounter of odour o (input pattern x_o) is accepted with
P = sigmoid(z_o), z_o = a_o / sqrt(1 + kappa s2_o) (the probit average over unrecorded input noise
of variance v, kappa = pi v / 8), a_o = sum_i c_i h_i, h = tanh(W x_o), s2_o = sum_j g_j^2,
g_j = sum_i c_i (1 - h_i^2) W_ij, c the fixed readout. After the trial's acceptance (odour o*, reward
r, expected reward rbar) W_ij += eta sum_p theta_p phi_p(x_j, y_i, W_ij, t), y = tanh(W x_o*), t the
trial's values of the family's trial inputs (such as r - rbar).

Forward sensitivities S = dW/dtheta (n_out, n_in, P) follow the update:

    S_ij <- S_ij + eta (phi_ij + f_y dy_i/dtheta + f_w S_ij),  dy_i/dtheta = (1 - y_i^2) sum_j S_ij x_j

and dz_o/dtheta = sum_kl (dz_o/dW_kl) S_kl. The negative log-likelihood of the scored decisions, its
gradient and the Fisher information sum over decisions: (p - d) dz and p (1 - p) dz dz^T.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

MAX_POWER = 6


@njit(cache=True, nogil=True)
def _odour(W, x, readout, kappa, S, h, dz):
    """z of one odour under W; its derivative by theta into dz (P,). h: scratch (n_out,)."""
    n_out, n_in = W.shape
    P = S.shape[2]
    a = 0.0
    for i in range(n_out):
        s = 0.0
        for j in range(n_in):
            s += W[i, j] * x[j]
        h[i] = np.tanh(s)
        a += readout[i] * h[i]
    g = np.zeros(n_in)
    for j in range(n_in):
        for i in range(n_out):
            g[j] += readout[i] * (1.0 - h[i] * h[i]) * W[i, j]
    s2 = 0.0
    for j in range(n_in):
        s2 += g[j] * g[j]
    D = np.sqrt(1.0 + kappa * s2)
    z = a / D
    for p in range(P):
        dz[p] = 0.0
    for k in range(n_out):
        gk = readout[k] * (1.0 - h[k] * h[k])
        gw = 0.0
        for j in range(n_in):
            gw += g[j] * W[k, j]
        for l in range(n_in):
            da = gk * x[l]
            ds2 = 2.0 * gk * (g[l] - 2.0 * h[k] * x[l] * gw)
            dzdw = da / D - a * kappa * ds2 / (2.0 * D * D * D)
            if dzdw != 0.0:
                for p in range(P):
                    dz[p] += dzdw * S[k, l, p]
    return z


@njit(cache=True, nogil=True)
def _animal(theta, exps, tvals, odour, patterns, decision, n_enc, trial_end, n_trials, score, w0, readout, kappa,
            eta, bound, grad, fisher):
    """One animal: returns (nll, blown); adds its gradient (P,) and Fisher information (P, P)."""
    n_out, n_in = w0.shape
    P = theta.shape[0]
    K = tvals.shape[1]
    T = trial_end.shape[0]
    W = w0.copy()
    S = np.zeros((n_out, n_in, P))
    h = np.empty(n_out)
    dz = np.empty(P)
    dy = np.empty((n_out, P))
    phi = np.empty(P)
    px = np.empty(MAX_POWER + 1)
    py = np.empty(MAX_POWER + 1)
    pw = np.empty(MAX_POWER + 1)
    pt = np.ones((K, MAX_POWER + 1))
    n_odours = patterns.shape[0]
    shown = np.zeros(n_odours)
    taken = np.zeros(n_odours)
    nll = 0.0
    e0 = 0
    for k in range(T + 1):
        if k > n_trials:
            break
        last = trial_end[k] if k < n_trials else n_enc - 1
        # the trial's odours only (with recorded inputs every encounter is its own pattern)
        for e in range(e0, last + 1):
            shown[odour[e]] = 0.0
            taken[odour[e]] = 0.0
        for e in range(e0, last + 1):
            shown[odour[e]] += 1.0
            taken[odour[e]] += decision[e]
        first = e0
        e0 = last + 1
        if score[k] > 0:
            for e in range(first, last + 1):
                o = odour[e]
                if shown[o] == 0.0:  # this odour's encounters are already counted
                    continue
                z = _odour(W, patterns[o], readout, kappa, S, h, dz)
                # -log P: softplus(-z) per acceptance, softplus(z) per rejection
                sp_pos = max(z, 0.0) + np.log1p(np.exp(-abs(z)))
                sp_neg = sp_pos - z
                nll += taken[o] * sp_neg + (shown[o] - taken[o]) * sp_pos
                p_acc = 1.0 / (1.0 + np.exp(-z))
                coef = shown[o] * p_acc - taken[o]
                wgt = shown[o] * p_acc * (1.0 - p_acc)
                for p in range(P):
                    grad[p] += coef * dz[p]
                    for q in range(P):
                        fisher[p, q] += wgt * dz[p] * dz[q]
                shown[o] = 0.0
        if k == n_trials or k == T:
            break
        if _update(theta, exps, tvals[k], odour[last], patterns, W, S, h, dy, phi, px, py, pw, pt, eta, bound):
            return nll, True
    return nll, False


@njit(cache=True, nogil=True)
def _update(theta, exps, tk, o, patterns, W, S, h, dy, phi, px, py, pw, pt, eta, bound):
    """The update after an acceptance of odour o, at its input pattern, and the sensitivities S
    through it; returns True if a weight left the bound."""
    n_out, n_in = W.shape
    P = theta.shape[0]
    K = tk.shape[0]
    x = patterns[o]
    for i in range(n_out):
        s = 0.0
        for j in range(n_in):
            s += W[i, j] * x[j]
        h[i] = np.tanh(s)
        for p in range(P):
            acc = 0.0
            for j in range(n_in):
                acc += S[i, j, p] * x[j]
            dy[i, p] = (1.0 - h[i] * h[i]) * acc
    for c in range(K):
        for d in range(1, MAX_POWER + 1):
            pt[c, d] = pt[c, d - 1] * tk[c]
    largest = 0.0
    for i in range(n_out):
        py[0] = 1.0
        for d in range(1, MAX_POWER + 1):
            py[d] = py[d - 1] * h[i]
        for j in range(n_in):
            px[0] = 1.0
            pw[0] = 1.0
            for d in range(1, MAX_POWER + 1):
                px[d] = px[d - 1] * x[j]
                pw[d] = pw[d - 1] * W[i, j]
            f = 0.0
            fy = 0.0
            fw = 0.0
            for p in range(P):
                a, b, c = exps[p, 0], exps[p, 1], exps[p, 2]
                t = 1.0
                for q in range(K):
                    t *= pt[q, exps[p, 3 + q]]
                m = px[a] * py[b] * pw[c] * t
                phi[p] = m
                f += theta[p] * m
                if b > 0:
                    fy += theta[p] * b * px[a] * py[b - 1] * pw[c] * t
                if c > 0:
                    fw += theta[p] * c * px[a] * py[b] * pw[c - 1] * t
            for p in range(P):
                S[i, j, p] += eta * (phi[p] + fy * dy[i, p] + fw * S[i, j, p])
            W[i, j] += eta * f
            largest = max(largest, abs(W[i, j]))
    return not largest <= bound


@njit(cache=True, parallel=True)
def _all_animals(theta, exps, tvals, odour, patterns, decision, n_enc, trial_end, n_trials, score, w0, readout,
                 kappa, eta, bound):
    A = odour.shape[0]
    P = theta.shape[0]
    nll = np.zeros(A)
    blown = np.zeros(A, np.bool_)
    grad = np.zeros((A, P))
    fisher = np.zeros((A, P, P))
    for b in prange(A):
        nll[b], blown[b] = _animal(theta, exps, tvals[b], odour[b], patterns, decision[b], n_enc[b], trial_end[b],
                                   n_trials[b], score[b], w0[b], readout, kappa, eta, bound, grad[b], fisher[b])
    return nll, blown, grad, fisher


def taylor_likelihood(theta: np.ndarray, exponents: np.ndarray, tvals: np.ndarray, arrays, w0: np.ndarray,
                      readout: np.ndarray, noise_var: float, eta: float, weight_bound: float = 1e3):
    """Negative log-likelihood of the scored decisions, its gradient and Fisher information.

    theta (P,); exponents (P, 3 + K) powers of x, y, w and of K trial inputs; tvals (A, T, K) the
    trial inputs' values per animal and trial; arrays: ``kernel.ChoiceArrays``; w0 (A, n_out,
    n_in); readout (n_out,); noise_var: variance of the unrecorded input noise. Returns
    (nll, grad (P,), fisher (P, P), blown).
    """
    a = arrays
    theta = np.ascontiguousarray(theta, np.float64)
    exps = np.ascontiguousarray(exponents, np.int64)
    if exps.shape[0] != theta.shape[0] or exps.min(initial=0) < 0 or exps.max(initial=0) > MAX_POWER:
        raise ValueError(f"exponents {exps.shape}: expected ({theta.shape[0]}, 3 + K) in 0..{MAX_POWER}")
    nll, blown, grad, fisher = _all_animals(
        theta, exps, np.ascontiguousarray(tvals, np.float64), a.odour, a.patterns, a.decision.astype(np.float64),
        a.n_enc, a.trial_end, a.n_trials, a.score.astype(np.float64), np.ascontiguousarray(w0, np.float64),
        np.ascontiguousarray(readout, np.float64), np.pi * float(noise_var) / 8.0, float(eta), float(weight_bound))
    return float(nll.sum()), grad.sum(axis=0), fisher.sum(axis=0), bool(blown.any())


@njit(cache=True, nogil=True)
def _animal_activity(theta, exps, tvals, odour, patterns, n_enc, trial_end, n_trials, score, target, w0, readout,
                     kappa, eta, bound, row0, res, jac):
    """One animal, activity objective: the residual P(accept) - recorded output of every scored
    encounter with a recording, into res[row0:] and its derivatives by theta into jac[row0:];
    returns blown."""
    n_out, n_in = w0.shape
    P = theta.shape[0]
    K = tvals.shape[1]
    T = trial_end.shape[0]
    W = w0.copy()
    S = np.zeros((n_out, n_in, P))
    h, dz, dy, phi = np.empty(n_out), np.empty(P), np.empty((n_out, P)), np.empty(P)
    px, py, pw = np.empty(MAX_POWER + 1), np.empty(MAX_POWER + 1), np.empty(MAX_POWER + 1)
    pt = np.ones((K, MAX_POWER + 1))
    row = row0
    e0 = 0
    for k in range(T + 1):
        if k > n_trials:
            break
        last = trial_end[k] if k < n_trials else n_enc - 1
        for e in range(e0, last + 1):
            if score[k] > 0 and not np.isnan(target[e]):
                z = _odour(W, patterns[odour[e]], readout, kappa, S, h, dz)
                p_acc = 1.0 / (1.0 + np.exp(-z))
                res[row] = p_acc - target[e]
                for p in range(P):
                    jac[row, p] = p_acc * (1.0 - p_acc) * dz[p]
                row += 1
        e0 = last + 1
        if k == n_trials or k == T:
            break
        if _update(theta, exps, tvals[k], odour[last], patterns, W, S, h, dy, phi, px, py, pw, pt, eta, bound):
            return True
    return False


@njit(cache=True, parallel=True)
def _all_animals_activity(theta, exps, tvals, odour, patterns, n_enc, trial_end, n_trials, score, target, w0, readout,
                          kappa, eta, bound, rows):
    A = odour.shape[0]
    res = np.zeros(rows[A])
    jac = np.zeros((rows[A], theta.shape[0]))
    blown = np.zeros(A, np.bool_)
    for b in prange(A):
        blown[b] = _animal_activity(theta, exps, tvals[b], odour[b], patterns, n_enc[b], trial_end[b], n_trials[b],
                                    score[b], target[b], w0[b], readout, kappa, eta, bound, rows[b], res, jac)
    return res, jac, blown


def taylor_activity_residuals(theta: np.ndarray, exponents: np.ndarray, tvals: np.ndarray, arrays, w0: np.ndarray,
                              readout: np.ndarray, noise_var: float, eta: float, weight_bound: float = 1e3):
    """Activity objective: residuals P(accept) - recorded output (n,) over the scored encounters with
    a recording (animal by animal, in time order) and their Jacobian (n, P) by theta; and blown.
    Arguments as ``taylor_likelihood``; ``arrays.activity`` (A, E) holds the recordings (NaN: none)."""
    from .kernel import scored_activity
    a = arrays
    theta = np.ascontiguousarray(theta, np.float64)
    exps = np.ascontiguousarray(exponents, np.int64)
    if exps.shape[0] != theta.shape[0] or exps.min(initial=0) < 0 or exps.max(initial=0) > MAX_POWER:
        raise ValueError(f"exponents {exps.shape}: expected ({theta.shape[0]}, 3 + K) in 0..{MAX_POWER}")
    rows = np.concatenate([[0], np.cumsum(scored_activity(a))]).astype(np.int64)
    res, jac, blown = _all_animals_activity(
        theta, exps, np.ascontiguousarray(tvals, np.float64), a.odour, a.patterns, a.n_enc, a.trial_end, a.n_trials,
        a.score.astype(np.float64), np.ascontiguousarray(a.activity, np.float64), np.ascontiguousarray(w0, np.float64),
        np.ascontiguousarray(readout, np.float64), np.pi * float(noise_var) / 8.0, float(eta), float(weight_bound),
        rows)
    return res, jac, bool(blown.any())


TRIAL_VARIABLES = ("r", "rbar")


def derivatives_model(task, family):
    """``(model, describe)`` for ``gradfit`` on a choice task (``fit_choices``), for a Taylor family
    over x, y, w and expressions of the trial's r and rbar (such as r - rbar); None otherwise. With
    the weight filter (the task's default) the filter's likelihood is differentiated
    (``filter_sensitivity``), else the deterministic model's (here); the input noise and prior
    variances are those ``ChoiceSimulator.simulate`` uses (0 with recorded inputs / initial weights)."""
    from ...families import TaylorFamily, variable_tokens
    from ...gradfit import Derivatives
    from ...rules import compile_expr
    from ...tasks import WORST_LOSS
    from ...vm import evaluate, pack
    s, c = task.state, task.config
    if (not isinstance(family, TaylorFamily) or task.objective not in ("fit_choices", "fit_choice_activity")
            or s.choices is None):
        return None
    slots = {"x": 0, "y": 1, "w": 2}
    trial_inputs = [v for v in family.variables if v not in slots]
    for v in trial_inputs:
        if any(kind == "var" and name not in TRIAL_VARIABLES for kind, name in variable_tokens(v, family.grammar)):
            return None
    a = s.choices
    A, T = a.r.shape
    tvals = np.zeros((A, T, len(trial_inputs)))
    trial = np.stack([a.r.ravel(), a.rbar.ravel()])  # the VM's trial slots: r, rbar
    for q, v in enumerate(trial_inputs):
        program = pack([compile_expr(tuple(variable_tokens(v, family.grammar)))])
        n = A * T
        tvals[:, :, q] = evaluate(program, np.zeros((1, n, 1)), np.zeros((1, n, 1)), np.zeros((1, n)),
                                  trial)[0].reshape(A, T)
    exps = np.zeros((family.n_params, 3 + len(trial_inputs)), np.int64)
    for k, e in enumerate(family.terms):
        for v, p in zip(family.variables, e):
            exps[k, slots[v] if v in slots else 3 + trial_inputs.index(v)] = p
    from .kernel import scored_decisions
    count = float(scored_decisions(a).sum())
    eta = task.etas[0]
    # as ChoiceSimulator.simulate: recorded inputs leave no input noise, recorded w0 no prior uncertainty
    noise_var = 0.0 if s.recorded_inputs else c.protocol.odour_variance
    prior_var = 0.0 if s.recorded_w0 else c.init_std ** 2
    filtered = c.protocol.weight_filter and (noise_var > 0 or prior_var > 0)

    def likelihood(theta, exponents):
        if filtered:
            from .filter_sensitivity import filtered_likelihood
            return filtered_likelihood(theta, exponents, tvals, a, s.w0, c.readout, noise_var, prior_var, eta,
                                       c.weight_bound)
        return taylor_likelihood(theta, exponents, tvals, a, s.w0, c.readout, noise_var, eta, c.weight_bound)

    if task.objective == "fit_choice_activity":  # the deterministic teacher-forced model, as simulate
        from ...gradfit import gaussian
        recorded = a.activity[~np.isnan(a.activity)]
        scale = float(recorded.std()) if recorded.size else 1.0

        def activity_model(theta, active):
            r, J, blown = taylor_activity_residuals(theta, exps[active], tvals, a, s.w0, c.readout, noise_var, eta,
                                                    c.weight_bound)
            return gaussian(r, J, blown, scale)
        return activity_model, None

    def model(theta, active):
        nll, g, H, blown = likelihood(theta, exps[active])
        if blown or not np.isfinite(nll):
            P = len(active)
            return Derivatives(np.inf, np.zeros(P), np.zeros((P, P)), int(count), "bernoulli", WORST_LOSS, True)
        return Derivatives(nll, g, H, int(count), "bernoulli", nll / max(count, 1.0))
    return model, None
