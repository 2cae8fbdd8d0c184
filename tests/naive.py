"""Slow, obvious NumPy references for the compiled kernels (the STUMPY pattern)."""
from __future__ import annotations

import numpy as np
import sympy

from rulesearch.rules import Rule, symbol


def rule_function(rule: Rule):
    """The rule's exact meaning as a NumPy function f(x, y, w) via sympy.lambdify."""
    expr = rule.to_sympy()[0]
    names = rule.grammar.names
    return sympy.lambdify([symbol(n) for n in names], expr, modules="numpy"), names


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
