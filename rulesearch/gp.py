"""Multi-objective genetic programming over rules (DEAP trees, NSGA-II on loss and complexity).

DEAP stays inside this module: its trees and variation operators are used, its
``creator`` globals and its eval-based ``compile``/``from_string`` are not.
Individuals reach the simulators only as packed VM programs.
"""
from __future__ import annotations

import functools
import gc
import hashlib
import itertools
import random
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import sympy
from deap import base, gp, tools
from deap.tools import emo

from . import vm
from .grammar import Grammar
from .lockstep import run_lockstep
from .primitives import PRIMITIVES, VARIABLES
from .errors import GrammarError
from .fronts import (
    EvolveResult,
    FrontEntry,
    GracefulInterrupt,
    optimise_constants,
    pareto_front,
    readable,
    select_rule,
    select_within_noise,
)
from .rules import Rule, RuleSpace, negate, rule_from_sympy, simplify_identities, sympy_text
from .tasks import AUTO_HELDOUT_BELOW, WORST_LOSS, Task, pack_rules

PROBE_SEED = 20240611
# L-BFGS iterations on constants: few during the search (it runs on many rules),
# many when polishing the final front (few rules, and their numbers are the result).
SEARCH_CONSTANT_ITERATIONS, FINAL_CONSTANT_ITERATIONS = 8, 100
NEAR_FRONT_CANONICAL = 3  # dominated rules per generation given their canonical tree (``_near_front``)
EXPLORE_TOP = 4  # population rules (best loss first) whose neighbourhood is explored per generation
EXPLORE_MAX_SIZE = 15  # ... if they have at most this many nodes (cost grows with size)
EXPLORE_PAIRS_MAX_SIZE = 5  # rules this small also have each leaf replaced by a pair of terminals
ENUMERATE_MAX_SIZE = 5  # every constant-free rule this small is evaluated at the start
SWEEP_ROUNDS = 2  # several pathways: rounds of coordinate-wise enumeration (Search._sweep_pathways)
EXPLORE_TERM_MAX_SIZE = 7  # rules this small also get an added term +-0.1 * terminal
# ... or, with several pathways, +-0.1 * any monomial of up to this degree (c*x*y -> c*x*y - 0.1*y*y*w):
# a pathway's rule is then often poor until a term it lacks is added, because its partner pathway
# already depends on it (measured on tasks/pca-network.toml: without it no seed of 1-3 found Oja's rule)
EXPLORE_TERM_DEGREE_PATHWAYS = 3
IMMIGRANTS = 0.05  # fraction of offspring replaced by new random rules (against premature convergence)
CONTEXT = 0.5  # several pathways: fraction of varied children whose other pathways are the best rule's
PROBE_SHAPE = (8, 8)  # (n_out, n_in) synapses on which semantics are compared
PROBE_TRIALS = 3  # values of the per-trial variables (reward, expected reward) probed


# ---------------------------------------------------------------- DEAP glue

class RuleFitness(base.Fitness):
    weights = (-1.0, -1.0)  # minimise (loss, complexity)


class Individual(list):
    """One DEAP tree per plastic pathway, with a two-objective fitness."""

    def __init__(self, trees=()):
        super().__init__(trees)
        self.fitness = RuleFitness()
        self.optimised = False
        self.key = None  # semantic key, set on evaluation


def _placeholder(*args):  # never called: rules are run by the VM, not by Python
    raise RuntimeError("rules are evaluated by the VM")


def _random_constant(low: float, high: float) -> float:
    return round(gp.random.uniform(low, high), 2)  # the search's generator while it runs (_own_random)


@dataclass(frozen=True)
class Language:
    """A grammar turned into a DEAP primitive set and the token <-> node maps."""

    grammar: Grammar
    pset: gp.PrimitiveSet
    constant_class: type

    @classmethod
    def from_grammar(cls, grammar: Grammar) -> "Language":
        pset = gp.PrimitiveSet("rule", 0)
        for name in grammar.operators:
            pset.addPrimitive(_placeholder, PRIMITIVES[name].arity, name=name)
        for t in grammar.terminals:
            pset.addTerminal(t.name, name=t.name)
        low, high = grammar.constant_range or (-1.0, 1.0)
        func = functools.partial(_random_constant, low, high)
        if grammar.constant_range is not None:
            pset.addEphemeralConstant("const", func)
            const_class = pset.mapping["const"]
        else:
            const_class = gp.MetaEphemeral("const", func)
        return cls(grammar, pset, const_class)

    @functools.cached_property
    def _shared_tokens(self) -> dict:
        """Token of each operator and variable node, by identity: DEAP trees share these node objects
        (constants are instances of their own), and a lookup is cheaper than type tests per node."""
        nodes = [n for ns in self.pset.primitives.values() for n in ns] + \
                [n for ns in self.pset.terminals.values() for n in ns if not isinstance(n, type)]
        return {id(n): ("op", n.name) if isinstance(n, gp.Primitive) else ("var", n.name) for n in nodes}

    def to_tokens(self, tree) -> tuple:
        shared = self._shared_tokens
        out = []
        for node in tree:
            token = shared.get(id(node))
            if token is None:
                if isinstance(node, gp.Primitive):
                    token = ("op", node.name)
                elif isinstance(type(node), gp.MetaEphemeral):
                    token = ("const", float(node.value))
                else:
                    token = ("var", node.name)
            out.append(token)
        return tuple(out)

    def to_tree(self, tokens) -> gp.PrimitiveTree:
        nodes = []
        for kind, value in tokens:
            if kind == "const":
                node = self.constant_class.__new__(self.constant_class)
                node.value = float(value)
                nodes.append(node)
            else:
                nodes.append(self.pset.mapping[value])
        return gp.PrimitiveTree(nodes)


