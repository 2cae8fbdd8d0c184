"""Task files: a network, its inputs, an objective and search defaults -> a frozen ``Task``.

``Task.evaluate(rules)`` is the whole contract the searches rely on: rules in,
one loss per rule out (``WORST_LOSS`` for rules whose weights blow up).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ._fields import Fields
from ._toml import read_toml, tomllib
from .data import ActivityData, load_activity
from .errors import TaskError
from .grammar import Grammar, find_grammar, load_grammar
from .rules import Rule, parse_rule
from .sims import rate
from .vm import PackedPrograms, pack

WORST_LOSS = 1e10  # loss of a rule whose weights blow up; finite so that sorting and plots work


@dataclass(frozen=True)
class Network:
    simulator: str
    n_in: int
    n_out: int
    activation: str
    eta: float
    weight_bound: float


@dataclass(frozen=True)
class Inputs:
    """How inputs are generated when no data file is given."""

    trials: int
    steps: int
    leading_variance: float
    other_variance: float
    mean: float
    init_std: float
    seed: int | None


@dataclass(frozen=True)
class Search:
    population: int = 200
    generations: int = 30
    target_loss: float = 0.0
    p_crossover: float = 0.6
    p_mutation: float = 0.35
    optimise_top: int = 5
    selection_rel_tol: float = 0.05
    selection_abs_tol: float = 1e-3
    snap_tol: float = 0.01
    restart_every: int = 0  # generations between fresh populations (0: never)


@dataclass(frozen=True)
class Fit:
    """Settings of ``rulesearch fit``: a parametric family fitted by CMA-ES."""

    family: str = "taylor"
    variables: tuple[str, ...] = ()  # empty: every terminal of the grammar
    max_power: int = 2  # taylor
    exclude: tuple[str, ...] = ()  # taylor terms fixed at 0
    hidden: tuple[int, ...] = (10,)  # mlp
    activation: str = "tanh"  # mlp hidden units
    l1: float = 0.0  # penalty l1 * sum|params| added to the loss (published default 1e-2)
    generations: int = 1000  # default per family: DEFAULT_FIT_GENERATIONS
    popsize: int = 24
    sigma0: float = 0.1
    holdout: float = 0.25  # fraction of trials held out from fitting (data tasks)
    target_loss: float = 0.0


@dataclass(frozen=True)
class Evaluation:
    losses: np.ndarray  # (n_rules,)
    blown: np.ndarray  # bool (n_rules,)


@dataclass(frozen=True, eq=False)
class Task:
    """A validated task with its arrays materialised (inputs shared by every candidate)."""

    name: str
    source: str
    grammar: Grammar
    network: Network
    inputs: Inputs
    objective: str
    average_fraction: float
    search: Search
    fit: Fit
    seed: int
    overrides: tuple[str, ...]
    x: np.ndarray  # (trials, steps, n_in)
    w0: np.ndarray  # (trials, n_out, n_in)
    target: np.ndarray | None = None  # (trials, steps, n_out), NaN = not recorded
    pc1: np.ndarray | None = None  # (n_in,) leading principal component of the inputs
    data_source: str | None = None
    data_meta: dict | None = None  # the data file's meta (e.g. the ground-truth rule of simulated data)

    def parse(self, text: str | Sequence[str]) -> Rule:
        return parse_rule(text, self.grammar)

    def simulate(self, rules: Sequence[Rule] | PackedPrograms, record: bool = False) -> rate.RateResult:
        """Run the network under each rule on the task's trials."""
        packed = rules if isinstance(rules, PackedPrograms) else pack_rules(rules)
        n = self.network
        steps = self.x.shape[1]
        return rate.simulate(packed, self.x, self.w0, n.eta, n.activation, n.weight_bound,
                             self.target, record, steps - max(1, round(self.average_fraction * steps)))

    def evaluate_packed(self, packed: PackedPrograms) -> Evaluation:
        result = self.simulate(packed)
        losses = OBJECTIVES[self.objective](self, result)
        blown = result.blown
        losses = np.where(blown | ~np.isfinite(losses), WORST_LOSS, np.minimum(losses, WORST_LOSS))
        return Evaluation(losses, blown)

    def evaluate(self, rules: Sequence[Rule]) -> np.ndarray:
        """Loss of each rule, float64 (n_rules,); ``WORST_LOSS`` where weights blew up."""
        if not rules:
            return np.zeros(0)
        return self.evaluate_packed(pack_rules(rules)).losses


def pack_rules(rules: Sequence[Rule]) -> PackedPrograms:
    return pack([p for r in rules for p in r.programs()])


