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
from .particles import particle_nll

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
    record_inputs: bool = False  # 'rulesearch simulate' also writes each encounter's input and the initial weights
    judge_particles: int = 0  # > 0: judge a search's front (selection, fit check, held-out report) by particles


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

    @property
    def recorded_inputs(self) -> bool:
        """The data record each encounter's input vector (no input noise left to model)."""
        return self.data is not None and self.data.inputs is not None

    @property
    def recorded_w0(self) -> bool:
        """The data record each animal's initial weights (no prior uncertainty about them)."""
        return self.data is not None and self.data.w0 is not None


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
        weight_filter=pf.get("weight_filter", bool, d.weight_filter),
        record_inputs=pf.get("record_inputs", bool, d.record_inputs),
        judge_particles=pf.get("judge_particles", int, d.judge_particles, low=0))
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


def fit_choice_activity_loss(task, result: ChoiceResult) -> np.ndarray:
    """Mean squared error of the model's output, P(accept), against the recorded activity over the
    recorded encounters of scored trials."""
    return result.sse.sum(axis=1) / max(result.activity_count.sum(), 1.0)


def fit_choice_activity_animals(task, result: ChoiceResult) -> np.ndarray:
    """``fit_choice_activity_loss`` split by animal (n_ind, animals), summing to it."""
    return result.sse / max(result.activity_count.sum(), 1.0)


ACTIVITY = "fit_choice_activity"


def fit_choices_animals(task, result: ChoiceResult) -> np.ndarray:
    """``fit_choices_loss`` split by animal (n_ind, animals): each animal's NLL over all scored
    decisions, so the animals sum to the loss."""
    return result.nll / max(result.count.sum(), 1.0)


def _unrecorded_variances(task) -> tuple[float, float]:
    """(input noise variance, prior variance of the initial weights) the data leave unknown."""
    s, c = task.state, task.config
    return 0.0 if s.recorded_inputs else c.protocol.odour_variance, 0.0 if s.recorded_w0 else c.init_std ** 2


