"""Exact derivatives of the weight filter's likelihood by a Taylor rule's coefficients.

The fly choice model with the assumed-density weight filter (kernel.py, ``filtered=True``) tracks,
per animal, a Gaussian belief over the plastic weights w (m = n_out n_in) and the current
encounter's input noise eps (n_in): mean (w, eps), covariance S (nz x nz, nz = m + n_in). Every
step of the filter is a smooth function of that state and of the rule's coefficients theta, so
forward-mode differentiation carries the tangents dw/dtheta (P, m), deps/dtheta (P, n_in) and
dS/dtheta (P, nz, nz) through it:

- predict (each encounter, input x_o): logit a = c . tanh(W x_o); its Jacobian J by the state
  (J_w[ij] = g_i x_j, J_eps[j] = sum_i g_i W_ij, g = c (1 - h^2)); v = J^T S J; z = a / sqrt(1 +
  pi v / 8), the one-step-ahead log-odds of the decision. Tangents: dJ from dh = (1 - h^2) dW x,
  dv = J . (dS J + S dJ) + (S J) . dJ.
- condition (fitted trials): probit moment matching, w += (S J)_w gm, eps += (S J)_eps gm,
  S += gv (S J)(S J)^T with gm, gv functions of (a, v) through u = s sqrt(pi/8) a / sqrt(1 + pi v / 8)
  and the inverse Mills ratio beta (d beta / du = -beta (u + beta)).
- propagate (an acceptance): S_ww <- A S A^T, A = d w' / d(w, eps) of the update w' = w + eta f(x + eps,
  y, w, t), whose entries hold f_x, f_y, f_w; its tangent needs f's second derivatives (exact for
  the monomials) and dA. The mean: w += eta f, dw += eta (phi + f_x dx + f_y dy + f_w dw).

The negative log-likelihood of the scored decisions, its gradient and the Fisher information of
the one-step-ahead predictions (p (1 - p) dz dz^T, the Gauss-Newton matrix for LM) sum over decisions.
Tested against finite differences and against ``kernel.simulate(filtered=True)`` (same NLL).
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from .kernel import SQRT_LAMBDA, _inverse_mills, _times_update_jacobian
from .sensitivity import MAX_POWER

LAMBDA = SQRT_LAMBDA * SQRT_LAMBDA  # pi / 8


@njit(cache=True, nogil=True)
def _mono(pows, e, order):
    """d^order / du^order of u^e, from the powers of u (pows[k] = u^k)."""
    if e < order:
        return 0.0
    c = 1.0
    for k in range(order):
        c *= e - k
    return c * pows[e - order]


@njit(cache=True, nogil=True)
def _predict_tangents(w, Dw, S, DS, xo, readout, h, J, dJ, cv, dc, dh, dlogit, dv, n_out, n_in, noise_var):
    """Reset the input-noise part of the state, then the logit a, its variance v and their
    tangents (into dlogit, dv); leaves J, S J (cv) and their tangents (dJ, dc)."""
    m = n_out * n_in
    nz = m + n_in
    P = Dw.shape[0]
    for p in range(nz):
        for k in range(m, nz):
            S[p, k] = 0.0
            S[k, p] = 0.0
    for k in range(n_in):
        S[m + k, m + k] = noise_var
    for t in range(P):
        for p in range(nz):
            for k in range(m, nz):
                DS[t, p, k] = 0.0
                DS[t, k, p] = 0.0
    logit = 0.0
    for i in range(n_out):
        s = 0.0
        for j in range(n_in):
            s += w[i * n_in + j] * xo[j]
        h[i] = np.tanh(s)
        logit += readout[i] * h[i]
    for j in range(n_in):
        J[m + j] = 0.0
    for i in range(n_out):
        g = readout[i] * (1.0 - h[i] * h[i])
        for j in range(n_in):
            J[i * n_in + j] = g * xo[j]
            J[m + j] += g * w[i * n_in + j]
    for t in range(P):
        dlogit[t] = 0.0
        for j in range(n_in):
            dJ[t, m + j] = 0.0
        for i in range(n_out):
            a = 0.0
            for j in range(n_in):
                a += xo[j] * Dw[t, i * n_in + j]
            dh[t, i] = (1.0 - h[i] * h[i]) * a
            dlogit[t] += readout[i] * dh[t, i]
            g = readout[i] * (1.0 - h[i] * h[i])
            dg = -2.0 * readout[i] * h[i] * dh[t, i]
            for j in range(n_in):
                dJ[t, i * n_in + j] = dg * xo[j]
                dJ[t, m + j] += dg * w[i * n_in + j] + g * Dw[t, i * n_in + j]
    # after the reset the noise block of S is noise_var I, its cross blocks and every noise row and
    # column of dS are 0: only the weight blocks enter the products
    v = 0.0
    for p in range(m):
        s = 0.0
        for q in range(m):
            s += S[p, q] * J[q]
        cv[p] = s
        v += J[p] * s
    for k in range(m, nz):
        cv[k] = noise_var * J[k]
        v += J[k] * cv[k]
    for t in range(P):
        acc = 0.0
        for p in range(m):
            s = 0.0
            for q in range(m):
                s += DS[t, p, q] * J[q] + S[p, q] * dJ[t, q]
            dc[t, p] = s
            acc += J[p] * s + cv[p] * dJ[t, p]
        for k in range(m, nz):
            dc[t, k] = noise_var * dJ[t, k]
            acc += J[k] * dc[t, k] + cv[k] * dJ[t, k]
        dv[t] = acc
    if v < 0.0:  # rounding only (S is a covariance): as the kernel, clipped, with no derivative
        v = 0.0
        for t in range(P):
            dv[t] = 0.0
    return logit, v


@njit(cache=True, nogil=True)
def _condition_tangents(w, Dw, eps, De, S, DS, cv, dc, logit, dlogit, v, dv, accepted, m, n_in):
    """The filter's update on a decision (kernel._condition) and the same for the tangents."""
    nz = m + n_in
    P = Dw.shape[0]
    s = 1.0 if accepted else -1.0
    den2 = 1.0 + LAMBDA * v
    den = np.sqrt(den2)
    u = s * SQRT_LAMBDA * logit / den
    beta = _inverse_mills(u)
    gm = s * SQRT_LAMBDA * beta / den
    N = beta * (u + beta)
    gv = -LAMBDA * N / den2
    for t in range(P):
        dden = LAMBDA * dv[t] / (2.0 * den)
        du = s * SQRT_LAMBDA * (dlogit[t] / den - logit * dden / den2)
        dbeta = -N * du
        dgm = s * SQRT_LAMBDA * (dbeta / den - beta * dden / den2)
        dN = dbeta * (u + beta) + beta * (du + dbeta)
        dgv = -LAMBDA * (dN / den2 - N * LAMBDA * dv[t] / (den2 * den2))
        for p in range(m):
            Dw[t, p] += dc[t, p] * gm + cv[p] * dgm
        for k in range(n_in):
            De[t, k] += dc[t, m + k] * gm + cv[m + k] * dgm
        for p in range(nz):
            a = dgv * cv[p]
            b = gv * dc[t, p]
            cp = gv * cv[p]
            for q in range(nz):
                DS[t, p, q] += a * cv[q] + b * cv[q] + cp * dc[t, q]
    for p in range(m):
        w[p] += cv[p] * gm
    for k in range(n_in):
        eps[k] += cv[m + k] * gm
    for p in range(nz):
        cp = cv[p] * gv
        for q in range(nz):
            S[p, q] += cp * cv[q]


