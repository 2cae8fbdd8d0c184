"""Taylor fits by exact derivatives: Levenberg-Marquardt, term selection, intervals, identifiability.

A simulator that can differentiate its loss by a Taylor rule's coefficients offers a *model*
(``Simulator.derivatives``): ``model(theta, active) -> Derivatives`` for the coefficients of the
terms ``active`` (indices into the family's terms; the others are 0). The fit then

1. fits every term by Levenberg-Marquardt (exact gradient, Gauss-Newton curvature);
2. selects terms by backward elimination: the term whose removal the quadratic model says costs
   least is removed and the rest refitted, as long as the deviance grows by less than the
   chi^2(1) quantile of ``select_alpha`` (a likelihood-ratio test, with the full fit's noise
   variance); a term whose removal fails the test is kept and the next one tried;
3. reports the refitted support, without any penalty, so that on noise-free data the
   coefficients are exact and the other terms exactly 0;
4. gives each kept coefficient a 95 % interval from the Gauss-Newton curvature at the optimum
   (Wald: cov = phi * GN^-1, phi the residual variance of Gaussian measurement noise, 1 for
   choices), and
5. an identifiability report: the near-flat directions of the full fit's curvature, named by
   their monomials, with the reason (each term barely acts on the visited states, or the terms
   act alike and cancel).

Why curvature and not a bootstrap: the derivatives are already there, so the intervals cost
nothing; they assume independent measurement noise and a loss close to quadratic over the
interval, which the coverage benchmark (benchmarks/coef_trust.py) checks.
"""
from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy.special import chdtri  # chi2.isf(alpha, dof) without importing scipy.stats (0.3 s)
from threadpoolctl import threadpool_limits

from .fit import FitResult
from .tasks import WORST_LOSS

# Measurement precision assumed for noise-free data, relative to the recorded activity's std
# (float32 data carry about 1e-7): it keeps the likelihood-ratio test and the intervals finite
# when the residual variance of an exact fit is 0.
PRECISION_FLOOR = 1e-6
# A direction of coefficient space is not determined when a unit change along it moves the
# predicted data by less than FLAT_EFFECT of their std (RMS), or its 95 % interval is wider than
# FLAT_INTERVAL (in coefficient units).
FLAT_EFFECT = 1e-3
FLAT_INTERVAL = 0.1
Z95 = 1.959963984540054
# A likelihood fit (choices) stops when its deviance fell by less than STALL_DEVIANCE over the
# last STALL_ITERATIONS iterations: the likelihood-ratio tests resolve deviance differences of the
# chi^2(1) quantile (10.8 at alpha 1e-3), and with many undetermined terms LM otherwise crawls
# along their flat directions for its whole budget (measured on 18 flies, 54 terms: 100 iterations
# gaining 2.9 nats after the 5th).
STALL_DEVIANCE = 0.5
STALL_ITERATIONS = 5


@dataclass(frozen=True)
class Derivatives:
    """A loss and its derivatives by the active coefficients.

    cost: 0.5 * sum of squared residuals (``gaussian``) or the negative log-likelihood
    (``bernoulli``); grad (P,); gn (P, P) the Gauss-Newton matrix (J^T J, or the Fisher information);
    n: observations; scale: the data's std (gaussian; for the precision floor); loss: the task's
    loss (mean squared error, or mean negative log-likelihood); blown: the weights left their bound.
    """

    cost: float
    grad: np.ndarray
    gn: np.ndarray
    n: int
    likelihood: str
    loss: float
    blown: bool = False
    scale: float = 1.0


Model = Callable[[np.ndarray, np.ndarray], Derivatives]


