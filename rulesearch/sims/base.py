"""The interface every simulator plug-in implements (see ``sims/__init__.py`` for how to add one)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from ..primitives import VARIABLES, Variable

if TYPE_CHECKING:
    from .._fields import Fields
    from ..rules import Rule
    from ..tasks import Task
    from ..vm import PackedPrograms


@dataclass(frozen=True)
class PathwaySpec:
    """A plastic pathway as a simulator declares it: the variables its synapses see, the LaTeX
    left-hand side printed for it and its learning rate (a task may override both)."""

    name: str
    variables: tuple[Variable, ...]
    symbol: str
    eta: float
    meaning: str = ""

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(v.name for v in self.variables)


def provided(*names: str, meanings: dict | None = None, latex: dict | None = None) -> tuple[Variable, ...]:
    """Catalogue variables by name, with a pathway-specific meaning and LaTeX symbol where given."""
    meanings, latex = meanings or {}, latex or {}
    out = []
    for n in names:
        v = VARIABLES[n]
        out.append(Variable(v.name, v.kind, v.slot, meanings.get(n, v.meaning), latex.get(n, "")))
    return tuple(out)


@dataclass(frozen=True)
class Objective:
    """A loss over a simulation result: ``fn(task, result) -> (n_individuals,)``. ``needs_data``:
    only with ``--data``; ``accepts_data``: ``--data`` is optional (it replaces generated inputs).
    ``units`` (optional): the loss split into independent units, ``units(task, result) ->
    (n_individuals, n_units)`` summing to ``fn`` (e.g. per animal or per recorded trial), named
    ``unit_name``; noise-aware selection pairs rules' losses over them."""

    name: str
    fn: Callable[["Task", Any], np.ndarray]
    needs_data: bool = False
    description: str = ""
    accepts_data: bool = False
    units: Callable[["Task", Any], np.ndarray] | None = None
    unit_name: str = ""


