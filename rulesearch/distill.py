"""Distill a fitted black-box rule (an MLP) back into formulas.

1. Sample the rule's inputs on the states the network visits when it runs under
   the rule (the fitted trials), and the rule's output there.
2. A symbolic-regression backend proposes formulas for those samples.
3. Each formula's constants are refitted on the task loss (``refit``, the default: the
   regression fits the black box's samples, whose errors the constants would otherwise
   inherit), then simplified with sympy, its constants snapped against the task
   loss, and it is re-simulated on the task: the front reports both the
   regression error and the task loss, next to the MLP's own task loss.

A backend is one function ``(problem: Problem) -> list[Rule]``; ``BACKENDS`` maps
names to them (operon: pyoperon, offline, the default; pysr: needs Julia; gp:
rulesearch's own GP with a regression objective).

Rules of several pathways are distilled pathway by pathway (each pathway's formulas scored
with the other pathways kept at the fitted family), then joined: every formula of one
pathway's front with the selected formulas of the others.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np

from .errors import GrammarError
from .families import variable_tokens
from .fronts import FrontEntry, optimise_constants, pareto_front, readable, select_rule
from .gp import Search
from .grammar import Grammar
from .primitives import POST, PRE, SYN, TRIAL, VARIABLES
from .rules import Pathway, Rule, RuleSpace, parse_rule
from .tasks import WORST_LOSS, Evaluation, Task, pack_rules
from .vm import PackedPrograms, evaluate, interleave


class BackendUnavailable(ValueError):
    """The requested backend cannot run on this machine (the message says why and what else works)."""


@dataclass(frozen=True)
class Problem:
    """Samples of a rule to be explained by a formula over ``names``."""

    X: np.ndarray  # (n_samples, n_vars), columns in the order of ``names``
    target: np.ndarray  # (n_samples,)
    names: tuple[str, ...]
    grammar: Grammar
    max_size: int
    seed: int
    task: Task  # a one-pathway view of the task (the pathway distilled), for the gp backend's settings

    @property
    def pathway(self) -> Pathway:
        return self.task.space.pathways[0]


def _vm_variables(X: np.ndarray, names, pathway: Pathway | None = None) -> tuple:
    """Samples as VM variables: each sample is one synapse (batch = samples, 1 pre, 1 post)."""
    n = X.shape[0]
    variables = [pathway.variable(v) if pathway is not None else VARIABLES[v] for v in names]
    slots = {kind: 1 + max([v.slot for v in variables if v.kind == kind], default=-1)
             for kind in (PRE, POST, SYN, TRIAL)}
    pre, post = np.zeros((slots[PRE], n, 1)), np.zeros((slots[POST], n, 1))
    syn, trial = np.zeros((slots[SYN], n)), np.zeros((slots[TRIAL], n))
    for col, var in enumerate(variables):
        if var.kind == PRE:
            pre[var.slot, :, 0] = X[:, col]
        elif var.kind == POST:
            post[var.slot, :, 0] = X[:, col]
        elif var.kind == SYN:
            syn[var.slot] = X[:, col]
        else:
            trial[var.slot] = X[:, col]
    return pre, post, syn, trial


def rule_outputs(packed: PackedPrograms, X: np.ndarray, names, pathway: Pathway | None = None) -> np.ndarray:
    """Every packed program on every sample -> (n_programs, n_samples)."""
    return evaluate(packed, *_vm_variables(X, names, pathway))


class RegressionLoss:
    """Evaluator seam for regression: mean squared error of each rule on the samples."""

    def __init__(self, problem: Problem):
        self.variables = _vm_variables(problem.X, problem.names, problem.pathway)
        self.target = problem.target

    def __call__(self, packed: PackedPrograms) -> Evaluation:
        out = evaluate(packed, *self.variables)
        with np.errstate(over="ignore", invalid="ignore"):
            mse = np.mean((out - self.target) ** 2, axis=1)
        bad = ~np.isfinite(mse)
        return Evaluation(np.where(bad, WORST_LOSS, np.minimum(mse, WORST_LOSS)), bad)

    def rules(self, rules: list[Rule]) -> np.ndarray:
        return self(pack_rules(rules)).losses


# ---------------------------------------------------------------- backends

OPERON_SYMBOLS = {"add": "add", "sub": "sub", "mul": "mul", "div": "div", "square": "square",
                  "tanh": "tanh", "exp": "exp", "abs": "abs"}


def _parse_candidates(texts, problem: Problem) -> list[Rule]:
    """Backend output -> rules; text a backend writes is parsed by the ast-based parser like user text."""
    out = []
    for text in texts:
        try:
            out.append(parse_rule(text, problem.grammar))
        except GrammarError:
            continue  # a formula outside the grammar (cannot happen with matching symbols): skip it
    return out


def operon_backend(problem: Problem) -> list[Rule]:
    """pyoperon's NSGA-II symbolic regression on (R^2, length); the whole Pareto front."""
    from pyoperon.sklearn import SymbolicRegressor
    symbols = [OPERON_SYMBOLS[op] for op in problem.grammar.operators if op in OPERON_SYMBOLS]
    reg = SymbolicRegressor(
        allowed_symbols=",".join(symbols + ["constant", "variable"]), objectives=["r2", "length"],
        max_length=problem.max_size, max_depth=problem.grammar.max_depth + 2, generations=200,
        population_size=1000, max_evaluations=1_000_000, n_threads=os.cpu_count() or 1,
        random_state=problem.seed)
    reg.fit(problem.X, problem.target)
    # operon writes x^2 for square; everything else is Python syntax
    return _parse_candidates([reg.get_model_string(p["tree"], 12, list(problem.names)).replace("^", "**")
                              for p in reg.pareto_front_], problem)


