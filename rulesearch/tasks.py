"""Task files: a network, its inputs, an objective and search defaults -> a frozen ``Task``.

``Task.evaluate(rules)`` is the whole contract the searches rely on: rules in,
one loss per rule out (``WORST_LOSS`` for rules whose weights blow up).
"""
from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ._fields import Fields
from ._toml import read_toml, tomllib
from .errors import TaskError
from .grammar import Grammar, find_grammar, load_grammar
from .rules import Pathway, Rule, RuleSpace, parse_rule
from .sims import SIMULATORS, Simulator, objectives
from .vm import PackedPrograms, pack

SELECTION_METHODS = ("tolerance", "noise", "heldout", "auto")
# selection = "auto": "heldout" below this many units (animals, recorded trials), else "noise". With few
# units the fitted trials' gain from extra structure is systematic (every animal shares it, so the paired
# standard error does not see it), while the held-out trials do not reward it (README: 3 flies with
# recorded inputs, 5 data seeds: "noise" selected x*(r - rbar) in 2, "heldout" in 5; with 18 flies the
# held-out quarter has too little power to keep a forgetting term that the fitted trials resolve)
AUTO_HELDOUT_BELOW = 10
WORST_LOSS = 1e10  # loss of a rule whose weights blow up; finite so that sorting and plots work


@dataclass(frozen=True)
class SearchSettings:
    """The [search] section: settings of ``rulesearch evolve``."""

    population: int = 200
    generations: int = 30
    target_loss: float = 0.0
    p_crossover: float = 0.6
    p_mutation: float = 0.35
    optimise_top: int = 5
    selection_rel_tol: float = 0.05
    selection_abs_tol: float = 1e-3
    # or "noise": within selection_se standard errors of the best (paired over units of the fitted
    # trials); "heldout": the same on the held-out trials (evolve on data; else as "noise"); "auto":
    # "heldout" with fewer than AUTO_HELDOUT_BELOW units, else "noise"
    selection: str = "tolerance"
    selection_se: float = 1.0
    snap_tol: float = 0.01
    restart_every: int = 0  # generations between fresh populations (0: never)
    # on recorded activity: start the search with the terms an exact Taylor fit selects (runs.fit_seeds)
    seed_with_fit: bool = True
    # > 0: the start also evaluates every enumerated small rule minus decay_seed * w (gp.with_decay)
    decay_seed: float = 0.0


@dataclass(frozen=True)
class Fit:
    """Settings of ``rulesearch fit``: a parametric family fitted by CMA-ES (per pathway)."""

    family: str = "taylor"
    variables: tuple[str, ...] = ()  # empty: every terminal of the pathway's grammar
    max_power: int | tuple[int, ...] = 2  # taylor: for every variable, or one per variable
    exclude: tuple[str, ...] = ()  # taylor terms fixed at 0
    hidden: tuple[int, ...] = (10,)  # mlp
    activation: str = "tanh"  # mlp hidden units
    l1: float = 0.0  # penalty l1 * sum|params| added to the loss (published default 1e-2)
    generations: int = 1000  # default per family: DEFAULT_FIT_GENERATIONS
    popsize: int = 24
    sigma0: float = 0.1
    holdout: float = 0.25  # fraction of trials held out from fitting (data tasks)
    target_loss: float = 0.0
    # "auto": Levenberg-Marquardt with exact gradients where the simulator offers them for a Taylor
    # family without L1 (gradfit.py), else CMA-ES (MLPs too: their loss is not convex); "lm" insists on
    # gradients; "cmaes" never uses them
    optimizer: str = "auto"
    select_alpha: float = 1e-3  # lm: level of the likelihood-ratio test that removes a term (0: keep all)


FIT_OPTIMIZERS = ("auto", "lm", "cmaes")


@dataclass(frozen=True)
class FamilySettings:
    """The [families] section: settings of ``rulesearch families`` (see ``family_filter.py``)."""

    rounds: int = 3
    simulations: int = 1000  # per round
    backend: str = "sklearn"  # or "sbi" (optional extra)
    staged: bool = False  # round r checks the constraints of stages <= r (rates, then weights, then the rest)
    tau_range_ms: tuple[float, float] = (10.0, 100.0)  # trace time constants: log-uniform prior
    coefficient_range: tuple[float, float] = (-2.0, 2.0)  # alpha, beta, gamma, kappa: uniform prior
    batch: int = 100  # simulations per evaluator call (a checkpoint after each; with refit, a proposal step)
    recheck: bool = True  # re-simulate the family with new input seeds at the end
    confirm: int = 0  # confirmation simulations (new input seeds) a candidate must also pass to join the family
    aim: float = 0.0  # proposals aim inside each range by aim x the seed noise the confirmations measure
    budget: int = 0  # at most this many simulations in all (rounds, confirmations, re-check); 0: no limit
    figures: bool = True  # pass_fraction.png, metrics.png, pairs_<pathway>.png
    pinned: str = ""  # a fixed rule for some pathways ("ii.pre: ...; ii.post: ..."): not sampled
    refit: bool = True  # rounds after the first refit their proposal after every batch