@njit(cache=True, nogil=True)
def _update_tangents(theta, exps, tk, x, dx, w, Dw, S, DS, eta, n_out, n_in, scratch):
    """An acceptance: the covariance through the update's Jacobian (kernel._propagate), the mean
    w += eta f and their tangents. x: the accepted input with its noise estimate, dx its tangent.
    Returns the largest |w| after the update."""
    m = n_out * n_in
    nz = m + n_in
    P = theta.shape[0]
    K = tk.shape[0]
    y, dy, dgy, pt, px, py, pw, fq, dfq, a_w, a_e, da_w, da_e, C, CT, dC, tmp, dCT, E = scratch
    phi = np.empty((4, P))
    for i in range(n_out):
        s = 0.0
        for j in range(n_in):
            s += w[i * n_in + j] * x[j]
        y[i] = np.tanh(s)
    for t in range(P):
        for i in range(n_out):
            a = 0.0
            for j in range(n_in):
                a += Dw[t, i * n_in + j] * x[j] + w[i * n_in + j] * dx[t, j]
            dy[t, i] = (1.0 - y[i] * y[i]) * a
    for c in range(K):
        pt[c, 0] = 1.0
        for d in range(1, MAX_POWER + 1):
            pt[c, d] = pt[c, d - 1] * tk[c]
    for i in range(n_out):
        py[0] = 1.0
        for d in range(1, MAX_POWER + 1):
            py[d] = py[d - 1] * y[i]
        gy = 1.0 - y[i] * y[i]
        for t in range(P):
            dgy[t] = -2.0 * y[i] * dy[t, i]
        for j in range(n_in):
            q = i * n_in + j
            px[0] = 1.0
            pw[0] = 1.0
            for d in range(1, MAX_POWER + 1):
                px[d] = px[d - 1] * x[j]
                pw[d] = pw[d - 1] * w[q]
            # f and its first and second derivatives in x, y, w
            f = fx = fy = fw = fxx = fxy = fxw = fyy = fyw = fww = 0.0
            for p in range(P):
                a, b, c = exps[p, 0], exps[p, 1], exps[p, 2]
                tt = 1.0
                for r in range(K):
                    tt *= pt[r, exps[p, 3 + r]]
                x0, x1, x2 = _mono(px, a, 0), _mono(px, a, 1), _mono(px, a, 2)
                y0, y1, y2 = _mono(py, b, 0), _mono(py, b, 1), _mono(py, b, 2)
                w0_, w1, w2 = _mono(pw, c, 0), _mono(pw, c, 1), _mono(pw, c, 2)
                phi[0, p] = x0 * y0 * w0_ * tt
                phi[1, p] = x1 * y0 * w0_ * tt
                phi[2, p] = x0 * y1 * w0_ * tt
                phi[3, p] = x0 * y0 * w1 * tt
                th = theta[p] * tt
                f += th * x0 * y0 * w0_
                fx += th * x1 * y0 * w0_
                fy += th * x0 * y1 * w0_
                fw += th * x0 * y0 * w1
                fxx += th * x2 * y0 * w0_
                fxy += th * x1 * y1 * w0_
                fxw += th * x1 * y0 * w1
                fyy += th * x0 * y2 * w0_
                fyw += th * x0 * y1 * w1
                fww += th * x0 * y0 * w2
            fq[q] = f
            for k in range(n_in):
                a_w[q, k] = eta * fy * gy * x[k]
                a_e[q, k] = eta * fy * gy * w[i * n_in + k]
            a_w[q, j] += 1.0 + eta * fw
            a_e[q, j] += eta * fx
            for t in range(P):
                dxt, dyt, dwt = dx[t, j], dy[t, i], Dw[t, q]
                dfq[t, q] = phi[0, t] + fx * dxt + fy * dyt + fw * dwt
                dfx = phi[1, t] + fxx * dxt + fxy * dyt + fxw * dwt
                dfy = phi[2, t] + fxy * dxt + fyy * dyt + fyw * dwt
                dfw = phi[3, t] + fxw * dxt + fyw * dyt + fww * dwt
                for k in range(n_in):
                    da_w[t, q, k] = eta * (dfy * gy * x[k] + fy * dgy[t] * x[k] + fy * gy * dx[t, k])
                    da_e[t, q, k] = eta * (dfy * gy * w[i * n_in + k] + fy * dgy[t] * w[i * n_in + k]
                                           + fy * gy * Dw[t, i * n_in + k])
                da_w[t, q, j] += eta * dfw
                da_e[t, q, j] += eta * dfx
    # C = A S; d(A S A^T) = X + X^T + A dS A^T with X = dA S A^T = dA C^T (S symmetric)
    _times_update_jacobian(a_w, a_e, S, C, m, n_in, nz)
    for p in range(nz):
        for q in range(m):
            CT[p, q] = C[q, p]
    for t in range(P):
        _times_update_jacobian(da_w[t], da_e[t], CT, dC, m, n_in, m)  # X in dC[:, :m]
        _times_update_jacobian(a_w, a_e, DS[t], tmp, m, n_in, nz)
        for q in range(m):
            for p in range(nz):
                dCT[p, q] = tmp[q, p]
        _times_update_jacobian(a_w, a_e, dCT, E, m, n_in, m)
        for q in range(m):
            for p in range(m):
                DS[t, q, p] = dC[q, p] + dC[p, q] + E[q, p]
    _times_update_jacobian(a_w, a_e, CT, S, m, n_in, m)
    largest = 0.0
    for q in range(m):
        w[q] += eta * fq[q]
        largest = max(largest, abs(w[q]))
        for t in range(P):
            Dw[t, q] += eta * dfq[t, q]
    return largest