class Simulator:
    """A simulator plug-in. Subclasses set the class attributes and implement the methods; the
    rest of rulesearch only talks to a simulator through these.

    Attributes: ``name`` (the value of ``network.simulator``), ``sections`` (the task-file
    sections besides [network] it reads, e.g. ``("inputs", "protocol")``; a task that has any
    other section is refused), ``objectives`` (name -> ``Objective``), ``data_help`` (what
    ``--data`` takes, for messages).
    """

    name: str = ""
    sections: tuple[str, ...] = ("inputs",)
    objectives: dict[str, Objective] = {}
    data_help: str = ""
    # per-individual simulation parameters a family may fit with its rule (``PackedPrograms.extras``)
    rule_parameters: tuple[str, ...] = ()
    smooth_loss: bool = True  # False: losses jump with the constants (spike counts); no gradient-based tuning

    # -- configuration
    def configure(self, network: "Fields", sections: dict[str, "Fields"], objective: str) -> Any:
        """Read and validate [network] and the simulator's own sections into a frozen config;
        call ``finish()`` on each (unknown fields are refused). ``objective`` is already known to
        be one of ``objectives``."""
        raise NotImplementedError

    def pathways(self, config) -> tuple[PathwaySpec, ...]:
        """The plastic pathways of the configured network, in the order rules list them."""
        raise NotImplementedError

    # -- inputs and data
    def generate(self, config, seed: int) -> Any:
        """The inputs every candidate shares, generated from ``seed`` (a frozen state object)."""
        raise NotImplementedError

    def load_data(self, path: str | Path) -> Any:
        """Read a data file of this simulator's schema (``DataError`` naming file and array)."""
        raise NotImplementedError

    def attach(self, task: "Task", data) -> "Task":
        """The task driven by recorded data (``TaskError`` if the data does not fit the network)."""
        raise NotImplementedError

    def split(self, task: "Task", holdout: float) -> tuple["Task", "Task | None"]:
        """(fitting task, held-out task or None)."""
        return task, None

    def heldout(self, task: "Task") -> "Task | None":
        """Conditions a search never sees (e.g. other input drives), on which ``evolve`` scores its
        selected rule; None when the simulator has none beyond its data split."""
        return None

    def split_info(self, train: "Task", test: "Task | None") -> dict:
        """What run.json records about the split."""
        return {}

    def n_units(self, task: "Task") -> int | None:
        """How many independent units (animals, recorded trials) the objective's loss splits into, when
        known without simulating; None otherwise."""
        return None

    # -- constraints (``rulesearch families``)
    def constraints(self, config) -> tuple:
        """The constraints a plausible network satisfies: objects with ``metric``, ``low``, ``high``,
        ``stage`` and ``holds(values) -> bool array``; () for a simulator without (no ``families``)."""
        return ()

    def nuisance(self, config) -> dict[str, tuple[float, float]]:
        """Per-simulation parameters (name -> uniform prior range) a family filter draws for every
        simulation. They reach ``simulate`` in ``packed.extras`` after the rule parameters
        (``rule_parameters`` per plastic pathway), followed by each simulation's input seed."""
        return {}

    def metrics(self, task: "Task", packed: "PackedPrograms") -> dict[str, np.ndarray]:
        """Every metric the constraints read, per individual: name -> (n_individuals,)."""
        raise ValueError(f"the '{self.name}' simulator has no metrics or constraints: 'rulesearch families' needs "
                         "a task whose simulator has them (e.g. tasks/ei-network.toml)")

    # -- simulation
    def simulate(self, task: "Task", packed: "PackedPrograms", record: bool = False, **options):
        """Run every individual of ``packed`` (individual-major, pathway-minor); the result has a
        boolean ``blown`` (n_individuals,) and whatever the simulator's objectives read."""
        raise NotImplementedError

    def judged_by(self, task: "Task") -> str | None:
        """The likelihood ``simulate(..., judging=True)`` uses to judge rules (``Task.unit_losses``:
        selection, the held-out report) when it is not the search's own; None when it is."""
        return None

    def visited_states(self, task: "Task", packed: "PackedPrograms", pathway: int, names, n_samples: int,
                       rng: np.random.Generator) -> np.ndarray:
        """Values (n_samples, len(names)) of ``names`` at synapses of ``pathway`` drawn from the
        states the network visits under the (single) rule in ``packed``; for ``distill``."""
        raise NotImplementedError

    def derivatives(self, task: "Task", family) -> tuple | None:
        """Exact derivatives of the task's loss by a family's parameters, for ``rulesearch fit``'s
        Levenberg-Marquardt optimiser (``gradfit.py``): ``(model, describe)`` with
        ``model(theta, active) -> gradfit.Derivatives`` and ``describe(params) -> (term_rms,
        ranges)`` or None; None when this simulator cannot differentiate this task and family."""
        return None

    def heldout_scores(self, test: "Task", packed: "PackedPrograms", true_rule: "Rule | None") -> dict:
        """Scores of one fitted rule on the held-out view (``true_rule``: the data's ground truth)."""
        return {"loss": float(test.evaluate_packed(packed).losses[0])}

    def example_trace(self, test: "Task", packed: "PackedPrograms") -> dict | None:
        """A held-out recording next to the fitted rule's prediction, for fit.png (or None)."""
        return None

    def synthesize(self, task: "Task", rule: "Rule", out: Path, noise: float, observed: float,
                   animals: int | None) -> str:
        """Write synthetic data under ``rule`` (``rulesearch simulate``); returns a one-line summary."""
        raise ValueError(f"'{self.name}' tasks cannot write synthetic data")

    def data_facts(self, task: "Task") -> dict:
        """Facts about the attached data recorded in run.json (e.g. files skipped)."""
        return {}

    def describe(self, config) -> dict:
        """Facts recorded in a data file's meta and in run.json."""
        return {}
