"""The rate network simulator (``network.simulator = "rate"``): a plastic feed-forward layer,
optionally with plastic lateral weights among its outputs (``network.lateral``).

Pathways: one (``w``: x presynaptic rate, y postsynaptic rate, w the weight) without lateral
weights; ``ff`` and ``lat`` with them (``lat``: x is the other output y_k, y is y_i, w is M_ik).
Objectives: ``pca`` (one neuron learns the first principal component with unit norm),
``pca_subspace`` (the outputs extract the leading principal subspace, decorrelated) and
``fit_activity`` (recorded activity; needs ``--data``).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ...data import ActivityData, load_activity, save_activity
from ...errors import TaskError
from ..base import Objective, PathwaySpec, Simulator, provided
from .kernel import ACTIVATIONS, LATERAL, RateResult, simulate
from .objectives import fit_activity_loss, fit_activity_trials, pca_loss, pca_subspace_loss

__all__ = ["ACTIVATIONS", "LATERAL", "RateResult", "simulate", "SIMULATOR", "RateConfig", "RateState"]


@dataclass(frozen=True)
class RateConfig:
    n_in: int
    n_out: int
    activation: str
    eta: float
    weight_bound: float
    lateral: str  # "none" | "symmetric" | "hierarchical"
    trials: int
    steps: int
    variances: tuple[float, ...]  # leading principal variances of the generated inputs
    other_variance: float  # variance along every other principal axis
    mean: float
    init_std: float  # initial feed-forward weights ~ N(0, init_std^2); lateral weights start at 0
    inputs_seed: int | None


@dataclass(frozen=True, eq=False)
class RateState:
    """Inputs and initial weights every candidate shares, and the recording when there is one."""

    x: np.ndarray  # (trials, steps, n_in)
    w0: np.ndarray  # (trials, n_out, n_in)
    m0: np.ndarray | None  # (trials, n_out, n_out) lateral networks
    target: np.ndarray | None  # (trials, steps, n_out), NaN = not recorded
    pcs: np.ndarray  # (n_in, n_in) principal axes of the input distribution, by decreasing variance
    cov: np.ndarray  # (n_in, n_in) input covariance

    @property
    def pc1(self) -> np.ndarray:
        return self.pcs[:, 0]

    @property
    def trials(self) -> int:
        return self.x.shape[0]


class RateSimulator(Simulator):
    name = "rate"
    sections = ("inputs",)
    objectives = {
        "pca": Objective("pca", pca_loss, description="one output learns the unit-norm first principal component"),
        "pca_subspace": Objective("pca_subspace", pca_subspace_loss,
                                  description="the outputs span the leading principal subspace, unit norm, "
                                              "decorrelated"),
        "fit_activity": Objective("fit_activity", fit_activity_loss, needs_data=True,
                                  description="mean squared error against recorded activity",
                                  units=fit_activity_trials, unit_name="trials"),
    }
    data_help = "recorded activity: pass --data FILE.npz (arrays x, y, w0; m0 for lateral networks)"

    def configure(self, network, sections, objective):
        lateral = network.get("lateral", str, "none", choices=tuple(LATERAL))
        activation = network.get("activation", str, "linear", choices=tuple(ACTIVATIONS))
        if lateral != "none" and activation != "linear":
            network.fail("activation", f"is {activation!r}: a network with lateral weights has linear outputs "
                         "(y = W x + M y, solved exactly): expected 'linear'")
        n_in, n_out = network.get("n_in", int, low=1), network.get("n_out", int, low=1)
        eta = network.get("eta", float, low=0.0)
        bound = network.get("weight_bound", float, 1e3, low=0.0)
        network.finish()
        f = sections["inputs"]
        leading = f.get("leading_variance", float, None, low=0.0)
        variances = f.numbers("variances", None)
        if leading is not None and variances is not None:
            f.fail("variances", "and 'leading_variance' are both given: expected one of them")
        if variances is None:
            variances = (4.0 if leading is None else leading,)
        if not variances or any(v < 0 for v in variances) or len(variances) > n_in:
            f.fail("variances", f"is {list(variances)}: expected 1..{n_in} non-negative numbers")
        config = RateConfig(n_in, n_out, activation, eta, bound, lateral,
                            f.get("trials", int, 4, low=1), f.get("steps", int, 1000, low=1), tuple(variances),
                            f.get("other_variance", float, 1.0, low=0.0), f.get("mean", float, 0.0),
                            f.get("init_std", float, 0.3, low=0.0), f.get("seed", int, None))
        f.finish()
        _check_memory(config, network)
        if objective == "pca" and (n_out != 1 or lateral != "none"):
            network.fail("n_out", f"is {n_out}: objective 'pca' needs a single output neuron (1) without "
                         "lateral weights (pca_subspace scores several)")
        if objective == "pca_subspace" and n_out > n_in:
            network.fail("n_out", f"is {n_out}: objective 'pca_subspace' needs n_out <= n_in ({n_in})")
        return config

    def pathways(self, config):
        if config.lateral == "none":
            return (PathwaySpec("w", provided("x", "y", "w"), r"\Delta w_{ij}", config.eta),)
        return (PathwaySpec("ff", provided("x", "y", "w"), r"\Delta W_{ij}", config.eta, "feed-forward"),
                PathwaySpec("lat", provided("x", "y", "w",
                                            meanings={"x": "activity of the other output y_k",
                                                      "w": "lateral weight M_ik"},
                                            latex={"x": "y_k", "w": "M_{ik}"}),
                            r"\Delta M_{ik}", config.eta, "lateral, among the outputs"))

    def generate(self, config, seed):
        """Gaussian inputs whose principal variances are ``variances`` (then ``other_variance``) along
        random orthonormal axes, and random initial feed-forward weights; lateral weights start at 0."""
        rng = np.random.default_rng(config.inputs_seed if config.inputs_seed is not None else seed)
        n = config.n_in
        q, _ = np.linalg.qr(rng.normal(size=(n, n)))
        variances = np.full(n, config.other_variance)
        variances[:len(config.variances)] = config.variances
        mixing = q * np.sqrt(variances)  # columns: principal axes scaled by their std
        z = rng.normal(size=(config.trials, config.steps, n))
        x = z @ mixing.T + config.mean
        w0 = rng.normal(0.0, config.init_std, size=(config.trials, config.n_out, n))
        order = np.argsort(-variances, kind="stable")
        m0 = np.zeros((config.trials, config.n_out, config.n_out)) if config.lateral != "none" else None
        return RateState(x, w0, m0, None, q[:, order].copy(), (mixing @ mixing.T))

    def load_data(self, path):
        return load_activity(path)

    def attach(self, task, data):
        if not isinstance(data, ActivityData):
            raise TaskError(f"{task.source}: {type(data).__name__} given to a 'rate' task (expected activity data)")
        trials, steps, n_in = data.x.shape
        n_out = data.y.shape[2]
        lateral = task.config.lateral != "none"
        if data.m0 is not None and not lateral:
            raise TaskError(f"{data.source}: array 'm0' (initial lateral weights) given to a network without "
                            "lateral weights: set network.lateral")
        m0 = (data.m0 if data.m0 is not None else np.zeros((trials, n_out, n_out))) if lateral else None
        config = replace(task.config, n_in=n_in, n_out=n_out, trials=trials, steps=steps)
        cov = np.cov(data.x.reshape(-1, n_in), rowvar=False).reshape(n_in, n_in)
        values, vectors = np.linalg.eigh(cov)
        state = RateState(data.x, data.w0, m0, data.y, vectors[:, ::-1].copy(), cov)
        return replace(task, config=config, state=state, data_source=data.source, data_meta=data.meta)

    def split(self, task, holdout):
        """The last round(holdout * trials) recorded trials are held out (at least one, and at least one
        kept); tasks without a recording are not split."""
        s = task.state
        n = s.trials
        if s.target is None or holdout <= 0 or n < 2:
            return task, None
        h = min(max(1, round(holdout * n)), n - 1)

        def subset(sl):
            state = replace(s, x=s.x[sl], w0=s.w0[sl], target=s.target[sl],
                            m0=None if s.m0 is None else s.m0[sl])
            return replace(task, state=state, config=replace(task.config, trials=len(range(n)[sl])))
        return subset(slice(0, n - h)), subset(slice(n - h, n))

    def split_info(self, train, test):
        return {"fitted_trials": train.state.trials, "heldout_trials": 0 if test is None else test.state.trials}

    def n_units(self, task):
        return task.state.trials if task.data_source else None

    def simulate(self, task, packed, record=False, **options):
        c, s = task.config, task.state
        steps = s.x.shape[1]
        return simulate(packed, s.x, s.w0, task.etas[0], c.activation, c.weight_bound, s.target, record,
                        steps - max(1, round(task.average_fraction * steps)), c.lateral, s.m0,
                        task.etas[-1])

    def visited_states(self, task, packed, pathway, names, n_samples, rng):
        sim = self.simulate(task, packed, record=True)
        y = sim.y[0]  # (trials, steps, n_out)
        trials, steps, n_out = y.shape
        b = rng.integers(0, trials, n_samples)
        t = rng.integers(0, steps, n_samples)
        i = rng.integers(0, n_out, n_samples)
        if pathway == 0:
            j = rng.integers(0, task.state.x.shape[2], n_samples)
            columns = {"x": task.state.x[b, t, j], "y": y[b, t, i], "w": sim.w[0][b, t, i, j]}
        else:  # lateral synapses that exist: k != i (hierarchical: k < i)
            hier = task.config.lateral == "hierarchical"
            if hier:
                i = rng.integers(1, n_out, n_samples)
                k = (rng.random(n_samples) * i).astype(np.int64)
            else:
                k = (i + rng.integers(1, n_out, n_samples)) % n_out
            columns = {"x": y[b, t, k], "y": y[b, t, i], "w": sim.m[0][b, t, i, k]}
        missing = [v for v in names if v not in columns]
        if missing:
            raise ValueError(f"distill samples {', '.join(columns)}; this rule also uses {', '.join(missing)}")
        return np.stack([columns[v] for v in names], axis=1)

    def derivatives(self, task, family):
        """Taylor rules over x, y, w on recorded activity without lateral weights: residuals and
        their exact Jacobian from the forward sensitivities of ``sensitivity.py``."""
        from ...families import MLPFamily, TaylorFamily
        from ...gradfit import gaussian
        from .sensitivity import mlp_residuals, taylor_residuals
        s, c = task.state, task.config
        slots = {"x": 0, "y": 1, "w": 2}
        if (not isinstance(family, (TaylorFamily, MLPFamily)) or c.lateral != "none" or s.target is None
                or task.objective != "fit_activity" or any(v not in slots for v in family.variables)):
            return None
        scale = float(np.nanstd(s.target)) or 1.0
        if isinstance(family, MLPFamily):  # one hidden layer
            if len(family.hidden) != 1:
                return None
            where = np.array([slots[v] for v in family.variables])

            def mlp_model(theta, active):
                full = np.zeros(family.n_params)
                full[active] = theta
                r, J, blown = mlp_residuals(full, where, family.hidden[0], family.activation, s.x, s.w0, s.target,
                                            task.etas[0], c.activation, c.weight_bound)
                return gaussian(r, J[:, active], blown, scale)
            return mlp_model, None
        exps = np.zeros((family.n_params, 3), np.int64)
        for k, e in enumerate(family.terms):
            for v, p in zip(family.variables, e):
                exps[k, slots[v]] = p
        eta = task.etas[0]

        def model(theta, active):
            r, J, blown = taylor_residuals(theta, exps[active], s.x, s.w0, s.target, eta, c.activation,
                                           c.weight_bound)
            return gaussian(r, J, blown, scale)

        def describe(params):
            sim = self.simulate(task, family.pack(np.asarray(params, float)[None]), record=True)
            if sim.blown[0]:
                return None, None
            w, y = sim.w[0], sim.y[0]  # (trials, steps, n_out, n_in), (trials, steps, n_out)
            ranges = {"x": (float(s.x.min()), float(s.x.max())), "y": (float(y.min()), float(y.max())),
                      "w": (float(w.min()), float(w.max()))}
            rng = np.random.default_rng(0)
            n = 20000
            b, t = rng.integers(0, w.shape[0], n), rng.integers(0, w.shape[1], n)
            i, j = rng.integers(0, w.shape[2], n), rng.integers(0, w.shape[3], n)
            states = np.stack([s.x[b, t, j], y[b, t, i], w[b, t, i, j]], axis=1)
            rms = np.sqrt(np.mean(np.prod(states[:, None, :] ** exps[None], axis=2) ** 2, axis=0))
            return rms, ranges
        return model, describe

    def heldout_scores(self, test, packed, true_rule):
        """The task loss and activity R^2 against the recording; with the data's true rule, R^2 of the
        weight trajectories (every pathway) and of activity between the fitted and the true rule."""
        from ...fit import r_squared
        from ...tasks import pack_rules
        fitted = self.simulate(test, packed, record=True)
        out = {"trials": test.state.trials, "loss": float(test.evaluate_packed(packed).losses[0]),
               "activity_r2_data": r_squared(fitted.y[0], test.state.target)}
        if true_rule is not None:
            truth = self.simulate(test, pack_rules([true_rule]), record=True)
            out.update(true_rule=true_rule.text(), weight_r2=r_squared(_weights(fitted), _weights(truth)),
                       activity_r2=r_squared(fitted.y[0], truth.y[0]))
        return out

    def example_trace(self, test, packed):
        if test.state.target is None:
            return None
        sim = self.simulate(test, packed, record=True)
        return {"recorded": test.state.target[0], "fitted": sim.y[0, 0]}

    def synthesize(self, task, rule, out, noise, observed, animals):
        if animals is not None:
            raise ValueError("--animals is for choice tasks (network.simulator = \"choice\")")
        data = simulate_activity(task, rule, noise, observed, task.seed)
        save_activity(out, data)
        trials, steps, n_in = data.x.shape
        return (f"wrote {out}: {trials} trials x {steps} steps, {n_in} inputs, {data.y.shape[2]} outputs "
                f"({len(data.meta['recorded_neurons'])} recorded), rule {rule.text()}, noise {noise:g}")

    def describe(self, config):
        return {"eta": config.eta, "activation": config.activation, "lateral": config.lateral}


def _available_memory() -> int:
    """Physical memory in bytes (0 where the platform does not say)."""
    import os
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 0


def _check_memory(config: RateConfig, fields) -> None:
    """Refuse sizes whose inputs alone would not fit in memory, before anything is allocated."""
    inputs = 3 * 8 * config.trials * config.steps * config.n_in  # x and the generator's temporaries
    weights = 8 * config.trials * config.n_out * (config.n_in + config.n_out) * 4
    need, have = inputs + weights, _available_memory()
    if have and need > 0.5 * have:
        fields.fail("n_in", f"with n_out {config.n_out}, {config.trials} trials of {config.steps} steps needs "
                    f"about {need / 2**30:.1f} GiB for inputs and weights: more than half of this machine's "
                    f"{have / 2**30:.1f} GiB")


def _weights(sim: RateResult) -> np.ndarray:
    """Weight trajectories of the first individual as (trials, steps, synapses), lateral ones appended."""
    w = sim.w[0].reshape(*sim.w.shape[1:3], -1)
    if sim.m is None:
        return w
    return np.concatenate([w, sim.m[0].reshape(*sim.m.shape[1:3], -1)], axis=-1)


def simulate_activity(task, rule, noise: float = 0.0, observed: float = 1.0, seed: int = 0) -> ActivityData:
    """Ground-truth data in the activity schema: the task's inputs run under ``rule``.

    noise: measurement noise std in units of the recorded activity's std; observed:
    fraction of output neurons recorded (the same randomly chosen neurons in every
    trial, at least one); the others are NaN.
    """
    from ...results import versions
    from ...tasks import pack_rules
    if noise < 0:
        raise ValueError(f"--noise {noise}: expected a non-negative number (units of activity std)")
    if not 0 < observed <= 1:
        raise ValueError(f"--observed {observed}: expected a fraction in (0, 1]")
    sim = SIMULATOR.simulate(task, pack_rules([rule]), record=True)
    if sim.blown[0]:
        raise ValueError(f"rule '{rule.text()}' blows up on task '{task.name}' "
                         f"(|w| > {task.config.weight_bound:g}): no data written")
    rng = np.random.default_rng(seed)
    y = sim.y[0].copy()
    if noise > 0:
        y += rng.normal(0.0, noise * y.std(), size=y.shape)
    n_out = y.shape[2]
    n_rec = max(1, int(round(observed * n_out)))
    hidden = np.sort(rng.permutation(n_out)[n_rec:])
    y[:, :, hidden] = np.nan
    s = task.state
    meta = {"rule": rule.text(), "task": task.source, "seed": task.seed, "noise": noise,
            "observed": observed, "recorded_neurons": sorted(set(range(n_out)) - set(hidden.tolist())),
            **SIMULATOR.describe(task.config), "etas": list(task.etas),
            "overrides": list(task.overrides), "versions": versions()}
    return ActivityData(s.x.copy(), y, s.w0.copy(), meta, m0=None if s.m0 is None else s.m0.copy())


SIMULATOR = RateSimulator()