def gaussian(r: np.ndarray, J: np.ndarray, blown: bool, scale: float) -> Derivatives:
    """Derivatives of 0.5 * |r|^2 from residuals r (n,) and their Jacobian J (n, P)."""
    if blown or not np.all(np.isfinite(r)):
        return Derivatives(np.inf, np.zeros(J.shape[1]), np.zeros((J.shape[1],) * 2), len(r), "gaussian",
                           WORST_LOSS, True, scale)
    sse = float(r @ r)
    return Derivatives(0.5 * sse, J.T @ r, J.T @ J, len(r), "gaussian", sse / max(len(r), 1), False, scale)


@dataclass
class LMResult:
    theta: np.ndarray
    d: Derivatives
    iterations: int
    evaluations: int


def levenberg_marquardt(model: Model, active: np.ndarray, theta0: np.ndarray, max_iter: int = 100,
                        on_iteration: Callable[[Derivatives], None] | None = None) -> LMResult:
    """Minimise ``model``'s cost over the ``active`` coefficients from theta0 (len(active),).

    Marquardt's scaling (damping proportional to the diagonal of the curvature); a step that
    blows the weights up or raises the cost is rejected and the damping raised.
    """
    theta = np.asarray(theta0, float).copy()
    d = model(theta, active)
    evaluations = 1
    if d.blown:  # start from no plasticity instead
        theta = np.zeros_like(theta)
        d = model(theta, active)
        evaluations += 1
    lam = 1e-3
    it = 0
    if len(theta) == 0:
        return LMResult(theta, d, 0, evaluations)
    costs = [d.cost]
    for it in range(1, max_iter + 1):
        diag = np.sqrt(np.maximum(np.diag(d.gn), 1e-300))
        hs = d.gn / np.outer(diag, diag)
        gs = d.grad / diag
        vals, vecs = np.linalg.eigh(hs)
        vals = np.maximum(vals, 0.0)
        proj = vecs.T @ gs
        improved = False
        for _ in range(30):
            step = -(vecs @ (proj / (vals + lam))) / diag
            trial = theta + step
            e = model(trial, active)
            evaluations += 1
            if not e.blown and e.cost <= d.cost:
                improved = True
                break
            lam *= 4.0
        if not improved:
            break
        change = d.cost - e.cost
        theta, d = trial, e
        lam = max(lam / 3.0, 1e-12)
        if on_iteration is not None:
            on_iteration(d)
        tiny = d.cost <= 0.5 * d.n * (1e-12 * d.scale) ** 2 if d.likelihood == "gaussian" else False
        costs.append(d.cost)
        stalled = (d.likelihood == "bernoulli" and len(costs) > STALL_ITERATIONS
                   and 2.0 * (costs[-1 - STALL_ITERATIONS] - d.cost) < STALL_DEVIANCE)
        if tiny or stalled or change <= 1e-12 * max(d.cost, 1e-300) or np.max(np.abs(step)) <= 1e-13 * (1 + np.max(np.abs(theta))):
            break
    return LMResult(theta, d, it, evaluations)


def _dispersion(d: Derivatives, p: int) -> float:
    """phi: the variance of a Gaussian residual (with the precision floor), 1 for choices."""
    if d.likelihood != "gaussian":
        return 1.0
    return max(2.0 * d.cost / max(d.n - p, 1), (PRECISION_FLOOR * d.scale) ** 2)


def _inverse(gn: np.ndarray) -> np.ndarray:
    """The inverse of a (possibly near-singular) curvature matrix, by scaled eigendecomposition;
    flat directions get a huge but finite variance rather than a crash."""
    diag = np.sqrt(np.maximum(np.diag(gn), 1e-300))
    vals, vecs = np.linalg.eigh(gn / np.outer(diag, diag))
    vals = np.maximum(vals, 1e-300 + 1e-15 * max(vals.max(initial=0.0), 0.0))
    return (vecs / vals) @ vecs.T / np.outer(diag, diag)


@dataclass
class SparseFit:
    full: LMResult  # every term
    sparse: LMResult  # the selected terms, refitted
    active: np.ndarray  # indices of the selected terms
    steps: list  # the selection log
    phi: float  # dispersion of the full fit
    evaluations: int
    iterations: int
    route: str = ""  # which search gave the selected terms