@dataclass(frozen=True)
class Languages:
    """One ``Language`` per pathway of a rule space: individuals <-> rules."""

    space: RuleSpace
    langs: tuple[Language, ...]

    @classmethod
    def from_space(cls, space: RuleSpace) -> "Languages":
        return cls(space, tuple(Language.from_grammar(p.grammar) for p in space.pathways))

    def rule(self, ind: Individual) -> Rule:
        return Rule(tuple(lang.to_tokens(t) for lang, t in zip(self.langs, ind)), self.space)

    def individual(self, rule: Rule) -> Individual:
        return Individual(lang.to_tree(e) for lang, e in zip(self.langs, rule.exprs))


# ---------------------------------------------------------------- semantics

@functools.lru_cache(maxsize=4)
def _probe_arrays(n_out: int = PROBE_SHAPE[0], n_in: int = PROBE_SHAPE[1]):
    rng = np.random.default_rng(PROBE_SEED)
    slots = {k: 1 + max([v.slot for v in VARIABLES.values() if v.kind == k], default=-1)
             for k in range(4)}
    pre = rng.uniform(-2, 2, size=(slots[0], 1, n_in))
    post = rng.uniform(-2, 2, size=(slots[1], 1, n_out))
    syn = rng.uniform(-2, 2, size=(slots[2], n_out * n_in))
    trial = rng.uniform(-2, 2, size=(slots[3], PROBE_TRIALS))
    # the same synapses in every probe trial: only per-trial variables (r, rbar) differ
    return (np.repeat(pre, PROBE_TRIALS, axis=1), np.repeat(post, PROBE_TRIALS, axis=1),
            np.tile(syn, (1, PROBE_TRIALS)), trial)


def semantic_keys(rules: Sequence[Rule]) -> list[str]:
    """A digest of each rule's values on fixed probe inputs: equal functions, equal keys."""
    if not rules:
        return []
    n_path = len(rules[0].exprs)
    values = vm.evaluate(pack_rules(rules), *_probe_arrays())
    values = np.nan_to_num(values, nan=1e300, posinf=1e300, neginf=-1e300)
    # 8 significant digits: reorderings of sums round to the same key.
    scale = np.maximum(np.abs(values).max(axis=1, keepdims=True), 1e-12)
    rounded = np.round(values / scale, 8) * np.round(scale, 8) + 0.0
    rounded = rounded.reshape(len(rules), n_path * values.shape[1])
    return [hashlib.blake2b(row.tobytes(), digest_size=12).hexdigest() for row in rounded]


@dataclass
class _State:
    population: list
    archive: dict  # semantic key -> (loss, complexity, tokens)
    cache: dict  # semantic key -> loss
    history: list
    generation: int = 0
    evaluations: int = 0
    elapsed: float = 0.0
    pruned: set = field(default_factory=set)  # front rules whose neighbourhood was evaluated
    canonical: set = field(default_factory=set)  # archive keys already given their canonical tree
    blown: int = 0  # evaluations whose weights blew up


def _expanded_text(rule: Rule) -> str:
    """The rule's expanded text (constants to 6 digits, as printed): equal for trees that compute the
    same polynomial; the plain text where sympy cannot expand it."""
    try:
        return "; ".join(sympy_text(sympy.expand(e)) for e in rule.to_sympy())
    except (TypeError, ValueError, RecursionError):
        return rule.text()


def _quiet(text: str) -> None:
    """The default stage callback: say nothing."""