class ChoiceSimulator(Simulator):
    name = "choice"
    sections = ("inputs", "protocol")
    objectives = {"fit_choices": Objective("fit_choices", fit_choices_loss, needs_data=True,
                                           description="cross-entropy of recorded decisions",
                                           units=fit_choices_animals, unit_name="animals"),
                  ACTIVITY: Objective(ACTIVITY, fit_choice_activity_loss, needs_data=True,
                                      description="squared error of P(accept) against the recorded output "
                                                  "per encounter",
                                      units=fit_choice_activity_animals, unit_name="animals")}
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
        c = task.config
        if data.w0 is not None:
            if data.w0.shape[1:] != (c.n_out, c.n_in):
                raise TaskError(f"{data.source}: recorded initial weights 'w0' are {data.w0.shape[1]} x "
                                f"{data.w0.shape[2]} per animal: the task's network is n_out x n_in = "
                                f"{c.n_out} x {c.n_in}")
            w0 = data.w0
        odours = [q[0] for q in per]
        rows = patterns
        if data.inputs is not None:
            if data.inputs.shape[1] != c.n_in:
                raise TaskError(f"{data.source}: recorded 'inputs' have {data.inputs.shape[1]} values per encounter: "
                                f"the task's network.n_in is {c.n_in}")
            # each encounter is its own pattern: the model sees exactly the recorded input
            rows = np.concatenate([data.animal_inputs(a) for a in range(data.n_animals)])
            starts = np.cumsum([0] + [len(o) for o in odours])
            odours = [np.arange(starts[a], starts[a + 1]) for a in range(data.n_animals)]
        # Without recorded inputs, the model sees each odour's mean pattern and treats the
        # Kenyon-cell noise as unknown (averaged over, and tracked by the weight filter). Drawing
        # fresh noise instead would not match the noise the animal saw and biases the fitted
        # learning rate down (errors in variables: c = 0.75-0.8 instead of 1 for x*(r - rbar) on
        # 18 synthetic flies).
        arrays = arrays_from_choices(odours, [q[1] for q in per], [q[2] for q in per], rows,
                                     p.reward_window, p.heldout_every)
        if task.objective == ACTIVITY:
            if data.activity is None or np.all(np.isnan(data.activity)):
                raise TaskError(f"{data.source}: objective '{ACTIVITY}' needs recorded activity (array 'activity' "
                                "(N,) in an NPZ file, variable activity in a fly file): none recorded")
            target = np.full(arrays.decision.shape, np.nan)
            for a in range(data.n_animals):
                act = data.animal_activity(a)
                target[a, :len(act)] = act
            arrays = replace(arrays, activity=target)
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

    def n_units(self, task):
        return None if task.state.data is None else task.state.data.n_animals

    def simulate(self, task, packed, record=False, filtered: bool | None = None, judging: bool = False, **options):
        """filtered: weights tracked from the animal's decisions (default: the protocol's
        ``weight_filter``); False gives the deterministic teacher-forced trajectory. judging (rules
        being judged, not searched): with ``protocol.judge_particles`` > 0 and unrecorded inputs or
        initial weights, the particle filter's likelihood (particles.py) instead of the weight filter's."""
        s, c = task.state, task.config
        if s.choices is None:
            raise TaskError(f"{task.source}: the choice model needs recorded choices: pass --data")
        p = c.protocol
        # recorded inputs leave no input noise to model, recorded initial weights no prior uncertainty;
        # with neither the filter has nothing to track and is exactly the deterministic model (tested)
        noise_var, prior_var = _unrecorded_variances(task)
        filtered = p.weight_filter if filtered is None else filtered
        activity = task.objective == ACTIVITY
        if judging and self.judged_by(task):
            # the exact marginal likelihood, by particles: the filter's curves where it is flat at large eta
            nll, blown = particle_nll(packed, s.choices, s.w0, c.readout, task.etas[0], c.weight_bound, noise_var,
                                      prior_var, p.judge_particles, task.seed)
            return ChoiceResult(nll, scored_decisions(s.choices), blown)
        # the activity objective follows the deterministic teacher-forced trajectory (as the published
        # neural mode): the recorded output, not the decisions, is what is fitted
        return simulate(packed, s.choices, s.w0, c.readout, task.etas[0], c.weight_bound, record, noise_var,
                        filtered and not activity and (noise_var > 0 or prior_var > 0), prior_var, activity)

    def judged_by(self, task):
        c = task.config
        if c.protocol.judge_particles and task.objective != ACTIVITY and any(_unrecorded_variances(task)):
            return f"particle filter ({c.protocol.judge_particles} particles, seed {task.seed})"
        return None

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
        x = ch.patterns[ch.odour[b, ch.trial_end[b, k]]]  # (n, n_in) the accepted encounter's input
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
        if test.objective == ACTIVITY:
            return self._heldout_activity(test, packed, true_rule)
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

    def _heldout_activity(self, test, packed, true_rule):
        """Activity objective: mean squared error and R^2 of P(accept) against the recorded output on
        the held-out trials; with the true rule, R^2 of the weight trajectories."""
        from ...fit import r_squared
        from ...tasks import pack_rules
        ch = test.state.choices
        fitted = self.simulate(test, packed, record=True)
        trial_of = np.zeros(ch.decision.shape, np.int64)
        for b in range(len(ch.n_enc)):
            trial_of[b, :ch.n_enc[b]] = np.searchsorted(ch.trial_end[b, :ch.n_trials[b]], np.arange(ch.n_enc[b]))
        scored = (np.take_along_axis(ch.score, trial_of, axis=1) > 0) & ~np.isnan(ch.activity)
        recorded = ch.activity[scored]
        out = {"trials": "every %d-th trial of %d animals" % (test.config.protocol.heldout_every, len(ch.n_enc)),
               "encounters": int(scored.sum()),
               "loss": float(fitted.sse[0].sum() / max(fitted.activity_count.sum(), 1)),
               "activity_r2_data": r_squared(fitted.p[0][scored][:, None], recorded[:, None])}
        if true_rule is not None:
            true_packed = pack_rules([true_rule])
            truth = self.simulate(test, true_packed, record=True)
            wf, wt = fitted.w[0], truth.w[0]
            keep = np.arange(ch.trial_end.shape[1] + 1)[None, :] <= ch.n_trials[:, None]
            out.update(true_rule=true_rule.text(),
                       weight_r2=r_squared(wf[keep].reshape(int(keep.sum()), -1), wt[keep].reshape(int(keep.sum()), -1)),
                       activity_r2=r_squared(fitted.p[0][scored][:, None], truth.p[0][scored][:, None]),
                       true_rule_loss=float(truth.sse[0].sum() / max(truth.activity_count.sum(), 1)))
        return out

    def synthesize(self, task, rule, out, noise, observed, animals):
        """Synthetic flies: per-fly .mat files and choices.npz in the folder ``out``. With the activity
        objective the flies also record their output, P(accept), at each encounter (plus measurement
        noise of ``noise`` times its standard deviation, ``observed``: the fraction of encounters
        recorded, the rest NaN), with each encounter's input and the initial weights."""
        activity = task.objective == ACTIVITY
        if (noise or observed != 1.0) and not activity:
            raise ValueError(f"--noise and --observed are for activity data (objective.name = \"{ACTIVITY}\"); "
                             "choice tasks sample decisions")
        if not 0.0 < observed <= 1.0:
            raise ValueError(f"--observed {observed:g}: expected a fraction in (0, 1]")
        if out.suffix == ".npz":
            raise ValueError(f"--out {out}: choice tasks write a folder (per-fly .mat files and choices.npz)")
        data = simulate_choices(task, rule, animals, task.seed, activity_noise=noise if activity else None,
                                observed=observed)
        files = save_choices_mat(out, data)
        save_choices_npz(out / "choices.npz", data)
        line = (f"wrote {out}: {data.n_animals} flies ({len(files)} .mat files + choices.npz), {len(data.animal)} "
                f"encounters, {int(data.decision.sum())} acceptances, {int(data.reward.sum())} rewards, "
                f"rule {rule.text()}")
        if data.activity is not None:
            line += (f"; output recorded at {int(np.sum(~np.isnan(data.activity)))} encounters (noise {noise:g} x its "
                     f"standard deviation {data.meta['activity_std']:.3g}), with each encounter's input and the "
                     "initial weights")
        stopped = sum(data.meta["stopped_early"])
        if stopped:
            line += f"\nnote: {stopped} flies stopped accepting before the protocol's end"
        return line

    def data_facts(self, task):
        data = task.state.data
        return {} if data is None else {"data_skipped": list(data.skipped)}

    def describe(self, config):
        return {"eta": config.eta}