class _Search:
    """Counts and logs the refits of one selection."""

    def __init__(self, model: Model, names, phi: float, q: float, max_iter: int, on_iteration):
        self.model, self.names, self.phi, self.q = model, names, phi, q
        self.max_iter, self.on_iteration = max_iter, on_iteration
        self.evaluations = self.iterations = 0
        self.steps: list = []
        self.refits: list = []  # (active, LMResult) of every refit, for the BIC fallback

    def refit(self, active: np.ndarray, warm: np.ndarray) -> LMResult:
        r = levenberg_marquardt(self.model, active, warm, self.max_iter, self.on_iteration)
        self.evaluations += r.evaluations
        self.iterations += r.iterations
        self.refits.append((np.array(active), r))
        return r

    def stat(self, worse: LMResult, better: LMResult) -> float:
        """The likelihood-ratio statistic 2 * (cost difference) / phi."""
        return 2.0 * (worse.d.cost - better.d.cost) / self.phi

    def log(self, route: str, action: str, terms, stat: float, done: bool, after: LMResult):
        self.steps.append({"route": route, "action": action, "terms": [self.names[k] for k in terms],
                           "deviance_change": float(stat), "threshold": self.q, "accepted": bool(done),
                           "loss_after": after.d.loss})

    def backward(self, active: np.ndarray, current: LMResult, route: str) -> tuple[np.ndarray, LMResult]:
        """Remove terms while the deviance grows by less than q per removed term (the quadratic
        model proposes the longest run of removals first, then single terms)."""
        keep: set[int] = set()  # terms whose removal failed the test
        while len(active) > 0:
            cov = _inverse(current.d.gn)
            predicted = current.theta ** 2 / np.maximum(np.diag(cov), 1e-300)  # quadratic model
            order = [int(k) for k in np.argsort(predicted) if active[k] not in keep]
            if not order or predicted[order[0]] / self.phi > 4 * self.q:
                break
            m = 1
            for size in range(len(order), 1, -1):
                K = order[:size]
                tk = current.theta[K]
                joint = float(tk @ np.linalg.lstsq(cov[np.ix_(K, K)], tk, rcond=None)[0])
                if joint / self.phi <= 0.5 * self.q:
                    m = size
                    break
            while True:
                K = order[:m]
                rest = np.delete(active, K)
                shift = cov[:, K] @ np.linalg.lstsq(cov[np.ix_(K, K)], current.theta[K], rcond=None)[0]
                refit = self.refit(rest, np.delete(current.theta - shift, K))
                stat = self.stat(refit, current)
                if m == 1 or (not refit.d.blown and stat <= self.q):
                    break
                m = 1
            ok = not refit.d.blown and stat <= self.q
            self.log(route, "remove", active[K], stat, ok, refit)
            if not ok:
                keep.add(int(active[K[0]]))
                continue
            active, current = rest, refit
        return active, current

    def forward(self, n_terms: int, route: str, provisional: bool = False) -> tuple[np.ndarray, LMResult]:
        """Add terms one at a time, the one with the largest score statistic first, while the
        deviance falls by more than q. ``provisional``: judge with the current model's residual
        variance (F-to-enter), before the full fit has given the noise variance."""
        everything = np.arange(n_terms)
        active = np.zeros(0, np.int64)
        current = self.refit(active, np.zeros(0))
        while len(active) < n_terms:
            if provisional:
                self.phi = _dispersion(current.d, len(active))
            theta = np.zeros(n_terms)
            theta[active] = current.theta
            d = self.model(theta, everything)
            self.evaluations += 1
            if d.blown:
                break
            rest = np.setdiff1d(everything, active)
            H, g = d.gn, d.grad
            if len(active):
                inv = _inverse(H[np.ix_(active, active)])
                cross = H[np.ix_(rest, active)]
                g_rest = g[rest] - cross @ inv @ g[active]
                h_rest = np.diag(H)[rest] - np.einsum("ij,jk,ik->i", cross, inv, cross)
            else:
                g_rest, h_rest = g[rest], np.diag(H)[rest]
            score = g_rest ** 2 / np.maximum(h_rest, 1e-300) / self.phi
            k = int(rest[np.argmax(score)])
            if not score.max() > self.q:
                break
            grown = np.sort(np.append(active, k))
            warm = theta[grown]
            refit = self.refit(grown, warm)
            stat = self.stat(current, refit)
            ok = not refit.d.blown and stat > self.q
            self.log(route, "add", [k], stat, ok, refit)
            if not ok:
                break
            active, current = grown, refit
        return active, current