@njit(cache=True, nogil=True)
def _animal(theta, exps, tvals, odour, patterns, decision, n_enc, trial_end, n_trials, score, heldout, w0,
            readout, noise_var, prior_var, eta, bound, grad, fisher):
    """One animal through the filter: returns (nll, blown); adds its gradient and Fisher information."""
    n_out, n_in = w0.shape
    m = n_out * n_in
    nz = m + n_in
    P = theta.shape[0]
    K = tvals.shape[1]
    T = trial_end.shape[0]
    w = np.empty(m)
    for i in range(n_out):
        for j in range(n_in):
            w[i * n_in + j] = w0[i, j]
    S = np.zeros((nz, nz))
    for q in range(m):
        S[q, q] = prior_var
    DS = np.zeros((P, nz, nz))
    Dw = np.zeros((P, m))
    eps = np.zeros(n_in)
    De = np.zeros((P, n_in))
    h, J, cv = np.empty(n_out), np.empty(nz), np.empty(nz)
    dJ, dc, dh = np.empty((P, nz)), np.empty((P, nz)), np.empty((P, n_out))
    dlogit, dv, dz = np.empty(P), np.empty(P), np.empty(P)
    x, dx = np.empty(n_in), np.empty((P, n_in))
    scratch = (np.empty(n_out), np.empty((P, n_out)), np.empty(P), np.ones((K, MAX_POWER + 1)),
               np.empty(MAX_POWER + 1), np.empty(MAX_POWER + 1), np.empty(MAX_POWER + 1), np.empty(m),
               np.empty((P, m)), np.empty((m, n_in)), np.empty((m, n_in)), np.empty((P, m, n_in)),
               np.empty((P, m, n_in)), np.empty((m, nz)), np.empty((nz, m)), np.empty((m, nz)), np.empty((m, nz)),
               np.empty((nz, m)), np.empty((m, m)))
    nll = 0.0
    e0 = 0
    for k in range(T + 1):
        if k > n_trials:
            break
        last = trial_end[k] if k < n_trials else n_enc - 1
        condition = not heldout[k]
        for e in range(e0, last + 1):
            for j in range(n_in):
                eps[j] = 0.0
                for t in range(P):
                    De[t, j] = 0.0
            logit, v = _predict_tangents(w, Dw, S, DS, patterns[odour[e]], readout, h, J, dJ, cv, dc, dh, dlogit,
                                         dv, n_out, n_in, noise_var)
            D = np.sqrt(1.0 + LAMBDA * v)
            z = logit / D
            if score[k] > 0:
                for t in range(P):
                    dz[t] = dlogit[t] / D - logit * LAMBDA * dv[t] / (2.0 * D * D * D)
                d = decision[e]
                zz = -z if d == 1 else z  # -log P(decision) = softplus(zz)
                nll += max(zz, 0.0) + np.log1p(np.exp(-abs(zz)))
                p_acc = 1.0 / (1.0 + np.exp(-z))
                coef = p_acc - d
                wgt = p_acc * (1.0 - p_acc)
                for t in range(P):
                    grad[t] += coef * dz[t]
                    for r in range(P):
                        fisher[t, r] += wgt * dz[t] * dz[r]
            if condition:
                _condition_tangents(w, Dw, eps, De, S, DS, cv, dc, logit, dlogit, v, dv, decision[e] == 1, m, n_in)
        e0 = last + 1
        if k == n_trials or k == T:
            break
        o = odour[last]
        for j in range(n_in):
            x[j] = patterns[o, j] + eps[j]
            for t in range(P):
                dx[t, j] = De[t, j]
        largest = _update_tangents(theta, exps, tvals[k], x, dx, w, Dw, S, DS, eta, n_out, n_in, scratch)
        if not largest <= bound:
            return nll, True
    return nll, False


