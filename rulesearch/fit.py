"""Fit a parametric rule family by CMA-ES, and score a fit on held-out trials.

Each CMA-ES generation is one population evaluation through the evaluator seam
(``evaluate(packed) -> Evaluation``). The checkpoint is the log of every
generation's losses: CMA-ES is deterministic given its seed and the losses it
was told, so a resumed fit replays the log through a fresh ``cma`` object
(no simulation) and continues exactly where the uninterrupted fit would be.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from threadpoolctl import threadpool_limits

from .errors import GrammarError, TaskError
from .families import DoubletFamily, MLPFamily, PathwayFamilies, TaylorFamily
from .fronts import GracefulInterrupt
from .rules import parse_rule
from .tasks import WORST_LOSS, Task


def make_family(task: Task):
    """The family the task's ``[fit]`` section describes, one per pathway (parameters of several
    pathways prefixed ``ff.``, ``lat.``); ``TaskError`` naming the field if invalid."""
    f = task.fit
    if f.family == "doublet":
        if "tau_pre_ms" not in task.sim.rule_parameters:
            raise TaskError(f"{task.source}: field 'fit.family' is 'doublet', a spike-pair rule with trace time "
                            f"constants, which the '{task.sim.name}' simulator does not run (it needs "
                            "event-driven rules)")
        try:
            return DoubletFamily(task.space)
        except ValueError as exc:
            raise TaskError(f"{task.source}: section [fit]: {exc}") from None
    families = []
    for p in task.space.pathways:
        variables = f.variables or p.grammar.names
        try:
            if f.family == "taylor":
                families.append(TaylorFamily(p.grammar, variables, f.max_power, f.exclude))
            else:
                families.append(MLPFamily(p.grammar, variables, f.hidden, f.activation))
        except ValueError as exc:
            where = f" (pathway '{p.name}')" if task.space.multi else ""
            raise TaskError(f"{task.source}: section [fit]{where}: {exc}") from None
    return families[0] if not task.space.multi else PathwayFamilies(tuple(families), task.space)


# The checkpoint holds every generation's losses, so writing it costs O(generations):
# every 20th generation (and at the end, also after Ctrl-C) keeps that negligible.
CHECKPOINT_EVERY = 20


@dataclass
class FitState:
    generation: int = 0
    evaluations: int = 0
    elapsed: float = 0.0
    told: list = field(default_factory=list)  # per generation: the penalised losses told to CMA-ES
    best_params: list | None = None
    best_objective: float = float("inf")  # penalised
    best_loss: float = float("inf")  # task loss of best_params
    history: list = field(default_factory=list)


@dataclass(frozen=True)
class FitResult:
    params: np.ndarray  # (n_params,)
    loss: float  # task loss on the fitted trials
    objective: float  # loss + l1 * sum|params|
    history: list
    generations: int
    evaluations: int
    elapsed: float
    stopped: str  # "generations" | "target_loss" | "converged: <cma criterion>" | "interrupted"


class FamilyFit:
    """CMA-ES over a family's parameters on a task (seeded; resumable from its JSON state)."""

    def __init__(self, task: Task, family, evaluate: Callable | None = None, seed: int = 0,
                 generations: int | None = None):
        self.task, self.family, self.seed = task, family, seed
        self.settings = task.fit
        self.generations = self.settings.generations if generations is None else generations
        self._evaluate_packed = evaluate or task.evaluate_packed

    def _strategy(self):
        import cma  # 0.5 s of imports (scipy.stats) that commands without CMA-ES need not pay

        x0 = self.family.initial(np.random.default_rng(self.seed))
        # cma treats seed 0 as "seed from the clock"; shift so every rulesearch seed is fixed.
        opts = {"seed": self.seed + 1, "popsize": self.settings.popsize, "verbose": -9,
                "verb_log": 0, "verb_disp": 0, "tolfun": 1e-14, "tolx": 1e-5}
        return cma.CMAEvolutionStrategy(x0, self.settings.sigma0, opts)

    def losses(self, params: np.ndarray) -> np.ndarray:
        """Task loss per parameter vector (n, n_params) -> (n,), ``WORST_LOSS`` for blow-ups."""
        return self._evaluate_packed(self.family.pack(params)).losses

    def run(self, state: FitState | None = None, checkpoint: Callable[[dict], None] | None = None,
            progress: Callable[[int, int, float, int], None] | None = None) -> FitResult:
        start = time.perf_counter()
        state = state or FitState()
        es = self._strategy()
        for told in state.told:  # replay a resumed fit: same samples, same updates, no simulation
            es.tell(es.ask(), told)
        elapsed_before = state.elapsed
        l1 = self.settings.l1
        stopped = "generations"
        interrupt = GracefulInterrupt()
        # CMA-ES's eigendecomposition runs on BLAS threads that keep spinning after each call and
        # take cores from the simulator's threads: one BLAS thread made fly fits 24 % faster
        blas = threadpool_limits(limits=1, user_api="blas")
        try:
            while state.generation < self.generations:
                if interrupt.requested:
                    stopped = "interrupted"
                    break
                if state.best_loss <= self.settings.target_loss:
                    stopped = "target_loss"
                    break
                if es.stop():
                    stopped = "converged: " + ", ".join(es.stop())
                    break
                X = np.array(es.ask())
                loss = self.losses(X)
                objective = np.where(loss >= WORST_LOSS, WORST_LOSS, loss + l1 * np.abs(X).sum(axis=1))
                told = [float(v) for v in objective]
                es.tell(list(X), told)
                state.told.append(told)
                k = int(np.argmin(objective))
                if objective[k] < state.best_objective:
                    state.best_objective, state.best_loss = float(objective[k]), float(loss[k])
                    state.best_params = [float(v) for v in X[k]]
                state.generation += 1
                state.evaluations += len(X)
                state.elapsed = elapsed_before + time.perf_counter() - start
                state.history.append({"generation": state.generation, "best_loss": state.best_loss,
                                      "best_objective": state.best_objective,
                                      "median_objective": float(np.median(objective)),
                                      "sigma": float(es.sigma), "evaluations": state.evaluations})
                if checkpoint is not None and state.generation % CHECKPOINT_EVERY == 0:
                    checkpoint(state_to_json(state))
                if progress is not None:
                    progress(state.generation, self.generations, state.best_loss, state.evaluations)
        except KeyboardInterrupt:
            stopped = "interrupted"
        finally:
            interrupt.restore()
            blas.restore_original_limits()
        state.elapsed = elapsed_before + time.perf_counter() - start
        if checkpoint is not None:
            checkpoint(state_to_json(state))
        if state.best_params is None:  # zero generations: report the starting point
            x0 = self.family.initial(np.random.default_rng(self.seed))
            state.best_params = [float(v) for v in x0]
            state.best_loss = float(self.losses(x0[None])[0])
            state.best_objective = state.best_loss + l1 * float(np.abs(x0).sum())
        return FitResult(np.array(state.best_params), state.best_loss, state.best_objective,
                         state.history, state.generation, state.evaluations, state.elapsed, stopped)