FAMILY_BACKENDS = ("sklearn", "sbi")


@dataclass(frozen=True)
class Evaluation:
    losses: np.ndarray  # (n_rules,)
    blown: np.ndarray  # bool (n_rules,)


@dataclass(frozen=True, eq=False)
class Task:
    """A validated task: the simulator plug-in with its config and shared inputs (``state``), the
    plastic pathways (``space``, with one learning rate each in ``etas``), objective and settings."""

    name: str
    source: str
    space: RuleSpace
    etas: tuple[float, ...]
    sim: Simulator
    config: Any  # the simulator's frozen config
    state: Any  # the simulator's inputs and data (frozen)
    objective: str
    average_fraction: float
    search: SearchSettings
    fit: Fit
    seed: int
    overrides: tuple[str, ...]
    families: FamilySettings = FamilySettings()
    data_source: str | None = None
    data_meta: dict | None = None  # the data file's meta (e.g. the ground-truth rule of simulated data)

    @property
    def grammar(self) -> Grammar:
        """The grammar of a single-pathway task (several pathways: ``space.grammar(p)``)."""
        if self.space.multi:
            raise ValueError(f"task '{self.name}' has pathways {self.space.describe()}, each with its grammar")
        return self.space.grammar(0)

    @property
    def has_data(self) -> bool:
        return self.data_source is not None

    def parse(self, text: str | Sequence[str], limits: bool = False) -> Rule:
        """A rule over the task's pathways; ``limits``: held to the grammars' size limits (user input)."""
        return parse_rule(text, self.space, limits)

    def simulate(self, rules: Sequence[Rule] | PackedPrograms, record: bool = False, **options):
        """Run the network under each rule (the simulator's result; see its ``simulate``)."""
        packed = rules if isinstance(rules, PackedPrograms) else pack_rules(rules)
        self._check(packed)
        return self.sim.simulate(self, packed, record, **options)

    def _check(self, packed: PackedPrograms) -> None:
        if packed.parts != len(self.space):
            raise ValueError(f"task '{self.name}' has {len(self.space)} plastic pathway(s) "
                             f"({self.space.describe()}); the population has {packed.parts} program(s) per rule")

    def metrics(self, packed: PackedPrograms) -> dict[str, np.ndarray]:
        """The simulator's metrics per individual (simulators with constraints; ``families``)."""
        self._check(packed)
        return self.sim.metrics(self, packed)

    def evaluate_packed(self, packed: PackedPrograms) -> Evaluation:
        result = self.simulate(packed)
        losses = self.sim.objectives[self.objective].fn(self, result)
        blown = result.blown
        losses = np.where(blown | ~np.isfinite(losses), WORST_LOSS, np.minimum(losses, WORST_LOSS))
        return Evaluation(losses, blown)

    def evaluate(self, rules: Sequence[Rule]) -> np.ndarray:
        """Loss of each rule, float64 (n_rules,); ``WORST_LOSS`` where weights blew up."""
        if not rules:
            return np.zeros(0)
        return self.evaluate_packed(pack_rules(rules)).losses

    def unit_losses(self, rules: Sequence[Rule]) -> np.ndarray:
        """Each rule's loss split into the objective's independent units (per animal or per recorded
        trial), (n_rules, n_units) summing to ``evaluate`` unless the simulator judges rules by another
        likelihood (``Simulator.judged_by``); inf for rules whose weights blew up. ``ValueError`` if
        the objective has no units."""
        objective = self.sim.objectives[self.objective]
        if objective.units is None:
            raise ValueError(f"objective '{self.objective}' has no per-unit losses")
        result = self.simulate(rules, judging=True)
        units = np.asarray(objective.units(self, result), float)
        return np.where(result.blown[:, None] | ~np.isfinite(units), np.inf, units)

    def split(self, holdout: float | None = None) -> tuple["Task", "Task | None"]:
        """(fitting task, held-out task or None), as the simulator splits its data."""
        return self.sim.split(self, self.fit.holdout if holdout is None else holdout)


