"""Exact forward sensitivities of the rate network's activity to a Taylor rule's coefficients.

The network (kernel.py, no lateral weights) is y_t = act(W_t x_t), W_{t+1} = W_t + eta f(x, y, W),
with a Taylor rule f = sum_p theta_p phi_p(x_j, y_i, W_ij), phi_p = x^a y^b w^c. Differentiating
the recursion by theta gives, per synapse, S_t = dW_t/dtheta (n_out, n_in, P):

    dy_i/dtheta   = act'(s_i) sum_j S_ij x_j                                  (s = W x)
    S_{t+1,ij}    = S_ij + eta (phi(x_j, y_i, W_ij) + f_y dy_i/dtheta + f_w S_ij)

with f_y = df/dy and f_w = df/dw at (x_j, y_i, W_ij). A Taylor rule is linear in theta, so the
sensitivities cost O(P) per synapse and step, about P times one simulation. The residuals
y - target and their Jacobian dy/dtheta on recorded entries are exactly what Gauss-Newton and
Levenberg-Marquardt need; loss = mean(residual^2) is the ``fit_activity`` loss.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from .kernel import ACTIVATIONS, _activate

MAX_POWER = 6  # families.TaylorFamily's limit


@njit(cache=True, nogil=True)
def _act_slope(s, y, act):
    """act'(s) given y = act(s)."""
    if act == 1:
        return y * (1.0 - y)
    if act == 2:
        return 1.0 - y * y
    return 1.0


@njit(cache=True, nogil=True)
def _outputs(W, S, x, t, target, act, y, dy, res, jac):
    """Step t's outputs y = act(W x_t) and their sensitivities dy/dtheta = act'(s) S x_t, with the
    residual y - target and its Jacobian recorded where the target is (NaN: unrecorded neuron)."""
    n_out, n_in, P = S.shape
    for i in range(n_out):
        s = 0.0
        for j in range(n_in):
            s += W[i, j] * x[t, j]
        y[i] = _activate(s, act)
        slope = _act_slope(s, y[i], act)
        for p in range(P):
            acc = 0.0
            for j in range(n_in):
                acc += S[i, j, p] * x[t, j]
            dy[i, p] = slope * acc
        v = target[t, i]
        if v == v:
            res[t, i] = y[i] - v
            for p in range(P):
                jac[t, i, p] = dy[i, p]


@njit(cache=True, nogil=True)
def _trial(theta, exps, x, w0, target, eta, act, bound, res, jac):
    """One trial: fills res (steps, n_out) with y - target (0 where not recorded) and jac
    (steps, n_out, P) with dy/dtheta (0 where not recorded). Returns True if the weights blew up."""
    n_steps, n_in = x.shape
    n_out = w0.shape[0]
    P = theta.shape[0]
    W = w0.copy()
    S = np.zeros((n_out, n_in, P))
    y = np.empty(n_out)
    dy = np.empty((n_out, P))
    px = np.empty(MAX_POWER + 1)
    py = np.empty(MAX_POWER + 1)
    pw = np.empty(MAX_POWER + 1)
    phi = np.empty(P)
    for t in range(n_steps):
        _outputs(W, S, x, t, target, act, y, dy, res, jac)
        largest = 0.0
        for i in range(n_out):
            py[0] = 1.0
            for k in range(1, MAX_POWER + 1):
                py[k] = py[k - 1] * y[i]
            for j in range(n_in):
                px[0] = 1.0
                pw[0] = 1.0
                for k in range(1, MAX_POWER + 1):
                    px[k] = px[k - 1] * x[t, j]
                    pw[k] = pw[k - 1] * W[i, j]
                f = 0.0
                fy = 0.0
                fw = 0.0
                for p in range(P):
                    a, b, c = exps[p, 0], exps[p, 1], exps[p, 2]
                    m = px[a] * py[b] * pw[c]
                    phi[p] = m
                    f += theta[p] * m
                    if b > 0:
                        fy += theta[p] * b * px[a] * py[b - 1] * pw[c]
                    if c > 0:
                        fw += theta[p] * c * px[a] * py[b] * pw[c - 1]
                for p in range(P):
                    S[i, j, p] += eta * (phi[p] + fy * dy[i, p] + fw * S[i, j, p])
                W[i, j] += eta * f
                largest = max(largest, abs(W[i, j]))
        if not largest <= bound:  # also catches NaN
            return True
    return False


