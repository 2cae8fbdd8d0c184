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