SUBSETS_LIMIT = 200_000  # subsets of one size ranked by the quadratic model, at most
SUBSETS_REFIT = 4  # of which the best are refitted exactly


def _best_subsets(search: _Search, full: LMResult, k: int) -> list:
    """Candidates (route, active, fit) of k terms: the SUBSETS_REFIT subsets with the smallest
    deviance under the full fit's quadratic model, refitted exactly ([] when there are too many)."""
    from math import comb
    P = len(full.theta)
    if comb(P, k) > SUBSETS_LIMIT:
        return []
    H, theta = full.d.gn, full.theta
    b = H @ theta
    subsets = np.array(list(itertools.combinations(range(P), k)), np.int64)  # (m, k)
    Hs = H[subsets[:, :, None], subsets[:, None, :]] + 1e-12 * np.eye(k) * np.abs(np.diag(H)).max()
    bs = b[subsets]
    try:
        sol = np.linalg.solve(Hs, bs[..., None])[..., 0]
    except np.linalg.LinAlgError:
        return []
    explained = np.einsum("mi,mi->m", bs, sol)  # larger: smaller deviance
    out = []
    for m in np.argsort(-explained)[:SUBSETS_REFIT]:
        fit = search.refit(subsets[m], sol[m])
        search.log("best subsets", "refit", subsets[m], search.stat(fit, full), not fit.d.blown, fit)
        out.append(("best subset", subsets[m], fit))
    return out