@njit(cache=True, parallel=True)
def _all_trials(theta, exps, x, w0, target, eta, act, bound, res, jac):
    n_trials = x.shape[0]
    blown = np.zeros(n_trials, np.bool_)
    for b in prange(n_trials):
        blown[b] = _trial(theta, exps, x[b], w0[b], target[b], eta, act, bound, res[b], jac[b])
    return blown


def taylor_residuals(theta: np.ndarray, exponents: np.ndarray, x: np.ndarray, w0: np.ndarray,
                     target: np.ndarray, eta: float, activation: str = "linear",
                     weight_bound: float = 1e3) -> tuple[np.ndarray, np.ndarray, bool]:
    """Residuals and their exact Jacobian for one Taylor rule on every trial.

    theta: (P,) coefficients of dw/eta = sum_p theta_p x^a_p y^b_p w^c_p; exponents: (P, 3) ints
    (a, b, c) in 0..6. x: (trials, steps, n_in); w0: (trials, n_out, n_in); target: (trials, steps,
    n_out), NaN = not recorded. Returns (r, J, blown): r (n_recorded,) = y - target over recorded
    entries (trial, step, neuron order), J (n_recorded, P) = dr/dtheta, blown True when some
    trial's weights left ``weight_bound`` or became non-finite (r and J are then meaningless).
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"Invalid activation {activation!r}. Valid options: {', '.join(ACTIVATIONS)}")
    theta = np.ascontiguousarray(theta, np.float64)
    exps = np.ascontiguousarray(exponents, np.int64).reshape(-1, 3)
    if exps.shape[0] != theta.shape[0] or exps.min(initial=0) < 0 or exps.max(initial=0) > MAX_POWER:
        raise ValueError(f"exponents {exps.shape} must be (P, 3) = ({theta.shape[0]}, 3) in 0..{MAX_POWER}")
    x = np.ascontiguousarray(x, np.float64)
    w0 = np.ascontiguousarray(w0, np.float64)
    target = np.ascontiguousarray(target, np.float64)
    trials, steps, n_in = x.shape
    n_out = w0.shape[1]
    if w0.shape != (trials, n_out, n_in) or target.shape != (trials, steps, n_out):
        raise ValueError(f"x {x.shape}, w0 {w0.shape}, target {target.shape}: expected (trials, steps, n_in), "
                         "(trials, n_out, n_in), (trials, steps, n_out)")
    res = np.zeros((trials, steps, n_out))
    jac = np.zeros((trials, steps, n_out, len(theta)))
    blown = _all_trials(theta, exps, x, w0, target, float(eta), ACTIVATIONS[activation], float(weight_bound),
                        res, jac)
    ok = np.isfinite(target).ravel()
    return res.ravel()[ok], jac.reshape(trials * steps * n_out, len(theta))[ok], bool(blown.any())


# ---------------------------------------------------------------- one-hidden-layer MLP rules

@njit(cache=True, nogil=True)
def _mlp_act(z, act):
    """(activation, its derivative) of the MLP family's hidden units: 0 linear, 1 sigmoid, 2 tanh."""
    if act == 1:
        s = 1.0 / (1.0 + np.exp(-z))
        return s, s * (1.0 - s)
    if act == 2:
        t = np.tanh(z)
        return t, 1.0 - t * t
    return z, 1.0