def gp_backend(problem: Problem) -> list[Rule]:
    """rulesearch's own GP (NSGA-II on MSE and size) over the task's grammar."""
    search = replace(problem.task.search, population=1000, generations=40, target_loss=1e-20, restart_every=15)
    task = replace(problem.task, search=search)
    result = Search(task, RegressionLoss(problem), problem.seed).run()
    return [e.rule for e in result.front]


def pysr_missing_reason() -> str | None:
    """Why PySR cannot run here (None when it can)."""
    if importlib.util.find_spec("pysr") is None:
        return "PySR is not installed (pip install 'rulesearch[pysr]')"
    if not (shutil.which("julia") or os.environ.get("PYTHON_JULIAPKG_EXE")):
        return ("PySR needs a Julia runtime, and none is on PATH (PySR would try to download one, "
                "which needs internet)")
    return None


def check_backend(backend: str) -> None:
    """Raise a one-line error if ``backend`` is unknown or cannot run here."""
    if backend not in BACKENDS:
        raise ValueError(f"Invalid backend {backend!r}. Valid options: {', '.join(BACKENDS)}")
    reason = pysr_missing_reason() if backend == "pysr" else None
    if reason:
        raise BackendUnavailable(f"--backend pysr: {reason}; use --backend operon (the default) or gp")


def pysr_backend(problem: Problem) -> list[Rule]:
    """PySR's multi-population symbolic regression; its whole hall of fame."""
    check_backend("pysr")
    from pysr import PySRRegressor
    binary = [op for op in ("add", "sub", "mul", "div") if op in problem.grammar.operators]
    unary = [op for op in ("square", "cube", "tanh", "exp", "abs", "neg") if op in problem.grammar.operators]
    symbols = {"add": "+", "sub": "-", "mul": "*", "div": "/"}
    reg = PySRRegressor(binary_operators=[symbols[o] for o in binary], unary_operators=unary,
                        maxsize=problem.max_size, niterations=40, random_state=problem.seed,
                        deterministic=True, parallelism="serial", progress=False, verbosity=0)
    reg.fit(problem.X, problem.target, variable_names=list(problem.names))
    return _parse_candidates([str(e) for e in reg.equations_["sympy_format"]], problem)


BACKENDS: dict[str, Callable[[Problem], list[Rule]]] = {
    "operon": operon_backend, "gp": gp_backend, "pysr": pysr_backend}


# ---------------------------------------------------------------- distill

@dataclass(frozen=True)
class DistillResult:
    front: list[FrontEntry]  # on the task loss, simplest first; one entry selected
    regression_mse: dict  # rule text -> MSE against the black-box rule's outputs
    blackbox_loss: float  # the fitted black-box rule's task loss
    n_samples: int
    backend: str

    @property
    def selected(self) -> FrontEntry:
        return next(e for e in self.front if e.selected)


def sample_visited_states(task: Task, packed: PackedPrograms, names, n_samples: int,
                          rng: np.random.Generator, pathway: int = 0) -> np.ndarray:
    """Inputs (n_samples, len(names)) of synapses of ``pathway`` drawn from the task run under the
    rule (the simulator chooses how: every step of every trial, every update of every animal)."""
    return task.sim.visited_states(task, packed, pathway, names, n_samples, rng)


def _pathway_families(family, task: Task) -> list:
    return list(family.families) if task.space.multi else [family]


def _pathway_params(family, params: np.ndarray) -> list[np.ndarray]:
    if not hasattr(family, "families"):
        return [params]
    return [p for _, p in family._slices(params)]


def _with_pathway(blackbox: PackedPrograms, p: int, rules: list[Rule]) -> PackedPrograms:
    """Each rule (one pathway's formula) in pathway ``p``, the other pathways' black-box programs
    kept: one individual per rule."""
    n = len(rules)
    parts = []
    for q in range(blackbox.parts):
        if q == p:
            parts.append(pack_rules(rules))
        else:
            c0, c1 = blackbox.code_start[q], blackbox.code_start[q + 1]
            k0, k1 = blackbox.const_start[q], blackbox.const_start[q + 1]
            lc, lk = c1 - c0, k1 - k0
            parts.append(PackedPrograms(np.tile(blackbox.code[c0:c1], n), np.tile(blackbox.arg[c0:c1], n),
                                        np.tile(blackbox.consts[k0:k1], n), np.arange(n + 1, dtype=np.int64) * lc,
                                        np.arange(n + 1, dtype=np.int64) * lk, blackbox.depth))
    return interleave(parts)