class Search:
    """NSGA-II over (loss, complexity) with semantic de-duplication and constant optimisation."""

    def __init__(self, task: Task, evaluate: Callable | None = None, seed: int = 0,
                 population: int | None = None, generations: int | None = None, heldout: Task | None = None,
                 seeds: Sequence[Rule] = (), checkpoint_seconds: float = 0.0,
                 on_stage: Callable[[str], None] | None = None):
        """seeds: rules the first population starts with; checkpoint_seconds: least time between two
        checkpoints (0: after every generation); the last generation's and an interrupted run's are
        always written."""
        self.task = task
        self.seeds = tuple(seeds)[:population or task.search.population]
        self.checkpoint_seconds = checkpoint_seconds
        self._checkpointed = (-1, -float("inf"))  # (generation, perf_counter) of the last checkpoint
        self.on_stage = on_stage or _quiet  # told the long steps after the generations
        self.heldout = heldout  # the held-out view (search.selection = "heldout" compares the front on it)
        self.space = task.space
        self.lang = Languages.from_space(task.space)
        self.n_path = len(task.space)
        self.seed = seed
        self.rng = random.Random(seed)  # every random choice of the search, DEAP's included (_own_random)
        self.mu = population or task.search.population
        self.explore_top = EXPLORE_TOP
        self.generations = task.search.generations if generations is None else generations
        self._evaluate_packed = evaluate or task.evaluate_packed
        self.toolboxes = [self._toolbox(lang) for lang in self.lang.langs]

    # -- operators
    def _toolbox(self, lang: Language) -> base.Toolbox:
        """Tree generation, crossover and mutations of one pathway's grammar."""
        g, pset = lang.grammar, lang.pset
        tb = base.Toolbox()
        tb.register("expr", gp.genHalfAndHalf, pset=pset, min_=1, max_=3)
        tb.register("expr_mut", gp.genFull, min_=0, max_=2)
        limits = [_static_limit(len, g.max_size), _static_limit(lambda t: t.height, g.max_depth)]
        mutations = [functools.partial(gp.mutUniform, expr=tb.expr_mut, pset=pset),
                     functools.partial(gp.mutNodeReplacement, pset=pset),
                     gp.mutShrink,
                     functools.partial(gp.mutInsert, pset=pset)]
        if g.constant_range is not None:
            mutations.append(functools.partial(gp.mutEphemeral, mode="one"))
        for limit in limits:
            mutations = [limit(m) for m in mutations]
        tb.register("mate_tree", functools.reduce(lambda f, lim: lim(f), limits, gp.cxOnePoint))
        tb.mutations = mutations
        return tb

    def _new_tree(self, p: int) -> gp.PrimitiveTree:
        while True:
            tree = gp.PrimitiveTree(self.toolboxes[p].expr())
            if len(tree) <= self.space.grammar(p).max_size:
                return tree

    def _new_individual(self) -> Individual:
        return Individual([self._new_tree(p) for p in range(self.n_path)])

    def _vary(self, population: list) -> list:
        """Offspring by crossover within one pathway, mutation of one pathway, or reproduction.

        Several pathways: a varied pathway is often only useful next to the right partner (Oja's
        rule on feed-forward weights scores badly without anti-Hebbian lateral weights), so
        ``CONTEXT`` of the varied children take the other pathways from the best rule found so
        far (the collaborators of cooperative coevolution)."""
        sp = self.task.search
        offspring = []
        best = min((i for i in population if i.fitness.valid), key=lambda i: i.fitness.values[0], default=None)
        for _ in range(len(population)):
            r = self.rng.random()
            p = None
            if r < sp.p_crossover:
                a, b = (self._clone(i) for i in self.rng.sample(population, 2))
                p = self.rng.randrange(self.n_path)  # crossover within the same pathway
                a[p], b[p] = self.toolboxes[p].mate_tree(a[p], b[p])
                child = a
            elif r < sp.p_crossover + sp.p_mutation:
                child = self._clone(self.rng.choice(population))
                p = self.rng.randrange(self.n_path)  # mutation of one pathway at a time
                child[p], = self.rng.choice(self.toolboxes[p].mutations)(child[p])
            else:  # reproduction
                child = self._clone(self.rng.choice(population))
            if p is not None and self.n_path > 1 and best is not None and self.rng.random() < CONTEXT:
                for q in range(self.n_path):
                    if q != p:
                        child[q] = gp.PrimitiveTree(list(best[q]))
            child.fitness = RuleFitness()
            child.optimised = False
            offspring.append(child)
        for i in range(int(IMMIGRANTS * len(offspring))):
            offspring[i] = self._new_individual()
        return offspring

    @staticmethod
    def _clone(ind: Individual) -> Individual:
        new = Individual(gp.PrimitiveTree(list(t)) for t in ind)
        new.fitness.values = ind.fitness.values if ind.fitness.valid else ()
        new.optimised = ind.optimised
        return new

    # -- evaluation
    def _loss_of_rules(self, rules: Sequence[Rule], state: _State) -> np.ndarray:
        state.evaluations += len(rules)
        losses = self._evaluate_packed(pack_rules(rules)).losses
        state.blown += int(np.sum(losses >= WORST_LOSS))
        return losses

    def _evaluate(self, individuals: list, state: _State) -> None:
        rules = [self.lang.rule(i) for i in individuals]
        keys = semantic_keys(rules)
        todo = {}
        for k, r in zip(keys, rules):
            if k not in state.cache and k not in todo:
                todo[k] = r
        if todo:
            losses = self._loss_of_rules(list(todo.values()), state)
            state.cache.update(zip(todo, map(float, losses)))
        for ind, k, r in zip(individuals, keys, rules):
            ind.key = k
            ind.fitness.values = (state.cache[k], r.complexity)
            old = state.archive.get(k)
            if old is None or r.complexity < old[1]:
                state.archive[k] = (state.cache[k], r.complexity, r.exprs)

    def _optimise_constants(self, population: list, state: _State) -> None:
        """Tune the constants of the best ``optimise_top`` new rules side by side (their losses share
        population calls, ``lockstep``); the results equal tuning them one after another."""
        k = self.task.search.optimise_top
        candidates = sorted((i for i in population if not i.optimised and
                             i.fitness.values[0] < WORST_LOSS and
                             any(isinstance(type(n), gp.MetaEphemeral) for t in i for n in t)),
                            key=lambda i: i.fitness.values)
        chosen, seen = [], set()
        for ind in candidates:
            if len(seen) >= k:
                break
            if ind.key in seen:
                continue
            seen.add(ind.key)
            chosen.append(ind)
        smooth = self.task.sim.smooth_loss
        jobs = [functools.partial(_tune, self.lang.rule(ind), start=ind.fitness.values[0],
                                  max_iter=SEARCH_CONSTANT_ITERATIONS, smooth=smooth) for ind in chosen]
        results = run_lockstep(jobs, lambda rs: self._loss_of_rules(rs, state))
        for ind, best in zip(chosen, results):
            ind.optimised = True
            if best is not None:
                new = self.lang.individual(best)
                ind[:] = new
                self._evaluate([ind], state)
                ind.optimised = True

    def _explore_front(self, state: _State, population: Sequence = ()) -> list:
        """Evaluate the neighbourhood of each new front rule: every subtree replaced by a
        terminal, 0 or 1, multiplied by a terminal or by a constant factor (0.9, which
        constant optimisation then tunes); the whole rule given an added term +-0.1 * terminal; in rules of at most ``EXPLORE_PAIRS_MAX_SIZE``
        nodes, every leaf replaced by a sum, difference or product of two terminals.

        Random variation rarely deletes exactly the superfluous part of a good rule
        (``-x + y*(x - w*y)``) or adds exactly the missing factor (``x - w*y`` ->
        ``y*(x - w*y)``); this systematic neighbourhood does, at the cost of one
        batched evaluation of a few hundred rules per generation.
        """
        front = pareto_front([(l, c, exprs) for l, c, exprs in state.archive.values() if l < WORST_LOSS])
        if self.explore_top and population:  # and the best rules of the population, whatever their size
            ranked = sorted((ind for ind in population if ind.fitness.values[0] < WORST_LOSS),
                            key=lambda ind: ind.fitness.values)
            fresh = []
            for ind in ranked:
                exprs = self.lang.rule(ind).exprs
                if sum(map(len, exprs)) <= EXPLORE_MAX_SIZE and exprs not in state.pruned \
                        and exprs not in fresh:
                    fresh.append(exprs)
                if len(fresh) >= self.explore_top:
                    break
            front = front + [(None, None, e) for e in fresh]
        variants = []
        for _, _, exprs in front:
            if exprs in state.pruned:
                continue
            state.pruned.add(exprs)
            for p, expr in enumerate(exprs):
                grammar = self.space.grammar(p)
                leaves = [("var", n) for n in grammar.names] + [("const", 0.0), ("const", 1.0)]
                terms = leaves[:-2]
                added = monomials(grammar, EXPLORE_TERM_DEGREE_PATHWAYS if self.n_path > 1 else 1)
                pairs = [(("op", op), a, b) for op in ("add", "sub", "mul") if op in grammar.operators
                         for i, a in enumerate(terms) for j, b in enumerate(terms)
                         if (op == "sub" and i != j) or (op == "add" and i < j) or (op == "mul" and i <= j)]
                for start in range(len(expr)):
                    end = subtree_end(expr, start)
                    replacements = [(leaf,) for leaf in leaves if not (end - start == 1 and expr[start] == leaf)]
                    if "mul" in grammar.operators:  # grow: multiply the subtree by a variable, or by minus one
                        replacements += [(("op", "mul"),) + expr[start:end] + (leaf,) for leaf in leaves[:-2]]
                        if self.n_path > 1:
                            replacements += [(("op", "mul"),) + expr[start:end] + tuple(negate([leaf], grammar))
                                             for leaf in leaves[:-2]]
                        if grammar.constant_range is not None:  # or by a factor for L-BFGS to tune
                            replacements.append((("op", "mul"),) + expr[start:end] + (("const", 0.9),))
                            if start == 0 and len(expr) <= EXPLORE_TERM_MAX_SIZE and "add" in grammar.operators:
                                # a small rule gets a small
                                # extra term: x*(r - rbar) -> x*(r - rbar) - 0.1*w
                                replacements += [(("op", "add"),) + expr + (("op", "mul"), ("const", c)) + term
                                                 for term in added for c in (0.1, -0.1)]
                    if end - start == 1 and len(expr) <= EXPLORE_PAIRS_MAX_SIZE:
                        # in a small rule, a leaf becomes any pair of terminals (c*x -> (r - rbar)*x):
                        # building blocks that are poor on their own (r - rbar, x*r) are never kept
                        replacements += pairs
                    for rep in replacements:
                        new = simplify_identities(expr[:start] + rep + expr[end:])
                        variants.append(Rule(exprs[:p] + (new,) + exprs[p + 1:], self.space))

        individuals = [self.lang.individual(r) for r in variants]
        if individuals:
            self._evaluate(individuals, state)
        return individuals

    def _select(self, individuals: list) -> list:
        unique, dupes = {}, []
        for ind in individuals:
            key = ind.key
            if key not in unique or sum(map(len, ind)) < sum(map(len, unique[key])):
                if key in unique:
                    dupes.append(unique[key])
                unique[key] = ind
            else:
                dupes.append(ind)
        pool = list(unique.values())
        if len(pool) >= self.mu:
            return tools.selNSGA2(pool, self.mu, nd="log")
        return pool + tools.selNSGA2(dupes, self.mu - len(pool), nd="log") if dupes else pool

    # -- loop
    def run(self, state: _State | None = None, checkpoint: Callable[[dict], None] | None = None,
            progress: Callable[[int, int, float, int], None] | None = None) -> EvolveResult:
        """Run (or continue) the search; ``checkpoint`` receives a JSON-able dict after a generation
        (every generation, or as ``checkpoint_seconds`` allows; always after the last one)."""
        with _own_random(self.rng), _lean_gc():
            return self._run(state, checkpoint, progress)

    def _run(self, state, checkpoint, progress) -> EvolveResult:
        start = time.perf_counter()
        stopped = "generations"
        elapsed_before = 0.0 if state is None else state.elapsed  # a resumed run's earlier time
        if state is None:
            self.rng.seed(self.seed)
            state = _State([self._new_individual() for _ in range(self.mu)], {}, {}, [])
            # seeds (e.g. the terms an exact Taylor fit selected, runs.fit_seeds) replace the first
            # random individuals, after those were drawn, so the random stream is the same either way
            state.population[:len(self.seeds)] = [self.lang.individual(r) for r in self.seeds]
            # Every constant-free rule of up to ENUMERATE_MAX_SIZE nodes is evaluated once: small
            # rules whose parts are poor on their own (x*(r - rbar)) need not be found by chance.
            # They enter the archive (and so the explored front), not the population, whose
            # diversity they would crowd out.
            if self.n_path == 1:
                exprs = small_exprs(self.space.grammar(0))
                exprs = exprs + with_decay(exprs, self.space.grammar(0), self.task.search.decay_seed)
                tiny = [self.lang.individual(Rule((e,), self.space)) for e in exprs]
                self._evaluate(state.population + tiny, state)
            else:
                self._evaluate(state.population, state)
                self._sweep_pathways(state)
            self._optimise_constants(state.population, state)
            self._record(state, start, checkpoint, progress)
        interrupt = GracefulInterrupt()
        try:
            while state.generation < self.generations:
                if interrupt.requested:
                    stopped = "interrupted"
                    if checkpoint is not None and self._checkpointed[0] != state.generation:
                        self._checkpoint(state, checkpoint)  # the last whole generation, not yet written
                    break
                if self._best(state) <= self.task.search.target_loss:
                    stopped = "target_loss"
                    break
                restart = self.task.search.restart_every
                if restart and state.generation and state.generation % restart == 0:
                    # A fresh population keeps the archive (and the front, re-injected): the
                    # search leaves a basin it has settled in without losing what it found.
                    elite = [self.lang.individual(Rule(exprs, self.space))
                             for _, _, exprs in state.archive.values()]
                    fresh = [self._new_individual() for _ in range(self.mu - len(elite))]
                    self._evaluate(elite + fresh, state)
                    state.population = elite + fresh
                offspring = self._vary(state.population)
                self._evaluate(offspring, state)
                pool = state.population + offspring + self._explore_front(state, state.population)
                self._optimise_constants(pool, state)
                state.population = self._select(pool)
                state.generation += 1
                state.elapsed = elapsed_before + time.perf_counter() - start
                self._record(state, None, checkpoint, progress)
        except KeyboardInterrupt:
            stopped = "interrupted"
        finally:
            interrupt.restore()
        state.elapsed = elapsed_before + time.perf_counter() - start
        if stopped != "interrupted" and self._best(state) <= self.task.search.target_loss:
            stopped = "target_loss"
        return self._finish(state, stopped)

    def _sweep_pathways(self, state: _State) -> None:
        """Several pathways: coordinate-wise enumeration. Every small constant-free expression (and
        its negation) of one pathway is evaluated with the other pathways at their current
        partners, which start as 0 (no plasticity); the best becomes that pathway's partner; two
        rounds over all pathways. A joint rule whose parts are poor alone (Oja's rule on
        feed-forward weights needs anti-Hebbian lateral weights) is then one or two steps from
        the archive; enumerating all combinations instead grows as the product of the pathways'
        counts. The rules enter the archive, not the population."""
        per = [_with_negations(small_exprs(p.grammar), p.grammar) for p in self.space.pathways]
        partner = [(("const", 0.0),) for _ in range(self.n_path)]
        for _ in range(SWEEP_ROUNDS):
            for p in range(self.n_path):
                rules = [Rule(tuple(partner[:p]) + (e,) + tuple(partner[p + 1:]), self.space) for e in per[p]]
                individuals = [self.lang.individual(r) for r in rules]
                self._evaluate(individuals, state)
                best = min(range(len(rules)), key=lambda k: (individuals[k].fitness.values[0], len(per[p][k])))
                partner[p] = per[p][best]

    def _canonicalise(self, keys: Sequence[str], state: _State) -> bool:
        """Give new front rules their sympy-canonical tree where that is smaller (same function,
        so same key and loss): ``0.03 - y*(w*y - x)`` pruned to ``0 - y*(w*y - x)`` must compete
        as the 7-node ``y*(x - w*y)``. Returns whether any entry changed."""
        changed = False
        for key in keys:
            if key in state.canonical:
                continue
            state.canonical.add(key)
            loss, comp, exprs = state.archive[key]
            try:
                rule = rule_from_sympy([sympy.expand(e) for e in Rule(exprs, self.space).to_sympy()],
                                       self.space)
            except ValueError:
                continue
            if rule.complexity < comp:
                state.archive[key] = (loss, rule.complexity, rule.exprs)
                changed = True
        return changed

    @staticmethod
    def _near_front(state: _State, front: list) -> list:
        """Keys of up to ``NEAR_FRONT_CANONICAL`` dominated rules (lowest loss first) that beat every
        simpler front rule: dominated only by a rule of their own size, they join the front if their
        canonical tree is smaller. Neighbourhoods produce such rules (``w*y*(0 - y) + x*y`` is Oja's
        rule in 11 nodes, one worse than a lucky 11-node rule), and canonicalising only the front
        discarded them."""
        on_front = {k for _, _, k in front}

        def beats_simpler(loss, comp):  # and a simpler tree exists at all
            return loss < min((l for l, c, _ in front if c < comp), default=-float("inf"))

        near = sorted((l, c, k) for k, (l, c, _) in state.archive.items()
                      if k not in on_front and k not in state.canonical and beats_simpler(l, c))
        return [k for _, _, k in near[:NEAR_FRONT_CANONICAL]]

    def _checkpoint(self, state: _State, checkpoint: Callable[[dict], None]) -> None:
        checkpoint(self.state_to_json(state))
        self._checkpointed = (state.generation, time.perf_counter())

    @staticmethod
    def _best(state: _State) -> float:
        return min(v[0] for v in state.archive.values())

    def _record(self, state, start, checkpoint, progress):
        if start is not None:
            state.elapsed = time.perf_counter() - start
        # Only non-dominated rules can reach the final front (domination is transitive),
        # so the archive keeps just those; this also keeps checkpoints small.
        front = pareto_front([(l, c, k) for k, (l, c, _) in state.archive.items()])
        if self._canonicalise([k for _, _, k in front] + self._near_front(state, front), state):
            front = pareto_front([(l, c, k) for k, (l, c, _) in state.archive.items()])
        state.archive = {k: state.archive[k] for _, _, k in front}
        best = self._best(state)
        state.history.append({"generation": state.generation, "best_loss": best,
                              "evaluations": state.evaluations,
                              "front_size": len(front)})
        if checkpoint is not None and (state.generation >= self.generations or time.perf_counter()
                                       - self._checkpointed[1] >= self.checkpoint_seconds):
            self._checkpoint(state, checkpoint)
        if progress is not None:
            progress(state.generation, self.generations, best, state.evaluations)

    def _finish(self, state: _State, stopped: str) -> EvolveResult:
        """Prune and snap the front's constants, rewrite rules in canonical form, select one."""
        if stopped != "interrupted":
            self.on_stage("exploring and polishing the front")
            self._explore_front(state)
            front = pareto_front([(l, c, k) for k, (l, c, _) in state.archive.items()])
            self._canonicalise([k for _, _, k in front] + self._near_front(state, front), state)
        raw = pareto_front([(l, c, exprs) for l, c, exprs in state.archive.values()])
        loss_fn = lambda rules: self._loss_of_rules(rules, state)
        kept = [(loss, Rule(exprs, self.space)) for loss, comp, exprs in raw if loss < WORST_LOSS]
        snap_tol, smooth = self.task.search.snap_tol, self.task.sim.smooth_loss
        jobs = [functools.partial(_polish, rule, start=loss, snap_tol=snap_tol, smooth=smooth) for loss, rule in kept]
        final = {}
        for rule in run_lockstep(jobs, loss_fn):
            # one entry per function: x*(r - rbar) and r*x - rbar*x differ in the last bit of their
            # losses, which would put both on the front; the smaller tree is kept
            key = _expanded_text(rule)
            if key not in final or rule.complexity < final[key].complexity:
                final[key] = rule
        rules = list(final.values())
        losses = loss_fn(rules) if rules else []
        entries = pareto_front([(float(l), r.complexity, r) for l, r in zip(losses, rules)])
        front = [FrontEntry(r, l, c) for l, c, r in entries]
        if not front:  # every rule blew up: report the simplest one anyway
            l, c, exprs = min(state.archive.values(), key=lambda v: (v[1], v[0]))
            front = [FrontEntry(Rule(exprs, self.space), l, c)]
        settings = self.task.search
        if settings.selection in ("noise", "heldout", "auto"):  # simplest within the sampling noise of the best
            objective = self.task.sim.objectives[self.task.objective]
            method, why = settings.selection, None
            if method == "auto":  # decided by the units (animals, recorded trials) of the fitted trials
                method, why = self._auto_selection(front)
            on = self.heldout if method == "heldout" and self.heldout is not None else self.task
            judge = on.sim.judged_by(on)
            self.on_stage(f"selecting among {len(front)} front rules" + (f", judged by the {judge}" if judge else ""))
            units = on.unit_losses([e.rule for e in front])
            if on is self.heldout:  # judged by held-out losses: unbiased by what the fitted trials overfit
                chosen, selection = select_within_noise(
                    [FrontEntry(e.rule, float(u.sum()), e.complexity) for e, u in zip(front, units)], units,
                    settings.selection_se, objective.unit_name)
            else:
                chosen, selection = select_within_noise(front, units, settings.selection_se, objective.unit_name)
            selection.update(method=method, losses="held-out" if on is self.heldout else "fitted")
            if why:
                selection["auto"] = why
            if judge:
                selection["likelihood"] = judge
        else:
            chosen = select_rule(front, settings.selection_rel_tol, settings.selection_abs_tol)
            selection = {"method": "tolerance", "rel_tol": settings.selection_rel_tol,
                         "abs_tol": settings.selection_abs_tol}
        front = [FrontEntry(e.rule, e.loss, e.complexity, i == chosen) for i, e in enumerate(front)]
        return EvolveResult(front, state.history, state.evaluations, state.generation,
                            state.elapsed, self.seed, stopped, state.blown, selection)

    def _auto_selection(self, front) -> tuple[str, str]:
        """selection = "auto": ("heldout" or "noise", why). Held-out losses with fewer than
        AUTO_HELDOUT_BELOW units in the fitted trials, if the held-out view has 2 or more (one unit
        gives no noise estimate); else the fitted trials' losses."""
        unit = self.task.sim.objectives[self.task.objective].unit_name or "units"
        if self.heldout is None:
            return "noise", "no held-out trials: the fitted trials' losses"
        n = self.task.sim.n_units(self.task)
        if n is None:  # not known without simulating
            n = self.task.unit_losses([front[0].rule]).shape[1]
        if n >= AUTO_HELDOUT_BELOW:
            return "noise", f"{n} {unit} in the fitted trials: at least {AUTO_HELDOUT_BELOW}"
        held = self.heldout.sim.n_units(self.heldout)
        if held is None:
            held = self.heldout.unit_losses([front[0].rule]).shape[1]
        if held < 2:
            return "noise", f"{n} {unit} in the fitted trials, but {held} held out: the fitted trials' losses"
        return "heldout", f"{n} {unit} in the fitted trials: fewer than {AUTO_HELDOUT_BELOW}"

    # -- checkpoints (plain JSON: tokens, numbers and the RNG state)
    def state_to_json(self, state: _State) -> dict:
        version, internal, gauss = self.rng.getstate()
        return {
            "generation": state.generation, "evaluations": state.evaluations, "blown": state.blown,
            "elapsed": state.elapsed, "history": state.history,
            "population": [{"exprs": [list(map(list, e)) for e in self.lang.rule(ind).exprs],
                            "fitness": list(ind.fitness.values), "optimised": ind.optimised,
                            "key": ind.key} for ind in state.population],
            "archive": [[k, l, c, [list(map(list, e)) for e in exprs]]
                        for k, (l, c, exprs) in state.archive.items()],
            "cache": state.cache,
            "pruned": [[list(map(list, e)) for e in exprs] for exprs in state.pruned],
            "canonical": sorted(state.canonical),
            "random_state": [version, list(internal), gauss],
        }

    def state_from_json(self, obj: dict) -> _State:
        def tokens(expr):
            return tuple((str(k), float(v) if k == "const" else str(v)) for k, v in expr)
        population = []
        for item in obj["population"]:
            ind = self.lang.individual(Rule(tuple(tokens(e) for e in item["exprs"]), self.space))
            ind.fitness.values = tuple(item["fitness"])
            ind.optimised = bool(item["optimised"])
            ind.key = str(item["key"])
            population.append(ind)
        archive = {str(k): (float(l), int(c), tuple(tokens(e) for e in exprs))
                   for k, l, c, exprs in obj["archive"]}
        version, internal, gauss = obj["random_state"]
        self.rng.setstate((version, tuple(internal), gauss))
        return _State(population, archive, {str(k): float(v) for k, v in obj["cache"].items()},
                      list(obj["history"]), int(obj["generation"]), int(obj["evaluations"]),
                      float(obj["elapsed"]),
                      {tuple(tokens(e) for e in exprs) for exprs in obj["pruned"]},
                      set(map(str, obj["canonical"])), int(obj.get("blown", 0)))


