"""Task files: a network, its inputs, an objective and search defaults -> a frozen ``Task``.

``Task.evaluate(rules)`` is the whole contract the searches rely on: rules in,
one loss per rule out (``WORST_LOSS`` for rules whose weights blow up).
"""
from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ._fields import Fields
from ._toml import read_toml, tomllib
from .choices import ChoiceData, load_choices
from .data import ActivityData, load_activity
from .errors import TaskError
from .grammar import Grammar, find_grammar, load_grammar
from .rules import Rule, parse_rule
from .sims import choice, rate
from .vm import PackedPrograms, pack

log = logging.getLogger("rulesearch")
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
class Protocol:
    """The fly choice experiment (simulator "choice"): odour inputs, blocks, baited rewards."""

    odour_mean: float = 0.75  # activity of an odour's half of the inputs
    odour_variance: float = 0.015  # Gaussian input noise on every input, per encounter
    blocks: tuple[tuple[float, float], ...] = ((0.2, 0.8), (0.9, 0.1), (0.2, 0.8))  # P(reward) per odour
    trials_per_block: int = 80
    reward_window: int = 10  # rbar = mean of this many last rewards (zeros before any)
    readout: float = 1.0  # fixed readout weight of every plastic unit onto the logit
    animals: int = 18  # synthetic animals written by 'rulesearch simulate'
    heldout_every: int = 4  # every 4th trial of every animal is held out from fitting (0: none)
    weight_filter: bool = True  # track each animal's weights from its decisions (see choice.simulate)


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
    x: np.ndarray  # rate: (trials, steps, n_in); choice: odour patterns (2, n_in)
    w0: np.ndarray  # (trials or animals, n_out, n_in)
    target: np.ndarray | None = None  # (trials, steps, n_out), NaN = not recorded
    pc1: np.ndarray | None = None  # (n_in,) leading principal component of the inputs
    data_source: str | None = None
    data_meta: dict | None = None  # the data file's meta (e.g. the ground-truth rule of simulated data)
    protocol: Protocol | None = None  # choice tasks
    choices: choice.ChoiceArrays | None = None  # choice tasks with data
    choice_data: ChoiceData | None = None

    @property
    def readout(self) -> np.ndarray:
        return np.full(self.network.n_out, self.protocol.readout)

    def parse(self, text: str | Sequence[str]) -> Rule:
        return parse_rule(text, self.grammar)

    def simulate(self, rules: Sequence[Rule] | PackedPrograms, record: bool = False, filtered: bool | None = None):
        """Run the network under each rule on the task's trials (rate) or animals (choice).

        filtered (choice only): weights tracked from the animal's decisions (default: the
        protocol's ``weight_filter``); False gives the deterministic teacher-forced trajectory."""
        packed = rules if isinstance(rules, PackedPrograms) else pack_rules(rules)
        n = self.network
        if n.simulator == "choice":
            if self.choices is None:
                raise TaskError(f"{self.source}: the choice model needs recorded choices: pass --data")
            p = self.protocol
            return choice.simulate(packed, self.choices, self.w0, self.readout, n.eta, n.weight_bound, record,
                                   p.odour_variance, p.weight_filter if filtered is None else filtered,
                                   self.inputs.init_std ** 2)
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


def fit_choices_loss(task: Task, result: choice.ChoiceResult) -> np.ndarray:
    """Mean binary cross-entropy (nats per decision) of the animals' scored decisions."""
    return result.nll.sum(axis=1) / max(result.count.sum(), 1.0)