# ---------------------------------------------------------------- objectives

def pca_loss(task: Task, result: rate.RateResult) -> np.ndarray:
    """Mean over trials of (1 - cos^2(w, pc1)) + (|w| - 1)^2 for a single output neuron.

    w is the weight vector averaged over the last ``objective.average_fraction`` of
    each trial, so that the loss measures the rule's fixed point rather than the
    fluctuations that any finite learning rate leaves around it.
    """
    w = result.w_mean[:, :, 0, :]  # (n_ind, trials, n_in)
    norm = np.linalg.norm(w, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = np.abs(w @ task.pc1) / norm
    loss = (1.0 - cos**2) + (norm - 1.0) ** 2
    return np.where(norm > 0, loss, 2.0).mean(axis=1)


def fit_activity_loss(task: Task, result: rate.RateResult) -> np.ndarray:
    """Mean squared error between simulated and recorded activity over recorded entries."""
    return result.sse.sum(axis=1) / np.maximum(result.count.sum(axis=1), 1)


OBJECTIVES: dict[str, Callable[[Task, rate.RateResult], np.ndarray]] = {
    "pca": pca_loss,
    "fit_activity": fit_activity_loss,
}
SIMULATORS = {"rate": rate}
NEEDS_DATA = {"fit_activity"}


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


def load_task(path: str | Path, overrides: Sequence[str] = (), data: str | Path | ActivityData | None = None,
              seed: int | None = None, require_data: bool = True) -> Task:
    """Load and validate a task file, apply ``--set`` overrides and attach data.

    ``seed`` (default: the task's ``search.seed``, else 0) also seeds generated
    inputs unless ``inputs.seed`` is set. ``require_data=False`` loads a data-fitting
    task without data (to simulate data from it).
    """
    path = Path(path)
    raw = apply_overrides(read_toml(path, TaskError), overrides)
    f = Fields(raw, path, "", TaskError)
    name = f.get("name", str, path.stem)
    f.get("description", str, "")
    grammar = load_grammar(_resolve_grammar(f.get("grammar", str), path))

    nf = f.sub("network")
    simulator = nf.get("simulator", str, "rate", choices=tuple(SIMULATORS))
    network = Network(simulator, nf.get("n_in", int, low=1), nf.get("n_out", int, low=1),
                      nf.get("activation", str, "linear", choices=tuple(rate.ACTIVATIONS)),
                      nf.get("eta", float, low=0.0), nf.get("weight_bound", float, 1e3, low=0.0))
    nf.finish()
    missing = [t for t in grammar.names if t not in SIMULATORS[simulator].PROVIDED_NAMES]
    if missing:
        raise TaskError(f"{path}: grammar '{grammar.name}' uses {', '.join(missing)}, which the "
                        f"'{simulator}' simulator does not provide ({', '.join(rate.PROVIDED_NAMES)})")

    inf = f.sub("inputs", {})
    inputs = Inputs(inf.get("trials", int, 4, low=1), inf.get("steps", int, 1000, low=1),
                    inf.get("leading_variance", float, 4.0, low=0.0),
                    inf.get("other_variance", float, 1.0, low=0.0),
                    inf.get("mean", float, 0.0), inf.get("init_std", float, 0.3, low=0.0),
                    inf.get("seed", int, None))
    inf.finish()

    of = f.sub("objective")
    objective = of.get("name", str, choices=tuple(OBJECTIVES))
    average_fraction = of.get("average_fraction", float, 0.0, low=0.0, high=1.0)
    of.finish()
    if objective == "pca" and network.n_out != 1:
        raise TaskError(f"{path}: field 'network.n_out' is {network.n_out}: objective 'pca' "
                        "needs a single output neuron (1)")

    sf = f.sub("search", {})
    defaults = Search()
    search = Search(
        population=sf.get("population", int, defaults.population, low=4),
        generations=sf.get("generations", int, defaults.generations, low=0),
        target_loss=sf.get("target_loss", float, defaults.target_loss, low=0.0),
        p_crossover=sf.get("p_crossover", float, defaults.p_crossover, low=0.0, high=1.0),
        p_mutation=sf.get("p_mutation", float, defaults.p_mutation, low=0.0, high=1.0),
        optimise_top=sf.get("optimise_top", int, defaults.optimise_top, low=0),
        selection_rel_tol=sf.get("selection_rel_tol", float, defaults.selection_rel_tol, low=0.0),
        selection_abs_tol=sf.get("selection_abs_tol", float, defaults.selection_abs_tol, low=0.0),
        snap_tol=sf.get("snap_tol", float, defaults.snap_tol, low=0.0),
        restart_every=sf.get("restart_every", int, defaults.restart_every, low=0))
    task_seed = sf.get("seed", int, 0)
    sf.finish()
    if search.p_crossover + search.p_mutation > 1.0:
        raise TaskError(f"{path}: fields 'search.p_crossover' + 'search.p_mutation' = "
                        f"{search.p_crossover + search.p_mutation:g}: expected at most 1")
    fit = _load_fit(f.sub("fit", {}), grammar)
    f.finish()

    seed = task_seed if seed is None else int(seed)
    task = Task(name, str(path), grammar, network, inputs, objective, average_fraction, search, fit, seed,
                tuple(overrides),
                *generate_inputs(network, inputs, seed))
    if isinstance(data, (str, Path)):
        data = load_activity(data)
    if data is not None:
        if objective not in NEEDS_DATA:
            raise TaskError(f"{path}: objective '{objective}' does not use --data (objectives that "
                            f"do: {', '.join(sorted(NEEDS_DATA))})")
        task = with_data(task, data)
    elif objective in NEEDS_DATA and require_data:
        raise TaskError(f"{path}: objective '{objective}' needs recorded activity: pass --data FILE.npz "
                        "(arrays x, y, w0; see the README), or write one with 'rulesearch simulate'")
    return task


# CMA-ES generations when the task does not say: the 51-parameter MLP converges more slowly.
DEFAULT_FIT_GENERATIONS = {"taylor": 1000, "mlp": 1500}


def _load_fit(ff: Fields, grammar: Grammar) -> Fit:
    from .families import FAMILIES, MLP_ACTIVATIONS
    d = Fit()

    def names(key, default):
        value = ff.get(key, list, default)
        if not all(isinstance(v, str) for v in value):
            ff.fail(key, f"is {value!r}: expected a list of strings")
        return tuple(value)

    variables = names("variables", list(grammar.names))
    bad = [v for v in variables if v not in grammar.names]
    if bad or not variables:
        ff.fail("variables", f"is {list(variables)!r}: expected names from grammar '{grammar.name}' "
                f"({', '.join(grammar.names)})")
    hidden = ff.get("hidden", list, list(d.hidden))
    if not hidden or not all(isinstance(h, int) and not isinstance(h, bool) and h >= 1 for h in hidden):
        ff.fail("hidden", f"is {hidden!r}: expected a list of positive integers (units per hidden layer)")
    family = ff.get("family", str, d.family, choices=FAMILIES)
    fit = Fit(family=family, variables=variables,
              max_power=ff.get("max_power", int, d.max_power, low=0, high=6), exclude=names("exclude", []),
              hidden=tuple(hidden), activation=ff.get("activation", str, d.activation, choices=MLP_ACTIVATIONS),
              l1=ff.get("l1", float, d.l1, low=0.0), generations=ff.get("generations", int, DEFAULT_FIT_GENERATIONS[family], low=0),
              popsize=ff.get("popsize", int, d.popsize, low=4), sigma0=ff.get("sigma0", float, d.sigma0, low=1e-12),
              holdout=ff.get("holdout", float, d.holdout, low=0.0, high=0.9),
              target_loss=ff.get("target_loss", float, d.target_loss, low=0.0))
    ff.finish()
    return fit


def generate_inputs(network: Network, inputs: Inputs, seed: int):
    """Gaussian inputs with one dominant principal component, and random initial weights.

    Returns x (trials, steps, n_in), w0 (trials, n_out, n_in), None, pc1 (n_in,).
    """
    rng = np.random.default_rng(inputs.seed if inputs.seed is not None else seed)
    n = network.n_in
    q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    variances = np.full(n, inputs.other_variance)
    variances[0] = inputs.leading_variance
    mixing = q * np.sqrt(variances)  # columns: principal axes scaled by their std
    z = rng.normal(size=(inputs.trials, inputs.steps, n))
    x = z @ mixing.T + inputs.mean
    w0 = rng.normal(0.0, inputs.init_std, size=(inputs.trials, network.n_out, n))
    return x, w0, None, q[:, 0].copy()


def with_data(task: Task, data: ActivityData) -> Task:
    """The task driven by recorded inputs and initial weights, fitted to recorded activity."""
    trials, steps, n_in = data.x.shape
    n_out = data.y.shape[2]
    network = replace(task.network, n_in=n_in, n_out=n_out)
    inputs = replace(task.inputs, trials=trials, steps=steps)
    return replace(task, network=network, inputs=inputs, x=data.x, w0=data.w0, target=data.y,
                   data_source=data.source, data_meta=data.meta)
