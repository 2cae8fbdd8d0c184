"""The fly mushroom-body choice simulator (``network.simulator = "choice"``): odours -> plastic
tanh layer -> fixed readout -> P(accept), fitted to recorded choices (objective ``fit_choices``).

One pathway (``w``): x the Kenyon-cell input of the accepted encounter, y the plastic unit's
activity, w the weight, r the trial's reward, rbar the expected reward. The kernels and the
weight filter are in ``kernel.py``; the data schema in ``rulesearch/choices.py``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import numpy as np

from ...choices import ChoiceData, load_choices, save_choices_mat, save_choices_npz
from ...errors import TaskError
from ..base import Objective, PathwaySpec, Simulator, provided
from .kernel import (
    ChoiceArrays,
    ChoiceResult,
    acceptance_probability,
    arrays_from_choices,
    expected_rewards,
    sample,
    scored_decisions,
    simulate,
    with_score,
)

__all__ = ["ChoiceArrays", "ChoiceResult", "acceptance_probability", "arrays_from_choices", "expected_rewards",
           "sample", "scored_decisions", "simulate", "with_score", "SIMULATOR", "Protocol"]

log = logging.getLogger("rulesearch")


@dataclass(frozen=True)
class Protocol:
    """The fly choice experiment: odour inputs, blocks, baited rewards."""

    odour_mean: float = 0.75  # activity of an odour's half of the inputs
    odour_variance: float = 0.015  # Gaussian input noise on every input, per encounter
    blocks: tuple[tuple[float, float], ...] = ((0.2, 0.8), (0.9, 0.1), (0.2, 0.8))  # P(reward) per odour
    trials_per_block: int = 80
    reward_window: int = 10  # rbar = mean of this many last rewards (zeros before any)
    readout: float = 1.0  # fixed readout weight of every plastic unit onto the logit
    animals: int = 18  # synthetic animals written by 'rulesearch simulate'
    heldout_every: int = 4  # every 4th trial of every animal is held out from fitting (0: none)
    weight_filter: bool = True  # track each animal's weights from its decisions (see kernel.simulate)


@dataclass(frozen=True)
class ChoiceConfig:
    n_in: int
    n_out: int
    eta: float
    weight_bound: float
    init_std: float  # initial weights ~ init_std * N(0, 1)
    inputs_seed: int | None
    protocol: Protocol

    @property
    def readout(self) -> np.ndarray:
        return np.full(self.n_out, self.protocol.readout)


@dataclass(frozen=True, eq=False)
class ChoiceState:
    patterns: np.ndarray  # (2, n_in) each odour's mean input
    w0: np.ndarray  # (animals, n_out, n_in)
    choices: ChoiceArrays | None = None  # recorded behaviour laid out for the kernel
    data: ChoiceData | None = None


def _load_protocol(pf) -> Protocol:
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


def choice_inputs(config: ChoiceConfig, animals: int, seed: int):
    """Odour patterns (2, n_in): each odour drives its own random half of the inputs at
    ``odour_mean``; and initial weights (animals, n_out, n_in) ~ init_std * N(0, 1)."""
    rng = np.random.default_rng(config.inputs_seed if config.inputs_seed is not None else seed)
    n = config.n_in
    order = rng.permutation(n)
    patterns = np.zeros((2, n))
    patterns[0, order[:n // 2]] = config.protocol.odour_mean
    patterns[1, order[n // 2:]] = config.protocol.odour_mean
    w0 = config.init_std * rng.standard_normal((animals, config.n_out, n))
    return patterns, w0


def fit_choices_loss(task, result: ChoiceResult) -> np.ndarray:
    """Mean binary cross-entropy (nats per decision) of the animals' scored decisions."""
    return result.nll.sum(axis=1) / max(result.count.sum(), 1.0)