@njit(cache=True, parallel=True)
def _all_animals(theta, exps, tvals, odour, patterns, decision, n_enc, trial_end, n_trials, score, heldout, w0,
                 readout, noise_var, prior_var, eta, bound):
    A = odour.shape[0]
    P = theta.shape[0]
    nll = np.zeros(A)
    blown = np.zeros(A, np.bool_)
    grad = np.zeros((A, P))
    fisher = np.zeros((A, P, P))
    for b in prange(A):
        nll[b], blown[b] = _animal(theta, exps, tvals[b], odour[b], patterns, decision[b], n_enc[b], trial_end[b],
                                   n_trials[b], score[b], heldout, w0[b], readout, noise_var, prior_var, eta, bound,
                                   grad[b], fisher[b])
    return nll, blown, grad, fisher


def filtered_likelihood(theta: np.ndarray, exponents: np.ndarray, tvals: np.ndarray, arrays, w0: np.ndarray,
                        readout: np.ndarray, noise_var: float, prior_var: float, eta: float,
                        weight_bound: float = 1e3):
    """Negative log-likelihood of the scored decisions under the weight filter, its exact gradient
    and the Fisher information of the one-step-ahead predictions.

    theta (P,); exponents (P, 3 + K) powers of x, y, w and of K trial inputs; tvals (A, T, K);
    arrays: ``kernel.ChoiceArrays`` (its ``heldout`` trials do not condition the filter); w0 (A,
    n_out, n_in) the prior mean; readout (n_out,); noise_var: variance of the unrecorded input
    noise; prior_var: prior variance of each initial weight. Returns (nll, grad (P,), fisher (P, P),
    blown).
    """
    a = arrays
    theta = np.ascontiguousarray(theta, np.float64)
    exps = np.ascontiguousarray(exponents, np.int64)
    if exps.shape[0] != theta.shape[0] or exps.min(initial=0) < 0 or exps.max(initial=0) > MAX_POWER:
        raise ValueError(f"exponents {exps.shape}: expected ({theta.shape[0]}, 3 + K) in 0..{MAX_POWER}")
    nll, blown, grad, fisher = _all_animals(
        theta, exps, np.ascontiguousarray(tvals, np.float64), a.odour, a.patterns, a.decision, a.n_enc,
        a.trial_end, a.n_trials, a.score.astype(np.float64), np.ascontiguousarray(a.heldout, np.bool_),
        np.ascontiguousarray(w0, np.float64), np.ascontiguousarray(readout, np.float64), float(noise_var),
        float(prior_var), float(eta), float(weight_bound))
    return float(nll.sum()), grad.sum(axis=0), fisher.sum(axis=0), bool(blown.any())