def select_terms(model: Model, n_terms: int, alpha: float, names: list[str],
                 on_iteration: Callable[[Derivatives], None] | None = None, max_iter: int = 100) -> SparseFit:
    """Fit all terms, then select them by likelihood-ratio tests at level ``alpha`` (``alpha`` 0:
    keep every term) with the full fit's noise variance.

    Candidates: backward elimination from the full fit; forward selection from no term followed by
    backward elimination; and, for every size below the sparsest of those, the best few subsets
    under the full fit's quadratic model, refitted. A candidate counts if the full fit is not
    significantly better (chi^2, one degree of freedom per left-out term); the sparsest wins, the
    lower loss on a tie. (Greedy elimination alone can drop a true term that other terms imitate
    on the visited states and keep its imitators.)"""
    everything = np.arange(n_terms)
    q = float(chdtri(1, alpha)) if alpha > 0 else np.inf
    search = _Search(model, names, np.inf, q, max_iter, on_iteration)
    # The full fit is not convex: from 0, LM can stop in a poor local minimum (seen at 350x the
    # loss of the generating rule). Forward selection finds a good sparse model first (judged by
    # each model's own residual variance, as the noise variance is not known yet), and the full fit
    # starts from it: it can only improve on it.
    if alpha > 0:
        a0, f0 = search.forward(n_terms, "provisional forward", provisional=True)
        warm = np.zeros(n_terms)
        warm[a0] = f0.theta
    else:
        warm = np.zeros(n_terms)
    full = search.refit(everything, warm)
    phi = _dispersion(full.d, n_terms)
    search.phi = phi
    if alpha <= 0 or full.d.blown:
        return SparseFit(full, full, everything, search.steps, phi, search.evaluations, search.iterations, "none")
    candidates = [("backward",) + search.backward(everything, full, "backward")]

    def passes(c) -> bool:  # the full fit is not significantly better (chi^2, one dof per left-out term)
        dof = n_terms - len(c[1])
        return not c[2].d.blown and (dof == 0 or search.stat(c[2], full) <= chdtri(dof, alpha))
    # the provisional forward selection counts if the full fit does not reject it; else forward
    # selection again, judged by the full fit's noise variance
    if not passes(("", a0, f0)):
        a0, f0 = search.forward(n_terms, "forward")
    candidates.append(("forward, then backward",) + search.backward(a0, f0, "forward"))
    good = [c for c in candidates if passes(c)]
    smallest = min((len(c[1]) for c in good), default=n_terms)
    # Greedy searches are path-dependent (a term that others imitate on the visited states can go
    # first): every smaller subset is also ranked by the full fit's quadratic model and the best
    # few refitted exactly
    for k in range(1, smallest):
        found = [c for c in _best_subsets(search, full, k) if passes(c)]
        if found:
            good = found
            break
    if not good:
        # The full fit rejects every sparse model. The joint test is then not to be trusted: with many
        # left-out terms that the data do not identify (w**2 terms while w stays near 0) the statistic is
        # not chi^2 (README: 18 flies, recorded inputs, seed 3: x*(r - rbar) alone rejected at 99.7
        # against 89 on 53 dof, while the full fit's held-out cross-entropy was 0.406 against the
        # generating rule's 0.389). Bayes' information criterion, whose log(n) per term does not lean on
        # that distribution, chooses among every model refitted here (the full fit among them).
        pool = [(a, r) for a, r in search.refits if not r.d.blown]
        active, fit = min(pool, key=lambda c: (bic(c[1], len(c[0]), phi), len(c[0])))
        route = (f"BIC ({len(active)} terms, the least of {len(pool)} refitted models): the likelihood-ratio test "
                 "rejected every sparse model")
        return SparseFit(full, fit, active, search.steps, phi, search.evaluations, search.iterations, route)
    route, active, fit = min(good, key=lambda c: (len(c[1]), c[2].d.cost))
    return SparseFit(full, fit, active, search.steps, phi, search.evaluations, search.iterations, route)


def bic(fit: LMResult, n_active: int, phi: float) -> float:
    """Bayes' information criterion of a refit: its deviance (2 cost / phi) + log(n) per term."""
    return 2.0 * fit.d.cost / phi + n_active * np.log(max(fit.d.n, 2))


def intervals(d: Derivatives, theta: np.ndarray) -> tuple[np.ndarray, float]:
    """(standard errors (P,), dispersion phi) of the coefficients at an optimum, from its curvature."""
    phi = _dispersion(d, len(theta))
    if len(theta) == 0:
        return np.zeros(0), phi
    return np.sqrt(np.maximum(np.diag(_inverse(d.gn)), 0.0) * phi), phi


def _sparse_basis(V: np.ndarray) -> np.ndarray:
    """Rows spanning the columns of V (P, f): V^T in reduced row echelon form, pivots chosen by
    size (Gauss-Jordan with complete pivoting over columns)."""
    A = V.T.copy()
    f, P = A.shape
    used: list[int] = []
    for r in range(f):
        free = [c for c in range(P) if c not in used]
        sub = np.abs(A[r:, free])
        i, j = np.unravel_index(np.argmax(sub), sub.shape)
        i, c = i + r, free[j]
        A[[r, i]] = A[[i, r]]
        A[r] /= A[r, c]
        for k in range(f):
            if k != r:
                A[k] -= A[k, c] * A[r]
        used.append(c)
    A[np.abs(A) < 1e-9] = 0.0
    return A


