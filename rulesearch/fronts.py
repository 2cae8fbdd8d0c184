"""Fronts of rules and what every search shares: Pareto fronts, selection, constant
optimisation and snapping, and graceful interruption (used by gp, fit and distill)."""
from __future__ import annotations

import signal
import threading
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from scipy.optimize import minimize

from .rules import Rule, snap_constants
from .tasks import WORST_LOSS


@dataclass(frozen=True)
class FrontEntry:
    rule: Rule
    loss: float
    complexity: int
    selected: bool = False

    @property
    def expression(self) -> str:
        return self.rule.text()

    @property
    def latex(self) -> str:
        return self.rule.latex()


@dataclass
class EvolveResult:
    """What a search returns: the Pareto front (simplest first) and the selected rule."""

    front: list[FrontEntry]
    history: list[dict]
    evaluations: int
    generations: int
    elapsed: float
    seed: int
    stopped: str
    blown: int = 0  # evaluations whose weights blew up
    selection: dict | None = None  # how the selected rule was chosen (noise-aware selection: its numbers)

    @property
    def selected(self) -> FrontEntry:
        return next(e for e in self.front if e.selected)


def pareto_front(entries: Sequence[tuple[float, int, object]]) -> list:
    """Non-dominated (loss, complexity, item) triples, simplest first."""
    best = float("inf")
    front = []
    for loss, comp, item in sorted(entries, key=lambda e: (e[1], e[0])):
        if loss < best:
            front.append((loss, comp, item))
            best = loss
    return front


def select_rule(front: Sequence[FrontEntry], rel_tol: float, abs_tol: float) -> int:
    """Index of the simplest entry whose loss is within ``best*(1+rel_tol) + abs_tol``."""
    best = min(e.loss for e in front)
    limit = best * (1 + rel_tol) + abs_tol
    return min((i for i, e in enumerate(front) if e.loss <= limit),
               key=lambda i: (front[i].complexity, front[i].loss))


def select_within_noise(front: Sequence[FrontEntry], units: np.ndarray, se_multiple: float = 1.0,
                        unit_name: str = "units") -> tuple[int, dict]:
    """Index of the simplest entry whose loss is within the sampling noise of the best, and the numbers.

    ``units`` (len(front), n): each entry's loss split into n independent units (animals, recorded
    trials) that sum to it. Against the best entry b, entry i's excess ``D_i = sum_u (L_iu - L_bu)``
    has the standard error ``sqrt(n) * std_u(L_iu - L_bu)`` (paired over units, ddof 1); entries
    with ``D_i <= se_multiple * SE_i`` qualify. Entries with a non-finite unit loss never do.
    """
    units = np.asarray(units, float)
    if units.shape[0] != len(front) or units.ndim != 2:
        raise ValueError(f"units must be (len(front), n_units) = ({len(front)}, n); got {units.shape}")
    n = units.shape[1]
    finite = np.all(np.isfinite(units), axis=1)
    if not finite.any():
        return select_rule(front, 0.0, 0.0), {"method": "noise", "note": "every rule blew up"}
    totals = np.where(finite, units.sum(axis=1), np.inf)
    best = int(np.argmin(totals))
    d = np.where(finite[:, None], units - units[best], 0.0)
    excess = np.where(finite, d.sum(axis=1), np.inf)
    se = np.sqrt(n) * d.std(axis=1, ddof=1) if n > 1 else np.zeros(len(front))  # one unit: no noise estimate
    ok = finite & (excess <= se_multiple * se)
    ok[best] = True
    index = min(np.flatnonzero(ok), key=lambda i: (front[i].complexity, front[i].loss))
    info = {"method": "noise", "se_multiple": se_multiple, "units": unit_name, "n_units": n,
            "best": front[best].expression, "best_loss": float(totals[best]),
            "excess": [float(v) if np.isfinite(v) else None for v in excess],
            "se": [float(v) if np.isfinite(v) else None for v in se],
            "within_noise": [bool(v) for v in ok]}
    return int(index), info


INDISTINGUISHABLE_LEVEL = 0.05  # two-sided: a front rule is "distinguishable" at the 5 % level