@contextmanager
def _own_random(rng: random.Random):
    """DEAP's operators draw from the module-level ``random``; while a search runs they draw from
    the search's own generator instead, so that nothing else in the process (a Dask client's
    thread, another library) can shift the search's random stream."""
    saved = gp.random, emo.random
    gp.random = emo.random = rng
    try:
        yield
    finally:
        gp.random, emo.random = saved


@contextmanager
def _lean_gc(gen0: int = 10_000):
    """Python's cyclic collector, at its default thresholds, took 0.9 s of a 10 s Oja search: a search
    allocates millions of short-lived tuples (tokens, rules), which start a young-generation
    collection every 700 allocations, and a full collection traverses every object the imports made
    (sympy, Numba). While a search runs, young collections wait for ``gen0`` allocations and the objects
    that existed before it are frozen out of full collections (measured: 0.27 s); both are restored
    after."""
    saved = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(gen0, saved[1], saved[2])
    try:
        yield
    finally:
        gc.set_threshold(*saved)
        gc.unfreeze()


def small_exprs(grammar: Grammar, max_size: int = 0, limit: int = 5000) -> list[tuple]:
    """Every prefix expression over the grammar's terminals and operators (no constants) with
    at most ``max_size`` nodes (default ``ENUMERATE_MAX_SIZE``, lowered until at most ``limit``)."""
    terms = [(("var", n),) for n in grammar.names]
    unary = [op for op in grammar.operators if PRIMITIVES[op].arity == 1]
    binary = [op for op in grammar.operators if PRIMITIVES[op].arity == 2]
    size = max_size or ENUMERATE_MAX_SIZE
    while True:
        by_size = {1: terms}
        for n in range(2, size + 1):
            out = [(("op", u),) + t for u in unary for t in by_size[n - 1]]
            for k in range(1, n - 1):
                out += [(("op", b),) + t1 + t2 for b in binary for t1 in by_size[k] for t2 in by_size[n - 1 - k]]
            by_size[n] = out
        found = [e for n in range(1, size + 1) for e in by_size[n]]
        if len(found) <= limit or size <= 1:
            return found
        size -= 2