def identifiability(d: Derivatives, names: list[str], monomials: list[str], phi: float,
                    term_rms: np.ndarray | None = None, ranges: dict | None = None,
                    exponents: list | None = None, variables: tuple = ()) -> dict:
    """The near-flat directions of the curvature ``d.gn`` over every term.

    A unit change of the coefficients along the eigenvector v moves the predictions by
    sqrt(lambda / n) RMS; v is not determined when that is below FLAT_EFFECT of the data's std or
    its 95 % interval (1.96 * sqrt(phi / lambda)) is wider than FLAT_INTERVAL. ``term_rms``: RMS of
    each monomial over the visited states; ``ranges``: variable -> (min, max) visited.
    """
    n, P = d.n, len(names)
    vals, vecs = np.linalg.eigh(d.gn)
    vals = np.maximum(vals, 0.0)
    effect = np.sqrt(vals / max(n, 1)) / max(d.scale, 1e-300)
    half = Z95 * np.sqrt(phi / np.maximum(vals, 1e-300))
    solo = np.sqrt(np.maximum(np.diag(d.gn), 0.0) / max(n, 1)) / max(d.scale, 1e-300)  # one term alone
    flat_k = [k for k in range(P) if effect[k] < FLAT_EFFECT or half[k] > FLAT_INTERVAL]
    # Eigenvectors of (nearly) equal eigenvalues mix arbitrarily; a sparse basis of the flat
    # subspace (reduced row echelon form) names as few monomials per direction as it can
    basis = _sparse_basis(vecs[:, flat_k]) if flat_k else np.zeros((0, P))
    flat = []
    for v in basis:
        v = v / np.linalg.norm(v)
        v = v * np.sign(v[np.argmax(np.abs(v))])
        curv = float(v @ d.gn @ v)
        eff = np.sqrt(max(curv, 0.0) / max(n, 1)) / max(d.scale, 1e-300)
        hw = Z95 * np.sqrt(phi / max(curv, 1e-300))
        involved = [i for i in np.argsort(-np.abs(v)) if abs(v[i]) >= 0.2][:6]
        text = " ".join(f"{v[i]:+.2f}*{monomials[i]}" for i in involved)
        weak = [i for i in involved if solo[i] < FLAT_EFFECT]
        if len(weak) == len(involved):
            reason = "each of these terms barely changes the activity on the visited states"
        else:
            reason = "these terms change the activity alike on the visited states, so their effects cancel"
        if ranges and exponents is not None:
            used = sorted({variables[j] for i in involved for j, p in enumerate(exponents[i]) if p})
            seen = ", ".join(f"{u} in [{ranges[u][0]:.3g}, {ranges[u][1]:.3g}]" for u in used if u in ranges)
            if seen:
                reason += f" ({seen})"
        flat.append({"direction": text, "terms": [names[i] for i in involved],
                     "weights": [float(v[i]) for i in involved], "effect": float(eff),
                     "ci95_halfwidth": float(hw), "reason": reason})
    flat.sort(key=lambda f: f["effect"])
    out = {"method": "eigenvectors of the Gauss-Newton curvature of the full fit (every term)",
           "flat_effect": FLAT_EFFECT, "flat_interval": FLAT_INTERVAL,
           "not_determined": flat, "determined_directions": P - len(flat), "terms": P,
           "term_effect": {names[i]: float(solo[i]) for i in range(P)}}
    if term_rms is not None:
        out["term_rms"] = {names[i]: float(term_rms[i]) for i in range(P)}
    if ranges:
        out["ranges"] = {k: [float(a), float(b)] for k, (a, b) in ranges.items()}
    return out


def _iteration_log(history: list, progress) -> Callable[[Derivatives], None]:
    """The per-iteration callback of an LM fit: appends to ``history`` and reports progress. LM
    iterations of the full fit and of every trial refit: the total is not known in advance (None),
    and a trial refit without a needed term has a high loss, so the best loss so far is reported."""
    best = [np.inf]

    def step(d: Derivatives):
        history.append({"generation": len(history) + 1, "best_loss": d.loss, "best_objective": d.loss,
                        "evaluations": len(history) + 1})
        best[0] = min(best[0], d.loss)
        if progress is not None:
            progress(len(history), None, best[0], len(history))
    return step