def pack_rules(rules: Sequence[Rule]) -> PackedPrograms:
    """Rules of one space -> one packed population (individual-major, pathway-minor)."""
    parts = len(rules[0].space) if rules else 1
    if any(len(r.space) != parts for r in rules):
        raise ValueError("pack_rules() needs rules with the same number of pathways")
    return pack([p for r in rules for p in r.programs()], parts)


# ---------------------------------------------------------------- loading

def parse_override(text: str) -> tuple[list[str], object]:
    """``'network.eta=0.02'`` -> (['network', 'eta'], 0.02); values are TOML, else strings."""
    if "=" not in text:
        raise TaskError(f"--set {text!r}: expected section.key=value")
    key, value = text.split("=", 1)
    keys = key.strip().split(".")
    if not all(keys):
        raise TaskError(f"--set {text!r}: expected section.key=value")
    try:
        parsed = tomllib.loads(f"v = {value.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value.strip()
    return keys, parsed


def apply_overrides(raw: dict, overrides: Sequence[str]) -> dict:
    raw = copy.deepcopy(raw)
    for text in overrides:
        keys, value = parse_override(text)
        table = raw
        for k in keys[:-1]:
            table = table.setdefault(k, {})
            if not isinstance(table, dict):
                raise TaskError(f"--set {text!r}: '{k}' is not a section")
        table[keys[-1]] = value
    return raw


def _resolve_grammar(name: str, task_path: Path) -> Path:
    found = find_grammar(name, task_path.parent)
    if found is None:
        raise TaskError(f"{task_path}: field 'grammar' is {name!r}: no such grammar file "
                        f"(looked next to the task, in ../grammars and in ./grammars)")
    return found


def _load_pathways(f: Fields, path: Path, sim: Simulator, config) -> tuple[RuleSpace, tuple[float, ...]]:
    """The simulator's pathways with the task's grammar, LaTeX symbol and eta for each."""
    specs = sim.pathways(config)
    names = [s.name for s in specs]
    default = f.get("grammar", str, None)
    table = f.get("pathways", dict, {})
    for key in table:
        if key not in names:
            raise TaskError(f"{path}: field 'pathways.{key}' is not a pathway of the '{sim.name}' network "
                            f"(pathways: {', '.join(names)})")
    pathways, etas = [], []
    for spec in specs:
        pf = Fields(table.get(spec.name, {}), path, f"pathways.{spec.name}", TaskError)
        gname = pf.get("grammar", str, default)
        if gname is None:
            raise TaskError(f"{path}: no grammar for pathway '{spec.name}': expected field 'grammar' "
                            f"or 'pathways.{spec.name}.grammar'")
        grammar = load_grammar(_resolve_grammar(gname, path))
        missing = [t for t in grammar.names if t not in spec.names]
        if missing:
            raise TaskError(f"{path}: grammar '{grammar.name}' uses {', '.join(missing)}, which the "
                            f"'{sim.name}' simulator does not provide on pathway '{spec.name}' "
                            f"(provided: {', '.join(spec.names)})")
        pathways.append(Pathway(spec.name, grammar, pf.get("symbol", str, spec.symbol),
                                tuple(spec.variables)))
        etas.append(pf.get("eta", float, spec.eta, low=0.0))
        pf.finish()
    return RuleSpace(tuple(pathways)), tuple(etas)


def load_task(path: str | Path, overrides: Sequence[str] = (), data=None,
              seed: int | None = None, require_data: bool = True) -> Task:
    """Load and validate a task file, apply ``--set`` overrides and attach data.

    ``data``: a path, or a data object of the simulator's schema. ``seed`` (default: the
    task's ``search.seed``, else 0) also seeds generated inputs unless ``inputs.seed`` is set.
    ``require_data=False`` loads a data-fitting task without data (to simulate data from it).
    """
    path = Path(path)
    raw = apply_overrides(read_toml(path, TaskError), overrides)
    f = Fields(raw, path, "", TaskError)
    name = f.get("name", str, path.stem)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        f.fail("name", f"is {name!r}: expected a plain name (letters, digits, '.', '_', '-'); it names the "
               "default output folder")
    f.get("description", str, "")

    nf = f.sub("network")
    sim = SIMULATORS[nf.get("simulator", str, "rate", choices=tuple(SIMULATORS))]
    of = f.sub("objective")
    objective = of.get("name", str, choices=tuple(objectives()))
    average_fraction = of.get("average_fraction", float, 0.0, low=0.0, high=1.0)
    if objective not in sim.objectives:
        raise TaskError(f"{path}: field 'objective.name' is {objective!r}, which needs the "
                        f"'{' or '.join(objectives()[objective])}' simulator (network.simulator is {sim.name!r})")
    for section in ("inputs", "protocol"):  # sections some simulators read
        if section in raw and section not in sim.sections:
            raise TaskError(f"{path}: section [{section}] is not used by the '{sim.name}' simulator "
                            f"(its sections: network, {', '.join(sim.sections)})")
    # a simulator listing "objective" among its sections reads its objective's own fields there
    config = sim.configure(nf, {s: of if s == "objective" else f.sub(s, {}) for s in sim.sections}, objective)
    of.finish()
    space, etas = _load_pathways(f, path, sim, config)

    sf = f.sub("search", {})
    defaults = SearchSettings()
    search = SearchSettings(
        population=sf.get("population", int, defaults.population, low=4),
        generations=sf.get("generations", int, defaults.generations, low=0),
        target_loss=sf.get("target_loss", float, defaults.target_loss, low=0.0),
        p_crossover=sf.get("p_crossover", float, defaults.p_crossover, low=0.0, high=1.0),
        p_mutation=sf.get("p_mutation", float, defaults.p_mutation, low=0.0, high=1.0),
        optimise_top=sf.get("optimise_top", int, defaults.optimise_top, low=0),
        selection_rel_tol=sf.get("selection_rel_tol", float, defaults.selection_rel_tol, low=0.0),
        selection_abs_tol=sf.get("selection_abs_tol", float, defaults.selection_abs_tol, low=0.0),
        selection=sf.get("selection", str, defaults.selection, choices=SELECTION_METHODS),
        selection_se=sf.get("selection_se", float, defaults.selection_se, low=0.0),
        snap_tol=sf.get("snap_tol", float, defaults.snap_tol, low=0.0),
        restart_every=sf.get("restart_every", int, defaults.restart_every, low=0),
        seed_with_fit=sf.get("seed_with_fit", bool, defaults.seed_with_fit),
        decay_seed=sf.get("decay_seed", float, defaults.decay_seed, low=0.0))
    task_seed = sf.get("seed", int, 0)
    sf.finish()
    if search.selection != "tolerance" and sim.objectives[objective].units is None:
        raise TaskError(f"{path}: field 'search.selection' is '{search.selection}': objective '{objective}' has no "
                        "per-animal or per-trial losses to estimate the noise from (expected 'tolerance')")
    if search.p_crossover + search.p_mutation > 1.0:
        raise TaskError(f"{path}: fields 'search.p_crossover' + 'search.p_mutation' = "
                        f"{search.p_crossover + search.p_mutation:g}: expected at most 1")
    fit = _load_fit(f.sub("fit", {}))
    families = _load_families(f.sub("families", {}))
    f.finish()

    seed = task_seed if seed is None else int(seed)
    task = Task(name, str(path), space, etas, sim, config, sim.generate(config, seed), objective,
                average_fraction, search, fit, seed, tuple(overrides), families)
    needs_data = sim.objectives[objective].needs_data
    if data is not None:
        if not (needs_data or sim.objectives[objective].accepts_data):
            data_objectives = sorted(k for k, o in sim.objectives.items() if o.needs_data or o.accepts_data)
            raise TaskError(f"{path}: objective '{objective}' does not use --data (objectives that "
                            f"do: {', '.join(data_objectives) or 'none'})")
        if isinstance(data, (str, Path)):
            data = sim.load_data(data)
        task = sim.attach(task, data)
    elif needs_data and require_data:
        raise TaskError(f"{path}: objective '{objective}' needs {sim.data_help} (see the README), "
                        "or write data with 'rulesearch simulate'")
    return task


# CMA-ES generations when the task does not say: the 51-parameter MLP converges more slowly.
DEFAULT_FIT_GENERATIONS = {"taylor": 1000, "mlp": 1500, "doublet": 150}


# named Taylor families (``fit.preset``): variables and powers; "published" is MetaLearnPlasticity's
# default (x, r - rbar up to power 2, w up to power 1: its 3x3x3 coefficients with the w**2 terms masked)
TAYLOR_PRESETS = {"published": (("x", "r - rbar", "w"), (2, 2, 1))}


def _load_fit(ff: Fields) -> Fit:
    from .families import FAMILIES, MLP_ACTIVATIONS
    d = Fit()
    preset = ff.get("preset", str, None, choices=tuple(TAYLOR_PRESETS))
    if preset:  # replaces the task's variables and powers (--set fit.preset=published on any reward task)
        ff.table = {**ff.table, "variables": list(TAYLOR_PRESETS[preset][0]),
                    "max_power": list(TAYLOR_PRESETS[preset][1])}

    def names(key, default):
        value = ff.get(key, list, default)
        if not all(isinstance(v, str) for v in value):
            ff.fail(key, f"is {value!r}: expected a list of strings")
        return tuple(value)

    # checked against each pathway's grammar when a family is built (fit.make_family): a task may
    # be evolved with another grammar (--set grammar=...) without its [fit] section applying
    variables = names("variables", [])
    if "variables" in ff.table and not variables:
        ff.fail("variables", "is empty: expected grammar terminals or expressions over them")
    hidden = ff.get("hidden", list, list(d.hidden))
    if not hidden or not all(isinstance(h, int) and not isinstance(h, bool) and h >= 1 for h in hidden):
        ff.fail("hidden", f"is {hidden!r}: expected a list of positive integers (units per hidden layer)")
    family = ff.get("family", str, d.family, choices=FAMILIES)
    max_power = ff.get("max_power", (int, list), d.max_power)
    if isinstance(max_power, list):
        if (variables and len(max_power) != len(variables)) or not all(
                isinstance(p, int) and not isinstance(p, bool) and 0 <= p <= 6 for p in max_power):
            ff.fail("max_power", f"is {max_power!r}: expected 0..6, or a list of {len(variables)} such "
                    f"numbers (one per variable: {', '.join(variables)})")
        max_power = tuple(max_power)
    elif not 0 <= max_power <= 6:
        ff.fail("max_power", f"is {max_power!r}: expected 0..6")
    fit = Fit(family=family, variables=variables,
              max_power=max_power, exclude=names("exclude", []),
              hidden=tuple(hidden), activation=ff.get("activation", str, d.activation, choices=MLP_ACTIVATIONS),
              l1=ff.get("l1", float, d.l1, low=0.0), generations=ff.get("generations", int, DEFAULT_FIT_GENERATIONS[family], low=0),
              popsize=ff.get("popsize", int, d.popsize, low=4), sigma0=ff.get("sigma0", float, d.sigma0, low=1e-12),
              holdout=ff.get("holdout", float, d.holdout, low=0.0, high=0.9),
              target_loss=ff.get("target_loss", float, d.target_loss, low=0.0),
              optimizer=ff.get("optimizer", str, d.optimizer, choices=FIT_OPTIMIZERS),
              select_alpha=ff.get("select_alpha", float, d.select_alpha, low=0.0, high=0.5))
    ff.finish()
    return fit


def _load_families(ff: Fields) -> FamilySettings:
    d = FamilySettings()

    def interval(key, default, low=None):
        value = ff.numbers(key, default)
        if len(value) != 2 or not value[0] < value[1] or (low is not None and value[0] < low):
            ff.fail(key, f"is {list(value)}: expected [low, high] with {'' if low is None else f'{low:g} <= '}"
                    "low < high")
        return tuple(value)
    out = FamilySettings(rounds=ff.get("rounds", int, d.rounds, low=1),
                         simulations=ff.get("simulations", int, d.simulations, low=2),
                         backend=ff.get("backend", str, d.backend, choices=FAMILY_BACKENDS),
                         staged=ff.get("staged", bool, d.staged),
                         tau_range_ms=interval("tau_range_ms", d.tau_range_ms, low=1e-3),
                         coefficient_range=interval("coefficient_range", d.coefficient_range),
                         batch=ff.get("batch", int, d.batch, low=1), recheck=ff.get("recheck", bool, d.recheck),
                         confirm=ff.get("confirm", int, d.confirm, low=0), aim=ff.get("aim", float, d.aim, low=0.0),
                         budget=ff.get("budget", int, d.budget, low=0),
                         figures=ff.get("figures", bool, d.figures), pinned=ff.get("pinned", str, d.pinned),
                         refit=ff.get("refit", bool, d.refit))
    ff.finish()
    return out


def with_data(task: Task, data) -> Task:
    """The task driven by recorded data (a data object of its simulator's schema)."""
    return task.sim.attach(task, data)