def with_decay(exprs: list[tuple], grammar: Grammar, c: float) -> list[tuple]:
    """Each expression minus ``c * w`` (``search.decay_seed``; none for c = 0 or a grammar without w,
    sub, mul or constants). A rule whose weights run away alone is never on the front, so the
    front's neighbourhood never adds the decay that makes it the best rule: on flies from
    ``x*(r - rbar) - 0.1*w`` at eta 1, ``x*(r - rbar)`` alone scores 1.07 nats, worse than no
    plasticity (0.69), and with the decay 0.431, the best of all."""
    if c <= 0 or "w" not in grammar.names or not {"sub", "mul"} <= set(grammar.operators) \
            or grammar.constant_range is None:
        return []
    tail = (("op", "mul"), ("const", float(c)), ("var", "w"))
    return [(("op", "sub"),) + e + tail for e in exprs if e != (("var", "w"),)]


def _with_negations(exprs: list[tuple], grammar: Grammar) -> list[tuple]:
    try:
        return exprs + [tuple(negate(list(e), grammar)) for e in exprs]
    except GrammarError:  # no neg, and no mul with constants
        return exprs


def monomials(grammar: Grammar, degree: int) -> list[tuple]:
    """Prefix tokens of every product of up to ``degree`` terminals (x, x*x, x*y, ...; degree 1:
    the terminals); products need 'mul'."""
    names = grammar.names
    out = []
    for d in range(1, (degree if "mul" in grammar.operators else 1) + 1):
        for combo in itertools.combinations_with_replacement(names, d):
            tokens = (("var", combo[-1]),)
            for n in reversed(combo[:-1]):
                tokens = (("op", "mul"), ("var", n)) + tokens
            out.append(tokens)
    return out