class ChoiceSimulator(Simulator):
    name = "choice"
    sections = ("inputs", "protocol")
    objectives = {"fit_choices": Objective("fit_choices", fit_choices_loss, needs_data=True,
                                           description="cross-entropy of recorded decisions")}
    data_help = "recorded choices: pass --data FILE.npz, a per-fly .mat file or a folder of them"

    def configure(self, network, sections, objective):
        # the model's plastic units are tanh (the published mushroom-body model); the field may say so
        network.get("activation", str, "tanh", choices=("tanh",))
        n_in, n_out = network.get("n_in", int, low=1), network.get("n_out", int, low=1)
        eta, bound = network.get("eta", float, low=0.0), network.get("weight_bound", float, 1e3, low=0.0)
        network.finish()
        f = sections["inputs"]
        init_std, seed = f.get("init_std", float, 0.3, low=0.0), f.get("seed", int, None)
        f.finish()
        return ChoiceConfig(n_in, n_out, eta, bound, init_std, seed, _load_protocol(sections["protocol"]))

    def pathways(self, config):
        return (PathwaySpec("w", provided("x", "y", "w", "r", "rbar"), r"\Delta w_{ij}", config.eta),)

    def generate(self, config, seed):
        return ChoiceState(*choice_inputs(config, config.protocol.animals, seed))

    def load_data(self, path):
        return load_choices(path)

    def attach(self, task, data):
        """The task driven by recorded odours, decisions and rewards (teacher forcing)."""
        if not isinstance(data, ChoiceData):
            raise TaskError(f"{task.source}: activity data given to a choice task (expected choice data)")
        p = task.config.protocol
        for line in data.skipped:
            log.warning("skipped %s", line)
        per = [data.per_animal(a) for a in range(data.n_animals)]
        patterns, w0 = choice_inputs(task.config, data.n_animals, task.seed)
        # Recorded behaviour does not contain the Kenyon-cell activity of each encounter: the model
        # sees each odour's mean pattern and treats the noise as unknown (averaged over, and tracked
        # by the weight filter). Drawing fresh noise instead would not match the noise the animal saw
        # and biases the fitted learning rate down (errors in variables: c = 0.75-0.8 instead of 1 for
        # x*(r - rbar) on 18 synthetic flies).
        arrays = arrays_from_choices([q[0] for q in per], [q[1] for q in per], [q[2] for q in per], patterns,
                                     p.reward_window, p.heldout_every)
        return replace(task, state=ChoiceState(patterns, w0, arrays, data), data_source=data.source,
                       data_meta=data.meta)

    def split(self, task, holdout):
        """Every ``protocol.heldout_every``-th trial of every animal is held out (``holdout`` is not
        used): the fitting task scores the other trials, the held-out view scores those."""
        if task.state.choices is None or not task.config.protocol.heldout_every:
            return task, None
        s = task.state
        return task, replace(task, state=replace(s, choices=with_score(s.choices, "test")))

    def split_info(self, train, test):
        return {"animals": train.state.data.n_animals, "heldout_every": train.config.protocol.heldout_every}

    def simulate(self, task, packed, record=False, filtered: bool | None = None, **options):
        """filtered: weights tracked from the animal's decisions (default: the protocol's
        ``weight_filter``); False gives the deterministic teacher-forced trajectory."""
        s, c = task.state, task.config
        if s.choices is None:
            raise TaskError(f"{task.source}: the choice model needs recorded choices: pass --data")
        p = c.protocol
        return simulate(packed, s.choices, s.w0, c.readout, task.etas[0], c.weight_bound, record,
                        p.odour_variance, p.weight_filter if filtered is None else filtered, c.init_std ** 2)

    def derivatives(self, task, family):
        from .sensitivity import derivatives_model  # Taylor fits without the weight filter
        return derivatives_model(task, family)

    def visited_states(self, task, packed, pathway, names, n_samples, rng):
        """Every update of every animal: the accepted encounter's input, activity and weights."""
        sim = self.simulate(task, packed, record=True)
        ch = task.state.choices
        A, n_out, n_in = sim.w.shape[1], sim.w.shape[3], sim.w.shape[4]
        b = rng.integers(0, A, n_samples)
        k = (rng.random(n_samples) * ch.n_trials[b]).astype(np.int64)  # a completed trial of animal b
        i = rng.integers(0, n_out, n_samples)
        j = rng.integers(0, n_in, n_samples)
        W = sim.w[0][b, k]  # (n, n_out, n_in) before the update
        x = task.state.patterns[ch.odour[b, ch.trial_end[b, k]]]  # (n, n_in) the accepted odour's pattern
        y = np.tanh(np.einsum("nij,nj->ni", W, x))
        rows = np.arange(n_samples)
        columns = {"x": x[rows, j], "y": y[rows, i], "w": W[rows, i, j], "r": ch.r[b, k], "rbar": ch.rbar[b, k]}
        missing = [v for v in names if v not in columns]
        if missing:
            raise ValueError(f"distill samples {', '.join(columns)}; this rule also uses {', '.join(missing)}")
        return np.stack([columns[v] for v in names], axis=1)

    def heldout_scores(self, test, packed, true_rule):
        """Mean cross-entropy, deviance explained against the model without plasticity (pooled and per
        animal), and, when the true rule is known, R^2 of the weight trajectories (all trials,
        teacher-forced, not filtered: the rules' own dynamics under the animal's odours and rewards)
        between the fitted and the true rule."""
        from ...fit import r_squared
        from ...tasks import pack_rules
        null = pack_rules([test.parse("0")])
        fitted = self.simulate(test, packed)
        base = self.simulate(test, null)
        nll, nll0 = fitted.nll[0], base.nll[0]
        out = {"trials": "every %d-th trial of %d animals" % (test.config.protocol.heldout_every, len(nll)),
               "decisions": int(fitted.count.sum()), "loss": float(nll.sum() / max(fitted.count.sum(), 1)),
               "deviance_explained": float(1 - nll.sum() / nll0.sum()),
               "deviance_explained_per_animal": [float(1 - a / b) for a, b in zip(nll, nll0)]}
        if true_rule is not None:
            true_packed = pack_rules([true_rule])
            truth = self.simulate(test, true_packed)
            fitted_w = self.simulate(test, packed, record=True, filtered=False).w[0]
            truth_w = self.simulate(test, true_packed, record=True, filtered=False).w[0]
            ch = test.state.choices
            # weights before each completed trial of each animal (padding beyond n_trials excluded)
            keep = np.arange(ch.trial_end.shape[1] + 1)[None, :] <= ch.n_trials[:, None]
            wf = fitted_w[keep].reshape(-1, np.prod(fitted_w.shape[2:]))
            wt = truth_w[keep].reshape(-1, np.prod(truth_w.shape[2:]))
            out.update(true_rule=true_rule.text(), weight_r2=r_squared(wf, wt),
                       true_rule_loss=float(truth.nll[0].sum() / max(truth.count.sum(), 1)))
        return out

    def synthesize(self, task, rule, out, noise, observed, animals):
        """Synthetic flies: per-fly .mat files and choices.npz in the folder ``out``."""
        if noise or observed != 1.0:
            raise ValueError("--noise and --observed are for activity data; choice tasks sample decisions")
        if out.suffix == ".npz":
            raise ValueError(f"--out {out}: choice tasks write a folder (per-fly .mat files and choices.npz)")
        data = simulate_choices(task, rule, animals, task.seed)
        files = save_choices_mat(out, data)
        save_choices_npz(out / "choices.npz", data)
        line = (f"wrote {out}: {data.n_animals} flies ({len(files)} .mat files + choices.npz), {len(data.animal)} "
                f"encounters, {int(data.decision.sum())} acceptances, {int(data.reward.sum())} rewards, "
                f"rule {rule.text()}")
        stopped = sum(data.meta["stopped_early"])
        if stopped:
            line += f"\nnote: {stopped} flies stopped accepting before the protocol's end"
        return line

    def data_facts(self, task):
        data = task.state.data
        return {} if data is None else {"data_skipped": list(data.skipped)}

    def describe(self, config):
        return {"eta": config.eta}


def simulate_choices(task, rule, animals: int | None = None, seed: int = 0) -> ChoiceData:
    """Synthetic animals in the choice schema: the protocol run under ``rule``, decisions sampled."""
    from ...results import versions
    from ...tasks import pack_rules
    c = task.config
    p = c.protocol
    animals = animals or p.animals
    patterns, w0 = choice_inputs(c, animals, seed)
    odour, decision, reward, stopped = sample(
        pack_rules([rule]), w0, patterns, float(np.sqrt(p.odour_variance)), np.array(p.blocks),
        p.trials_per_block, p.reward_window, c.readout, task.etas[0], c.weight_bound, seed)
    meta = {"rule": rule.text(), "task": task.source, "seed": seed, "animals": animals, "eta": task.etas[0],
            "overrides": list(task.overrides), "stopped_early": [int(s) for s in stopped],
            "versions": versions()}
    animal = np.concatenate([np.full(len(o), a, np.int64) for a, o in enumerate(odour)])
    return ChoiceData(animal, np.concatenate(odour), np.concatenate(decision), np.concatenate(reward),
                      tuple(f"fly{a + 1:02d}" for a in range(animals)), meta)


SIMULATOR = ChoiceSimulator()