class GradientFit:
    """Levenberg-Marquardt Taylor fit with term selection, intervals and identifiability.

    ``model``: the simulator's derivatives on the fitting trials (``Simulator.derivatives``);
    ``describe``: optional ``(params) -> (term_rms (P,), ranges {variable: (lo, hi)})`` of the
    states the fitted rule visits (for the identifiability report's reasons).
    """

    def __init__(self, family, model: Model, alpha: float, max_iter: int = 100, describe=None, seed: int = 0):
        self.family, self.model, self.alpha, self.max_iter, self.describe = family, model, alpha, max_iter, describe
        self.seed = seed
        self.report: dict = {}

    def _run_mlp(self, start, history, checkpoint, progress) -> FitResult:
        return _fit_mlp(self, start, history, checkpoint, progress)

    def run(self, state=None, checkpoint=None, progress=None) -> FitResult:
        """The fit (seconds, no checkpoint needed: a resumed LM fit simply runs again)."""
        start = time.perf_counter()
        history: list = []
        if self.family.kind == "mlp":
            return self._run_mlp(start, history, checkpoint, progress)

        step = _iteration_log(history, progress)
        f = self.family
        names = f.names
        monomials = [f.monomial_text(e) for e in f.terms]
        # small dense algebra: BLAS threads only spin and take cores from the simulation's threads
        with threadpool_limits(limits=1, user_api="blas"):
            sp = select_terms(self.model, f.n_params, self.alpha, names, step, self.max_iter)
        params = np.zeros(f.n_params)
        params[sp.active] = sp.sparse.theta
        full = np.zeros(f.n_params)
        full[:] = sp.full.theta
        se = np.full(f.n_params, np.nan)
        s_sparse, phi = intervals(sp.sparse.d, sp.sparse.theta)
        se[sp.active] = s_sparse
        se_full, _ = intervals(sp.full.d, sp.full.theta)
        term_rms, ranges = (None, None) if self.describe is None else self.describe(full)
        ident = identifiability(sp.full.d, names, monomials, sp.phi, term_rms, ranges, list(f.terms),
                                tuple(f.variables))
        selected = np.zeros(f.n_params, bool)
        selected[sp.active] = True
        self.report = {
            "optimizer": "lm", "likelihood": sp.full.d.likelihood,
            "params_full": full.tolist(), "std_error_full": se_full.tolist(), "loss_full": sp.full.d.loss,
            "std_error": se.tolist(), "selected": selected.tolist(),
            "intervals": {"method": "Wald 95 % intervals from the Gauss-Newton curvature at the optimum of the "
                                    "selected terms, cov = phi * GN^-1", "phi": phi, "z": Z95,
                          "precision_floor": PRECISION_FLOOR},
            "term_selection": {"method": "likelihood-ratio tests (chi^2, 1 dof per term) against the noise "
                                    "variance of the full fit: backward elimination, and forward selection "
                                    "then backward elimination; the sparser wins; Bayes' information criterion "
                                    "among every refitted model when the full fit rejects them all", "route": sp.route,
                               "alpha": self.alpha,
                          "threshold": float(chdtri(1, self.alpha)) if self.alpha > 0 else None,
                          "phi_full": sp.phi, "steps": sp.steps},
            "identifiability": ident}
        elapsed = time.perf_counter() - start
        blown = sp.sparse.d.blown
        loss = WORST_LOSS if blown else sp.sparse.d.loss
        result = FitResult(params, loss, loss, history, sp.iterations, sp.evaluations, elapsed,
                           "blown" if blown else "converged")
        if checkpoint is not None:
            checkpoint({"optimizer": "lm", "params": params.tolist(), "elapsed": elapsed})
        return result