OBJECTIVES: dict[str, Callable[[Task, object], np.ndarray]] = {
    "pca": pca_loss,
    "fit_activity": fit_activity_loss,
    "fit_choices": fit_choices_loss,
}
SIMULATORS = {"rate": rate, "choice": choice}
OBJECTIVE_SIMULATOR = {"pca": "rate", "fit_activity": "rate", "fit_choices": "choice"}
NEEDS_DATA = {"fit_activity", "fit_choices"}


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
                        f"'{simulator}' simulator does not provide "
                        f"({', '.join(SIMULATORS[simulator].PROVIDED_NAMES)})")
    protocol = _load_protocol(f.sub("protocol", {}), path) if simulator == "choice" else None

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
    if OBJECTIVE_SIMULATOR[objective] != simulator:
        raise TaskError(f"{path}: field 'objective.name' is {objective!r}, which needs the "
                        f"'{OBJECTIVE_SIMULATOR[objective]}' simulator (network.simulator is {simulator!r})")
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
    if simulator == "choice":
        task = Task(name, str(path), grammar, network, inputs, objective, average_fraction, search, fit, seed,
                    tuple(overrides), *choice_inputs(network, inputs, protocol, protocol.animals, seed),
                    protocol=protocol)
        if isinstance(data, (str, Path)):
            data = load_choices(data)
    else:
        task = Task(name, str(path), grammar, network, inputs, objective, average_fraction, search, fit, seed,
                    tuple(overrides), *generate_inputs(network, inputs, seed))
        if isinstance(data, (str, Path)):
            data = load_activity(data)
    if data is not None:
        if objective not in NEEDS_DATA:
            raise TaskError(f"{path}: objective '{objective}' does not use --data (objectives that "
                            f"do: {', '.join(sorted(NEEDS_DATA))})")
        task = with_data(task, data)
    elif objective in NEEDS_DATA and require_data:
        what = ("recorded choices: pass --data FILE.npz, a per-fly .mat file or a folder of them"
                if simulator == "choice" else "recorded activity: pass --data FILE.npz (arrays x, y, w0)")
        raise TaskError(f"{path}: objective '{objective}' needs {what} (see the README), "
                        "or write data with 'rulesearch simulate'")
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

    # checked against the grammar when a family is built (fit.make_family): a task may be
    # evolved with another grammar (--set grammar=...) without its [fit] section applying
    variables = names("variables", list(grammar.names))
    if not variables:
        ff.fail("variables", "is empty: expected grammar terminals or expressions over them")
    hidden = ff.get("hidden", list, list(d.hidden))
    if not hidden or not all(isinstance(h, int) and not isinstance(h, bool) and h >= 1 for h in hidden):
        ff.fail("hidden", f"is {hidden!r}: expected a list of positive integers (units per hidden layer)")
    family = ff.get("family", str, d.family, choices=FAMILIES)
    max_power = ff.get("max_power", (int, list), d.max_power)
    if isinstance(max_power, list):
        if len(max_power) != len(variables) or not all(
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


def _load_protocol(pf: Fields, path: Path) -> Protocol:
    d = Protocol()
    blocks = pf.get("blocks", list, [list(b) for b in d.blocks])
    if not blocks or not all(isinstance(b, list) and len(b) == 2 and all(
            isinstance(p, (int, float)) and not isinstance(p, bool) and 0 <= p <= 1 for p in b) for b in blocks):
        pf.fail("blocks", f"is {blocks!r}: expected a list of [P(reward | odour 0), P(reward | odour 1)] "
                "pairs, each in [0, 1]")
    protocol = Protocol(
        odour_mean=pf.get("odour_mean", float, d.odour_mean),
        odour_variance=pf.get("odour_variance", float, d.odour_variance, low=0.0),
        blocks=tuple((float(a), float(b)) for a, b in blocks),
        trials_per_block=pf.get("trials_per_block", int, d.trials_per_block, low=1),
        reward_window=pf.get("reward_window", int, d.reward_window, low=1),
        readout=pf.get("readout", float, d.readout),
        animals=pf.get("animals", int, d.animals, low=1),
        heldout_every=pf.get("heldout_every", int, d.heldout_every, low=0),
        weight_filter=pf.get("weight_filter", bool, d.weight_filter))
    pf.finish()
    if protocol.heldout_every == 1:
        pf.fail("heldout_every", "is 1: that would hold out every trial (use 0 for none, or >= 2)")
    return protocol


def choice_inputs(network: Network, inputs: Inputs, protocol: Protocol, animals: int, seed: int):
    """Odour patterns (2, n_in): each odour drives its own random half of the inputs at
    ``odour_mean``; and initial weights (animals, n_out, n_in) ~ init_std * N(0, 1)."""
    rng = np.random.default_rng(inputs.seed if inputs.seed is not None else seed)
    n = network.n_in
    order = rng.permutation(n)
    patterns = np.zeros((2, n))
    patterns[0, order[:n // 2]] = protocol.odour_mean
    patterns[1, order[n // 2:]] = protocol.odour_mean
    w0 = inputs.init_std * rng.standard_normal((animals, network.n_out, n))
    return patterns, w0


def with_choices(task: Task, data: ChoiceData) -> Task:
    """The choice task driven by recorded odours, decisions and rewards (teacher forcing)."""
    p = task.protocol
    for line in data.skipped:
        log.warning("skipped %s", line)
    per = [data.per_animal(a) for a in range(data.n_animals)]
    patterns, w0 = choice_inputs(task.network, task.inputs, p, data.n_animals, task.seed)
    # Recorded behaviour does not contain the Kenyon-cell activity of each encounter: the model
    # sees each odour's mean pattern and treats the noise as unknown (averaged over, and tracked
    # by the weight filter). Drawing fresh noise instead would not match the noise the animal saw
    # and biases the fitted learning rate down (errors in variables: c = 0.75-0.8 instead of 1 for
    # x*(r - rbar) on 18 synthetic flies).
    arrays = choice.arrays_from_choices([q[0] for q in per], [q[1] for q in per], [q[2] for q in per], patterns,
                                        p.reward_window, p.heldout_every)
    return replace(task, x=patterns, w0=w0, choices=arrays, choice_data=data, data_source=data.source,
                   data_meta=data.meta)


def with_data(task: Task, data: ActivityData | ChoiceData) -> Task:
    """The task driven by recorded inputs and initial weights, fitted to recorded activity."""
    if isinstance(data, ChoiceData):
        if task.network.simulator != "choice":
            raise TaskError(f"{task.source}: choice data given to a '{task.network.simulator}' task")
        return with_choices(task, data)
    if task.network.simulator == "choice":
        raise TaskError(f"{task.source}: activity data given to a choice task (expected choice data)")
    trials, steps, n_in = data.x.shape
    n_out = data.y.shape[2]
    network = replace(task.network, n_in=n_in, n_out=n_out)
    inputs = replace(task.inputs, trials=trials, steps=steps)
    return replace(task, network=network, inputs=inputs, x=data.x, w0=data.w0, target=data.y,
                   data_source=data.source, data_meta=data.meta)