def _static_limit(key: Callable, max_value: int) -> Callable:
    """``deap.gp.staticLimit`` with the same behaviour and random draws, but the kept parents copied
    as node lists instead of ``copy.deepcopy`` (a twentieth of a search's time): operators replace
    nodes, they never change one in place, so the parents' nodes can be shared."""
    def decorator(func):
        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            keep = [gp.PrimitiveTree(list(ind)) for ind in args]
            new = list(func(*args, **kwargs))
            for i, ind in enumerate(new):
                if key(ind) > max_value:
                    new[i] = gp.random.choice(keep)
            return new
        return wrapper
    return decorator


def _tune(rule: Rule, loss: Callable, start: float, max_iter: int, smooth: bool) -> Rule | None:
    """One rule's constant optimisation (a ``lockstep`` job)."""
    return optimise_constants(rule, loss, start, max_iter=max_iter, smooth=smooth)


def _polish(rule: Rule, loss: Callable, start: float, snap_tol: float, smooth: bool) -> Rule:
    """A front rule's final form (a ``lockstep`` job): constants tuned, then snapped and canonical."""
    if rule.constants():
        rule = optimise_constants(rule, loss, start, FINAL_CONSTANT_ITERATIONS, smooth=smooth) or rule
    return readable(rule, loss, snap_tol)


def subtree_end(expr, start: int) -> int:
    """Index one past the subtree of the prefix expression that starts at ``start``."""
    need, i = 1, start
    while need:
        kind, value = expr[i]
        need += (PRIMITIVES[value].arity if kind == "op" else 0) - 1
        i += 1
    return i


def evolve(task: Task, seed: int | None = None, population: int | None = None,
           generations: int | None = None, evaluate: Callable | None = None, progress: bool | Callable = False,
           **run_kwargs) -> EvolveResult:
    """Search for the rule that minimises ``task``'s loss; returns the front and the selected rule.

    Quiet by default; ``progress=True`` prints a line to stderr now and then (or pass a callback
    ``progress(generation, total, best_loss, evaluations)``)."""
    if progress is True:
        from .cli import progress_lines
        progress = progress_lines("evolve")
    search = Search(task, evaluate, task.seed if seed is None else seed, population, generations,
                    run_kwargs.pop("heldout", None))
    return search.run(progress=progress or None, **run_kwargs)