def indistinguishable(units: np.ndarray, selected: int, expressions: Sequence[str] = (),
                      unit_name: str = "units", level: float = INDISTINGUISHABLE_LEVEL) -> dict:
    """Which front rules the held-out data cannot tell apart from the selected one.

    ``units`` (n_rules, n): each front rule's held-out loss split into n independent units (animals,
    recorded trials) that sum to it; ``selected``: the selected rule's row. Rule i's held-out
    difference ``D_i = sum_u (L_iu - L_su)`` has the paired standard error
    ``SE_i = sqrt(n) * std_u(L_iu - L_su)`` (ddof 1). Verdicts: "indistinguishable" when
    ``|D_i| <= t * SE_i`` with t the two-sided Student quantile at ``level`` on n - 1 degrees of
    freedom (2.11 for 18 animals, 12.7 for 2 trials: few units can tell little apart), else
    "worse" or "better"; "blown" for a rule with a non-finite unit loss; "selected" for the row
    itself. With one unit there is no noise estimate: every other verdict is "unknown".
    Returns a JSON-able dict (per-rule lists in front order).
    """
    from scipy.stats import t as student_t  # scipy.stats costs 0.3 s to import: only when reporting

    units = np.asarray(units, float)
    if units.ndim != 2 or not 0 <= selected < units.shape[0]:
        raise ValueError(f"units must be (n_rules, n_units) with row {selected}; got {units.shape}")
    n = units.shape[1]
    finite = np.all(np.isfinite(units), axis=1)
    crit = float(student_t.ppf(1 - level / 2, n - 1)) if n > 1 else float("inf")
    verdicts, diffs, ses, losses = [], [], [], []
    for i in range(units.shape[0]):
        losses.append(float(units[i].sum()) if finite[i] else None)
        if i == selected or not finite[i] or not finite[selected]:
            verdicts.append("selected" if i == selected else "blown" if not finite[i] else "unknown")
            diffs.append(0.0 if i == selected else None)
            ses.append(0.0 if i == selected else None)
            continue
        d = units[i] - units[selected]
        big_d, se = float(d.sum()), float(np.sqrt(n) * d.std(ddof=1)) if n > 1 else float("nan")
        diffs.append(big_d)
        ses.append(se if n > 1 else None)
        if n < 2:
            verdicts.append("unknown")
        elif abs(big_d) <= crit * se:
            verdicts.append("indistinguishable")
        else:
            verdicts.append("worse" if big_d > 0 else "better")
    names = list(expressions) or [str(i) for i in range(units.shape[0])]
    return {"method": "paired held-out loss differences against the selected rule", "units": unit_name,
            "n_units": n, "level": level, "critical_t": crit if np.isfinite(crit) else None,
            "selected": names[selected], "expressions": names, "heldout_loss": losses, "difference": diffs, "se": ses,
            "verdict": verdicts, "rules": [e for e, v in zip(names, verdicts) if v == "indistinguishable"]}


# ---------------------------------------------------------------- the search

class GracefulInterrupt:
    """Ctrl-C asks the search to stop after the current generation (whose checkpoint is then
    the last one written); a second Ctrl-C interrupts at once. Only in the main thread."""

    def __init__(self):
        self.requested = False
        self._previous = None
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def restore(self):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None


def readable(rule: Rule, loss: Callable[[list[Rule]], np.ndarray], snap_tol: float) -> Rule:
    """Snap constants (loss within ``snap_tol``, relative), then take the canonical form if it
    is no larger; twice, since canonical forms combine constants that can then snap
    (0.5*2*x -> 1.0*x -> x)."""
    for _ in range(2):
        if rule.constants():
            rule = snap_constants(rule, loss, snap_tol)
        try:
            canonical = rule.canonical()
        except ValueError:
            break  # not expressible in the grammar's operators: keep the tree as found
        if canonical.complexity > rule.complexity:
            break
        rule = canonical
    return rule


def optimise_constants(rule: Rule, loss: Callable[[list[Rule]], np.ndarray], start_loss: float,
                       max_iter: int = 40, smooth: bool = True) -> Rule | None:
    """Tune the rule's constants: L-BFGS-B with batched central differences (one call per step)
    when the loss is smooth in them, else a compass search (``smooth`` False: losses of spiking
    networks change in jumps as spikes appear or vanish, so finite differences say nothing).

    Returns the improved rule, or None when no improvement was found.
    """
    if not smooth:
        return _compass_search(rule, loss, start_loss, max_iter)
    c0 = np.array(rule.constants(), float)
    n = len(c0)
    best = {"loss": start_loss, "c": None}

    def f_and_grad(c):
        h = 1e-5 * np.maximum(1.0, np.abs(c))
        batch = [c] + [c + h * e for e in np.eye(n)] + [c - h * e for e in np.eye(n)]
        losses = np.asarray(loss([rule.with_constants(b) for b in batch]), float)
        f = losses[0]
        if f < best["loss"]:
            best.update(loss=f, c=c.copy())
        if f >= WORST_LOSS or not np.all(losses < WORST_LOSS):
            return float(f), np.zeros(n)
        return float(f), (losses[1:n + 1] - losses[n + 1:]) / (2 * h)

    minimize(f_and_grad, c0, jac=True, method="L-BFGS-B", options={"maxiter": max_iter})
    return None if best["c"] is None else rule.with_constants(best["c"])


COMPASS_STEP = 0.25  # first step of each constant, relative to max(|c|, 0.1)
COMPASS_MAX_ITER = 10  # the steps have halved to 0.1 % of the first by then


def _compass_search(rule: Rule, loss: Callable[[list[Rule]], np.ndarray], start_loss: float,
                    max_iter: int) -> Rule | None:
    """Derivative-free: each iteration tries every constant one step up and down in one batched call,
    moves to the best point if it improves the loss, else halves the steps."""
    c = np.array(rule.constants(), float)
    n = len(c)
    step = COMPASS_STEP * np.maximum(np.abs(c), 0.1)
    best, moved = start_loss, False
    for _ in range(min(max_iter, COMPASS_MAX_ITER)):
        batch = [c + s * step[i] * e for i, e in enumerate(np.eye(n)) for s in (1.0, -1.0)]
        losses = np.asarray(loss([rule.with_constants(b) for b in batch]), float)
        k = int(np.argmin(losses))
        if losses[k] < best:
            best, c, moved = float(losses[k]), batch[k], True
        else:
            step = step / 2
    return rule.with_constants(c) if moved else None