@njit(cache=True, nogil=True)
def _mlp_trial(theta, slots, H, hidden_act, x, w0, target, eta, act, bound, res, jac):
    """Like ``_trial`` for dw/eta = v . act(W1 u + b1) + c, u the family's variables (``slots``: 0 x,
    1 y, 2 w per input); theta = [W1 (H, n_u) row-major, b1 (H), v (H), c] (families.MLPFamily)."""
    n_steps, n_in = x.shape
    n_out = w0.shape[0]
    P = theta.shape[0]
    n_u = slots.shape[0]
    W = w0.copy()
    S = np.zeros((n_out, n_in, P))
    y = np.empty(n_out)
    dy = np.empty((n_out, P))
    u = np.empty(n_u)
    a = np.empty(H)
    da = np.empty(H)
    dfdtheta = np.empty(P)
    b0, v0, c0 = H * n_u, H * n_u + H, H * n_u + 2 * H
    for t in range(n_steps):
        _outputs(W, S, x, t, target, act, y, dy, res, jac)
        largest = 0.0
        for i in range(n_out):
            for j in range(n_in):
                for q in range(n_u):
                    u[q] = x[t, j] if slots[q] == 0 else (y[i] if slots[q] == 1 else W[i, j])
                f = theta[c0]
                for k in range(H):
                    z = theta[b0 + k]
                    for q in range(n_u):
                        z += theta[k * n_u + q] * u[q]
                    a[k], da[k] = _mlp_act(z, hidden_act)
                    f += theta[v0 + k] * a[k]
                fy = 0.0
                fw = 0.0
                for k in range(H):
                    g = theta[v0 + k] * da[k]
                    for q in range(n_u):
                        dfdtheta[k * n_u + q] = g * u[q]
                        if slots[q] == 1:
                            fy += g * theta[k * n_u + q]
                        elif slots[q] == 2:
                            fw += g * theta[k * n_u + q]
                    dfdtheta[b0 + k] = g
                    dfdtheta[v0 + k] = a[k]
                dfdtheta[c0] = 1.0
                for p in range(P):
                    S[i, j, p] += eta * (dfdtheta[p] + fy * dy[i, p] + fw * S[i, j, p])
                W[i, j] += eta * f
                largest = max(largest, abs(W[i, j]))
        if not largest <= bound:
            return True
    return False


@njit(cache=True, parallel=True)
def _mlp_all_trials(theta, slots, H, hidden_act, x, w0, target, eta, act, bound, res, jac):
    n_trials = x.shape[0]
    blown = np.zeros(n_trials, np.bool_)
    for b in prange(n_trials):
        blown[b] = _mlp_trial(theta, slots, H, hidden_act, x[b], w0[b], target[b], eta, act, bound, res[b], jac[b])
    return blown


MLP_HIDDEN_ACTIVATIONS = {"linear": 0, "sigmoid": 1, "tanh": 2}


def mlp_residuals(theta: np.ndarray, slots: np.ndarray, hidden: int, hidden_activation: str, x: np.ndarray,
                  w0: np.ndarray, target: np.ndarray, eta: float, activation: str = "linear",
                  weight_bound: float = 1e3) -> tuple[np.ndarray, np.ndarray, bool]:
    """``taylor_residuals`` for a one-hidden-layer MLP rule (``families.MLPFamily`` parameter order);
    slots (n_u,): 0 x, 1 y, 2 w for each of the family's inputs."""
    theta = np.ascontiguousarray(theta, np.float64)
    slots = np.ascontiguousarray(slots, np.int64)
    if theta.shape[0] != hidden * len(slots) + 2 * hidden + 1:
        raise ValueError(f"{theta.shape[0]} MLP parameters: expected {hidden * len(slots) + 2 * hidden + 1}")
    x = np.ascontiguousarray(x, np.float64)
    w0 = np.ascontiguousarray(w0, np.float64)
    target = np.ascontiguousarray(target, np.float64)
    trials, steps, n_in = x.shape
    n_out = w0.shape[1]
    res = np.zeros((trials, steps, n_out))
    jac = np.zeros((trials, steps, n_out, len(theta)))
    blown = _mlp_all_trials(theta, slots, int(hidden), MLP_HIDDEN_ACTIVATIONS[hidden_activation], x, w0, target,
                            float(eta), ACTIVATIONS[activation], float(weight_bound), res, jac)
    ok = np.isfinite(target).ravel()
    return res.ravel()[ok], jac.reshape(trials * steps * n_out, len(theta))[ok], bool(blown.any())