def state_to_json(state: FitState) -> dict:
    return {"generation": state.generation, "evaluations": state.evaluations, "elapsed": state.elapsed,
            "told": state.told, "best_params": state.best_params, "best_objective": state.best_objective,
            "best_loss": state.best_loss, "history": state.history}


def state_from_json(obj: dict) -> FitState:
    try:
        return FitState(int(obj["generation"]), int(obj["evaluations"]), float(obj["elapsed"]),
                        [[float(v) for v in g] for g in obj["told"]],
                        None if obj["best_params"] is None else [float(v) for v in obj["best_params"]],
                        float(obj["best_objective"]), float(obj["best_loss"]), list(obj["history"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise TaskError(f"fit checkpoint is damaged ({exc!r}): start a new fit") from None


# ---------------------------------------------------------------- held-out trials

def split_trials(task: Task, holdout: float) -> tuple[Task, Task | None]:
    """(fitting task, held-out task or None), as the task's simulator splits its data: recorded
    trials (the last ``holdout`` fraction), or every k-th trial of every animal (choices)."""
    return task.split(holdout)


def r_squared(predicted: np.ndarray, true: np.ndarray) -> float:
    """1 - SS_res / SS_tot with one mean per column (last axis); NaN entries of ``true`` skipped.

    Arrays (..., columns), e.g. weights (trials, steps, synapses): every synapse is
    compared with its own mean over trials and time, so a constant offset is not
    explained for free.
    """
    p = predicted.reshape(-1, predicted.shape[-1])
    t = true.reshape(-1, true.shape[-1])
    ok = np.isfinite(t)
    n = ok.sum(axis=0)
    mean = np.where(ok, t, 0.0).sum(axis=0) / np.maximum(n, 1)  # columns never recorded: no mean needed
    ss_tot = np.sum(np.where(ok, (t - mean) ** 2, 0.0))
    ss_res = np.sum(np.where(ok, (p - t) ** 2, 0.0))
    if not np.isfinite(ss_res):
        return float("-inf")
    return float(1.0 - ss_res / ss_tot) if ss_tot > 0 else float("nan")


def true_rule(task: Task, text: str | None, out: dict):
    """The data's ground-truth rule parsed against the task's pathways; None (and the reason in
    ``out``) when the data name none or one the grammar cannot express."""
    if not text:
        return None
    try:
        return parse_rule(text, task.space)
    except GrammarError as exc:
        out["true_rule_error"] = str(exc)
        return None


def heldout_scores(test: Task, packed, true_rule_text: str | None) -> dict:
    """Scores of one fitted rule (``packed``: one individual) on the held-out view: the task loss
    and the simulator's own scores; against the data's true rule when it names one."""
    out: dict = {}
    truth = true_rule(test, true_rule_text, out)
    scores = {**test.sim.heldout_scores(test, packed, truth), **out}
    if "blown" in scores:  # the simulator reports blow-ups itself (and its scores say what they mean)
        return scores
    scores["blown"] = bool(test.evaluate_packed(packed).blown[0])
    if scores["blown"]:
        # a rule whose weights left the bound has no held-out loss or R^2 worth printing (the loss
        # would be the worst-loss marker, the R^2 of a truncated trajectory): keep what says so
        keep = ("trials", "decisions", "encounters", "true_rule", "true_rule_error", "blown")
        scores = {k: v for k, v in scores.items() if k in keep} | {"loss": None}
    return scores