def simulate_choices(task, rule, animals: int | None = None, seed: int = 0, activity_noise: float | None = None,
                     observed: float = 1.0) -> ChoiceData:
    """Synthetic animals in the choice schema: the protocol run under ``rule``, decisions sampled.

    With ``protocol.record_inputs`` the data also hold each encounter's input and the initial
    weights; with ``activity_noise`` (a number) also the model's output at each encounter, P(accept),
    plus Gaussian noise of ``activity_noise`` times its standard deviation, on a random ``observed``
    fraction of encounters (NaN elsewhere), and then inputs and initial weights too.
    """
    from ...results import versions
    from ...tasks import pack_rules
    c = task.config
    p = c.protocol
    animals = animals or p.animals
    record = p.record_inputs or activity_noise is not None
    patterns, w0 = choice_inputs(c, animals, seed)
    odour, decision, reward, stopped, *rec = sample(
        pack_rules([rule]), w0, patterns, float(np.sqrt(p.odour_variance)), np.array(p.blocks),
        p.trials_per_block, p.reward_window, c.readout, task.etas[0], c.weight_bound, seed, record)
    meta = {"rule": rule.text(), "task": task.source, "seed": seed, "animals": animals, "eta": task.etas[0],
            "overrides": list(task.overrides), "stopped_early": [int(s) for s in stopped],
            "recorded": ["inputs", "w0"] + (["activity"] if activity_noise is not None else []) if record else [],
            "versions": versions()}
    activity = None
    if activity_noise is not None:
        prob = np.concatenate(rec[1])
        # its own stream (the decisions above are those of the same seed without activity)
        rng = np.random.default_rng([seed, 18])
        activity = prob + activity_noise * prob.std() * rng.standard_normal(len(prob))
        activity[rng.random(len(prob)) >= observed] = np.nan
        meta.update(activity_noise=activity_noise, observed=observed, activity_std=float(prob.std()))
    animal = np.concatenate([np.full(len(o), a, np.int64) for a, o in enumerate(odour)])
    return ChoiceData(animal, np.concatenate(odour), np.concatenate(decision), np.concatenate(reward),
                      tuple(f"fly{a + 1:02d}" for a in range(animals)), meta,
                      inputs=np.concatenate(rec[0]) if record else None, w0=w0 if record else None,
                      activity=activity)


SIMULATOR = ChoiceSimulator()