MLP_STARTS = 4  # an MLP's loss is not convex: LM from this many of the family's random initial points


def _fit_mlp(self, start, history, checkpoint, progress) -> FitResult:
    """An MLP rule: every parameter fitted by LM from MLP_STARTS initial points (the family's
    initialisation, seeded), the best kept; no selection or intervals (its weights mean nothing alone)."""
    step = _iteration_log(history, progress)
    everything = np.arange(self.family.n_params)
    fits = []
    with threadpool_limits(limits=1, user_api="blas"):
        for k in range(MLP_STARTS):
            x0 = self.family.initial(np.random.default_rng(self.seed + k))
            x0[-self.family.hidden[0] - 1:] = 0.01 * np.random.default_rng(self.seed + k).normal(
                size=self.family.hidden[0] + 1)  # output layer off 0, so that the hidden layer gets gradient
            fits.append(levenberg_marquardt(self.model, everything, x0, self.max_iter, step))
    best = min(fits, key=lambda f: f.d.cost)
    self.report = {"optimizer": "lm", "likelihood": best.d.likelihood, "starts": MLP_STARTS,
                   "start_losses": [f.d.loss for f in fits]}
    elapsed = time.perf_counter() - start
    loss = WORST_LOSS if best.d.blown else best.d.loss
    if checkpoint is not None:
        checkpoint({"optimizer": "lm", "params": best.theta.tolist(), "elapsed": elapsed})
    return FitResult(best.theta.copy(), loss, loss, history, sum(f.iterations for f in fits),
                     sum(f.evaluations for f in fits), elapsed, "blown" if best.d.blown else "converged")


def lm_state_from_json(obj) -> dict:
    """An LM fit's checkpoint, validated (``TaskError`` when damaged); a resumed LM fit runs again
    from the start (seconds, deterministic), but never over a file it cannot read."""
    from .errors import TaskError
    try:
        if obj.get("optimizer") != "lm":
            raise ValueError("not the checkpoint of a Levenberg-Marquardt fit")
        return {"params": [float(v) for v in obj["params"]], "elapsed": float(obj["elapsed"])}
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise TaskError(f"fit checkpoint is damaged ({exc!r}): start a new fit") from None


def gradient_fitter(task, family, max_iter: int = 100) -> GradientFit | None:
    """The Levenberg-Marquardt fitter ``task.fit.optimizer`` asks for on the fitting trials, or None
    for CMA-ES ("auto" falls back to CMA-ES without exact gradients, with an L1 penalty, or for an MLP,
    whose loss is not convex: on README's Oja data LM from 4 starts ended at losses 0.44-1.5, activity
    R^2 0.82, and CMA-ES reached R^2 0.998);
    ``TaskError`` naming the field when "lm" cannot be honoured."""
    from .errors import TaskError
    f = task.fit
    if f.optimizer == "cmaes" or (f.optimizer == "auto" and (f.l1 > 0 or family.kind == "mlp")):
        return None
    hooks = task.sim.derivatives(task, family)
    if hooks is None:
        if f.optimizer == "lm":
            raise TaskError(f"{task.source}: field 'fit.optimizer' is 'lm', but the '{task.sim.name}' simulator has "
                            f"no exact gradients for a {family.kind} fit of this task (objective "
                            f"'{task.objective}'): expected 'auto' or 'cmaes'")
        return None
    if f.l1 > 0:
        raise TaskError(f"{task.source}: field 'fit.l1' is {f.l1:g}: the 'lm' optimiser selects terms by "
                        "likelihood-ratio tests (fit.select_alpha) instead of a penalty: expected 0, or "
                        "fit.optimizer = 'cmaes'")
    model, describe = hooks
    fitter = GradientFit(family, model, f.select_alpha, max_iter, describe, task.seed)
    fitter.generations = max_iter
    return fitter