def _distill_pathway(task: Task, blackbox: PackedPrograms, p: int, family, params, backend, max_size,
                     n_samples, rng, seed, refit: bool = True) -> tuple[list[Rule], dict, np.ndarray]:
    """Formulas for pathway ``p``: (rules of one pathway, rule text -> regression MSE, task losses
    with the other pathways kept at the black box)."""
    pathway = task.space.pathways[p]
    # the terminals the family reads (an input may be an expression such as r - rbar)
    used = {v for var in family.variables for kind, v in variable_tokens(var, pathway.grammar) if kind == "var"}
    names = tuple(n for n in pathway.grammar.names if n in used)
    X = sample_visited_states(task, blackbox, names, n_samples, rng, p)
    target = rule_outputs(family.pack(params[None]), X, names, pathway)[0]
    grammar = replace(pathway.grammar, max_size=max(max_size, pathway.grammar.max_size))
    one = RuleSpace((replace(pathway, grammar=grammar),))
    problem = Problem(X, target, names, grammar, max_size, seed,
                      replace(task, space=one, etas=(task.etas[p],)))
    candidates = [Rule(r.exprs, one) for r in BACKENDS[backend](problem)]
    if not candidates:
        raise ValueError(f"backend {backend!r} returned no formula within the grammar"
                         + (f" (pathway '{pathway.name}')" if task.space.multi else ""))

    def task_loss(rules):
        return task.evaluate_packed(_with_pathway(blackbox, p, rules)).losses
    rules = {}
    for rule in candidates:
        if refit and rule.constants():
            start = float(task_loss([rule])[0])
            if start < WORST_LOSS:
                rule = optimise_constants(rule, task_loss, start, smooth=task.sim.smooth_loss) or rule
        try:
            rule = readable(rule.canonical(), task_loss, task.search.snap_tol)
        except ValueError:
            pass
        rules.setdefault(rule.text(), rule)
    rules = list(rules.values())
    mse = RegressionLoss(problem).rules(rules)
    return rules, {r.text(): float(m) for r, m in zip(rules, mse)}, task_loss(rules)


def distill(task: Task, family, params: np.ndarray, backend: str = "operon", max_size: int = 25,
            n_samples: int = 2000, seed: int = 0, refit: bool = True) -> DistillResult:
    """Explain ``family``'s rule at ``params`` by formulas; ``task`` is the task it was fitted on.
    ``refit``: tune each formula's constants on the task loss before snapping and selecting."""
    check_backend(backend)
    rng = np.random.default_rng(seed)
    packed = family.pack(params[None])
    per_pathway = []
    for p, (fam, par) in enumerate(zip(_pathway_families(family, task), _pathway_params(family, params))):
        per_pathway.append(_distill_pathway(task, packed, p, fam, par, backend, max_size, n_samples, rng, seed,
                                            refit))
    if not task.space.multi:
        rules, mse, losses = per_pathway[0]  # one pathway: the same texts in the task's space
        rules = [Rule(r.exprs, task.space) for r in rules]
    else:  # every formula of one pathway with the others' best (by task loss) formulas
        best = [rs[int(np.argmin(ls))] for rs, _, ls in per_pathway]
        joined = {}
        for p, (rs, m, _) in enumerate(per_pathway):
            for r in rs:
                parts = [r if q == p else best[q] for q in range(len(best))]
                rule = Rule(tuple(x.exprs[0] for x in parts), task.space)
                joined.setdefault(rule.text(), (rule, float(np.mean(
                    [per_pathway[q][1][x.text()] for q, x in enumerate(parts)]))))
        rules = [r for r, _ in joined.values()]
        mse = {t: m for t, (_, m) in joined.items()}
        losses = task.evaluate(rules)
    entries = pareto_front([(float(l), r.complexity, r) for l, r in zip(losses, rules) if l < WORST_LOSS])
    if not entries:
        raise ValueError(f"every formula from backend {backend!r} blows up on task '{task.name}'")
    front = [FrontEntry(r, l, c) for l, c, r in entries]
    chosen = select_rule(front, task.search.selection_rel_tol, task.search.selection_abs_tol)
    front = [FrontEntry(e.rule, e.loss, e.complexity, i == chosen) for i, e in enumerate(front)]
    return DistillResult(front, {e.rule.text(): mse[e.rule.text()] for e in front},
                         float(task.evaluate_packed(packed).losses[0]), n_samples, backend)
