"""The spiking simulator (``network.simulator = "lif"``): conductance-based LIF neurons driven by
channels of Poisson afferents, with event-driven plasticity (a ``pre`` and a ``post`` expression
per plastic pathway, as Brian2's ``on_pre``/``on_post``).

The network of ``tasks/istdp.toml`` is the single neuron of Vogels et al. (2011): 8 channels of
100 excitatory and 25 inhibitory afferents, excitatory weights tuned across channels, plastic
inhibitory weights. Pathways: ``ie`` (inhibitory afferents -> neuron) and/or ``ee`` (excitatory
afferents -> neuron), chosen by ``network.plastic``; rules are written ``"pre: ...; post: ..."``
with one plastic pathway and ``"ie.pre: ...; ie.post: ...; ee.pre: ..."`` with several.
Objective: ``target_rate`` (the output rate at a set point in every trial, inhibition matching
excitation across channels). Kernel and integration scheme: ``kernel.py``.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ...errors import TaskError
from ..base import Objective, PathwaySpec, Simulator, provided
from .inputs import channel_rates, poisson_spikes, tuning
from .kernel import LifResult, simulate
from .objectives import balance, output_rates, target_rate_loss

__all__ = ["LifConfig", "LifState", "LifResult", "SIMULATOR", "simulate_lif"]

AFFERENT_PATHWAYS = ("ee", "ie")  # excitatory / inhibitory afferents onto the neuron
EVENTS = ("pre", "post")


@dataclass(frozen=True)
class LifConfig:
    # neuron (Vogels et al. 2011)
    capacitance_pf: float
    g_leak_ns: float
    e_leak_mv: float
    e_exc_mv: float
    e_inh_mv: float
    v_threshold_mv: float
    v_reset_mv: float
    refractory_ms: float
    tau_exc_ms: float
    tau_inh_ms: float
    dt_ms: float
    g_exc_ns: float  # conductance step of an excitatory synapse of weight 1
    g_inh_ns: float  # conductance step of an inhibitory synapse of weight 1
    # plasticity
    plastic: tuple[str, ...]
    eta: float
    w_max: float
    tau_pre_ms: float
    tau_post_ms: float
    # inputs
    channels: int
    exc_per_channel: int
    inh_per_channel: int
    rate_hz: float
    fluctuation: float
    fluctuation_tau_ms: float
    tuning_base: float
    tuning_peak: float
    preferred_channel: int
    tuning_width: float
    inh_init: float
    drives: tuple[float, ...]
    heldout_drives: tuple[float, ...]
    trial_s: float
    score_s: float
    heldout_trial_s: float
    heldout_score_s: float
    inputs_seed: int | None
    # objective
    target_rate_hz: float
    balance_weight: float
    max_rate_hz: float

    @property
    def n_aff(self) -> int:
        return self.channels * (self.exc_per_channel + self.inh_per_channel)

    def neuron(self) -> np.ndarray:
        """The kernel's constant vector (order: kernel.C_PF .. G_INH_UNIT)."""
        return np.array([self.capacitance_pf, self.g_leak_ns, self.e_leak_mv, self.e_exc_mv, self.e_inh_mv,
                         self.v_threshold_mv, self.v_reset_mv, round(self.refractory_ms / self.dt_ms),
                         self.tau_exc_ms, self.tau_inh_ms, self.dt_ms, self.g_exc_ns, self.g_inh_ns], float)


@dataclass(frozen=True, eq=False)
class LifState:
    """The afferents and the input spikes every candidate shares."""

    exc: np.ndarray  # bool (n_aff,): excitatory afferent
    channel: np.ndarray  # int (n_aff,)
    path: np.ndarray  # int (n_aff,): plastic pathway index, -1 for fixed afferents
    w0: np.ndarray  # (trials, 1, n_aff) initial weights
    tuning: np.ndarray  # (channels,) excitatory weight per channel
    spk_ptr: np.ndarray  # (trials, n_steps + 1) offsets into spk_aff
    spk_aff: np.ndarray  # (n_spikes,) afferent of each input spike, grouped by step
    drives: tuple[float, ...]
    n_steps: int
    score_from: int  # first step of the scoring window

    @property
    def trials(self) -> int:
        return self.spk_ptr.shape[0]


class LifSimulator(Simulator):
    name = "lif"
    sections = ("inputs", "objective")
    objectives = {
        "target_rate": Objective("target_rate", target_rate_loss,
                                 description="output rate at objective.target_rate in every trial, inhibitory "
                                             "weights tuned like the excitatory ones"),
    }
    data_help = "nothing: spiking tasks generate their inputs"
    smooth_loss = False
    rule_parameters = ("tau_pre_ms", "tau_post_ms")  # per plastic pathway, in packed.extras

    def configure(self, network, sections, objective):
        n = network
        ms = dict(low=0.0)
        neuron = neuron_fields(n)
        plastic = n.get("plastic", list, ["ie"])
        if not plastic or not all(isinstance(p, str) and p in AFFERENT_PATHWAYS for p in plastic) \
                or len(set(plastic)) != len(plastic):
            n.fail("plastic", f"is {plastic!r}: expected a list of distinct pathways from {', '.join(AFFERENT_PATHWAYS)}")
        plasticity = dict(plastic=tuple(p for p in AFFERENT_PATHWAYS if p in plastic), eta=n.get("eta", float, 0.1, **ms),
                          w_max=positive(n, "w_max", 10.0), tau_pre_ms=positive(n, "tau_pre_ms", 20.0),
                          tau_post_ms=positive(n, "tau_post_ms", 20.0))
        n.finish()
        f = sections["inputs"]
        channels = f.get("channels", int, 8, low=1)
        inputs = dict(channels=channels, exc_per_channel=f.get("exc_per_channel", int, 100, low=0),
                      inh_per_channel=f.get("inh_per_channel", int, 25, low=0),
                      rate_hz=f.get("rate_hz", float, 10.0, **ms), fluctuation=f.get("fluctuation", float, 0.5, **ms),
                      fluctuation_tau_ms=positive(f, "fluctuation_tau_ms", 50.0),
                      tuning_base=f.get("tuning_base", float, 0.3, **ms), tuning_peak=f.get("tuning_peak", float, 1.1, **ms),
                      preferred_channel=f.get("preferred_channel", int, 5, low=1, high=channels),
                      tuning_width=positive(f, "tuning_width", 1.0), inh_init=f.get("inh_init", float, 0.1, **ms),
                      drives=_drives(f, "drives", (0.75, 1.125, 1.5)),
                      heldout_drives=_drives(f, "heldout_drives", (0.9, 1.3, 1.6)),
                      trial_s=positive(f, "trial_s", 20.0), score_s=positive(f, "score_s", 10.0),
                      heldout_trial_s=positive(f, "heldout_trial_s", 60.0),
                      heldout_score_s=positive(f, "heldout_score_s", 40.0), inputs_seed=f.get("seed", int, None))
        for trial, score in (("trial_s", "score_s"), ("heldout_trial_s", "heldout_score_s")):
            if inputs[score] > inputs[trial]:
                f.fail(score, f"is {inputs[score]:g}: expected at most {trial} ({inputs[trial]:g})")
        if inputs["exc_per_channel"] + inputs["inh_per_channel"] == 0:
            f.fail("exc_per_channel", "and inh_per_channel are 0: expected at least one afferent")
        steps = inputs["trial_s"] * 1000 / neuron["dt_ms"]
        if steps * len(inputs["drives"]) > 2e8:
            f.fail("trial_s", f"is {inputs['trial_s']:g}: {steps:.3g} steps of {neuron['dt_ms']:g} ms per trial "
                   f"x {len(inputs['drives'])} trials is more than this simulator runs (2e8 steps)")
        f.finish()
        o = sections["objective"]
        target = dict(target_rate_hz=positive(o, "target_rate", 5.0), balance_weight=o.get("balance_weight", float, 0.25, **ms),
                      max_rate_hz=positive(o, "max_rate", 100.0))
        if target["max_rate_hz"] <= target["target_rate_hz"]:
            o.fail("max_rate", f"is {target['max_rate_hz']:g}: expected above target_rate ({target['target_rate_hz']:g})")
        return LifConfig(**neuron, **plasticity, **inputs, **target)

    def pathways(self, config):
        variables = provided("x_pre", "x_post", "w", "v")
        meaning = {"ee": "excitatory afferents onto the neuron", "ie": "inhibitory afferents onto the neuron"}
        symbol = {"pre": r"\Delta w^{\mathrm{pre}}", "post": r"\Delta w^{\mathrm{post}}"}
        specs = []
        for p in config.plastic:
            for event in EVENTS:
                name = event if len(config.plastic) == 1 else f"{p}.{event}"
                label = symbol[event] if len(config.plastic) == 1 else \
                    rf"\Delta w_{{\mathrm{{{p.upper()}}}}}^{{\mathrm{{{event}}}}}"
                specs.append(PathwaySpec(name, variables, label, config.eta,
                                         f"{meaning[p]}, at each {event}synaptic spike"))
        return tuple(specs)

    def generate(self, config, seed):
        seed = config.inputs_seed if config.inputs_seed is not None else seed
        return _inputs(config, np.random.default_rng([seed, 0]), config.drives, config.trial_s, config.score_s)

    def split(self, task, holdout):
        return task, self.heldout(task)

    def heldout(self, task):
        """The same neuron under the held-out drives, in longer trials, from an independent stream."""
        c = task.config
        if not c.heldout_drives:
            return None
        seed = c.inputs_seed if c.inputs_seed is not None else task.seed
        state = _inputs(c, np.random.default_rng([seed, 1]), c.heldout_drives, c.heldout_trial_s, c.heldout_score_s)
        return replace(task, state=state)

    def split_info(self, train, test):
        return {"fitted_drives": list(train.state.drives),
                "heldout_drives": [] if test is None else list(test.state.drives)}

    def simulate(self, task, packed, record=False, tau_pre_ms=None, tau_post_ms=None, record_every_ms=100.0,
                 **options):
        c, s = task.config, task.state
        n_path = len(c.plastic)
        eta = np.array([task.etas[2 * p] for p in range(n_path)])
        every = max(1, round(record_every_ms / c.dt_ms)) if record else 0
        if packed.extras is not None:  # a fitted doublet family: its own time constants per individual
            taus = packed.extras.reshape(packed.n_individuals, n_path, 2)
            tau_pre_ms, tau_post_ms = taus[:, :, 0], taus[:, :, 1]
        return simulate(packed, s.path, s.exc, s.w0, s.spk_ptr, s.spk_aff, c.neuron(), eta,
                        np.full(n_path, c.w_max),
                        np.full(n_path, c.tau_pre_ms) if tau_pre_ms is None else tau_pre_ms,
                        np.full(n_path, c.tau_post_ms) if tau_post_ms is None else tau_post_ms,
                        s.score_from, every, (s.n_steps - 1) // every + 1 if record else 0,
                        int(s.n_steps * c.dt_ms * 1e-3 * c.max_rate_hz * 2 + 10) if record else 0)

    def heldout_scores(self, test, packed, true_rule=None):
        """Output rate (Hz) and inhibitory/excitatory tuning correlation per held-out trial."""
        from ...tasks import WORST_LOSS
        result = self.simulate(test, packed)
        rates = output_rates(test, result)[0]
        corr = balance(test, result)[0]
        loss = float(min(target_rate_loss(test, result)[0], WORST_LOSS))
        return {"trials": test.state.trials, "drives": list(test.state.drives),
                "loss": loss, "blown": bool(result.blown[0]),
                "rate_hz": rates.tolist(), "balance": corr.tolist(),
                "target_rate_hz": test.config.target_rate_hz}

    def synthesize(self, task, rule, out, noise, observed, animals):
        from .record import write_recording
        if noise or observed != 1.0 or animals is not None:
            raise ValueError("--noise, --observed and --animals are for rate and choice tasks; a spiking task "
                             "writes its spike trains and weights as simulated")
        return write_recording(self, task, rule, out)

    def describe(self, config):
        return {"eta": config.eta, "plastic": list(config.plastic), "tau_pre_ms": config.tau_pre_ms,
                "tau_post_ms": config.tau_post_ms, "w_max": config.w_max, "target_rate_hz": config.target_rate_hz}


NEURON_DEFAULTS = dict(capacitance_pf=200.0, g_leak_ns=10.0, e_leak_mv=-60.0, e_exc_mv=0.0, e_inh_mv=-80.0,
                       v_threshold_mv=-50.0, v_reset_mv=-60.0, refractory_ms=5.0, tau_exc_ms=5.0, tau_inh_ms=10.0,
                       dt_ms=0.1, g_exc_ns=0.14, g_inh_ns=0.35)


def positive(f, key, default):
    """A field that must be a number above 0."""
    value = f.get(key, float, default, low=0.0)
    if value <= 0:
        f.fail(key, f"is {value:g}: expected a positive number")
    return value


def neuron_fields(n, defaults: dict | None = None, unit_conductances: bool = True) -> dict:
    """The neuron's fields of [network] (``NEURON_DEFAULTS``, updated by ``defaults``), validated;
    shared by the spiking simulators. ``unit_conductances``: also g_exc_ns and g_inh_ns (the
    conductance of a synapse of weight 1; a network with its own weight units leaves them out)."""
    d = {**NEURON_DEFAULTS, **(defaults or {})}
    ms = dict(low=0.0)
    neuron = dict(capacitance_pf=positive(n, "capacitance_pf", d["capacitance_pf"]),
                  g_leak_ns=positive(n, "g_leak_ns", d["g_leak_ns"]),
                  e_leak_mv=n.get("e_leak_mv", float, d["e_leak_mv"]), e_exc_mv=n.get("e_exc_mv", float, d["e_exc_mv"]),
                  e_inh_mv=n.get("e_inh_mv", float, d["e_inh_mv"]),
                  v_threshold_mv=n.get("v_threshold_mv", float, d["v_threshold_mv"]),
                  v_reset_mv=n.get("v_reset_mv", float, d["v_reset_mv"]),
                  refractory_ms=n.get("refractory_ms", float, d["refractory_ms"], **ms),
                  tau_exc_ms=positive(n, "tau_exc_ms", d["tau_exc_ms"]), tau_inh_ms=positive(n, "tau_inh_ms", d["tau_inh_ms"]),
                  dt_ms=positive(n, "dt_ms", d["dt_ms"]))
    if unit_conductances:
        neuron.update(g_exc_ns=n.get("g_exc_ns", float, d["g_exc_ns"], **ms),
                      g_inh_ns=n.get("g_inh_ns", float, d["g_inh_ns"], **ms))
    if neuron["v_threshold_mv"] <= neuron["e_leak_mv"]:
        n.fail("v_threshold_mv", f"is {neuron['v_threshold_mv']:g}: expected above e_leak_mv "
               f"({neuron['e_leak_mv']:g}; v = (V - E_L) / (V_th - E_L) is scaled by their difference)")
    if neuron["dt_ms"] > 1.0:
        n.fail("dt_ms", f"is {neuron['dt_ms']:g}: expected at most 1 ms")
    return neuron


def _drives(f, key, default) -> tuple[float, ...]:
    values = f.numbers(key, default)
    if key == "drives" and not values:
        f.fail(key, "is empty: expected at least one input-rate multiplier")
    if any(v < 0 for v in values):
        f.fail(key, f"is {list(values)}: expected non-negative input-rate multipliers")
    return tuple(values)


def _inputs(c: LifConfig, rng: np.random.Generator, drives, trial_s: float, score_s: float) -> LifState:
    """Afferents, initial weights and one trial of input spikes per drive."""
    ne, ni = c.exc_per_channel, c.inh_per_channel
    exc = np.tile(np.r_[np.ones(ne, bool), np.zeros(ni, bool)], c.channels)
    channel = np.repeat(np.arange(c.channels), ne + ni)
    path = np.full(c.n_aff, -1, np.int64)
    for k, p in enumerate(c.plastic):
        path[exc == (p == "ee")] = k
    profile = tuning(c.channels, c.tuning_base, c.tuning_peak, c.preferred_channel - 1, c.tuning_width)
    w0 = np.where(exc, profile[channel], c.inh_init)
    groups = [np.flatnonzero((channel == k) & (exc == e)) for k in range(c.channels) for e in (True, False)]
    n_steps = int(round(trial_s * 1000 / c.dt_ms))
    ptrs, affs, offset = [], [], 0
    for d in drives:
        rates = channel_rates(rng, c.channels, n_steps, c.dt_ms, c.rate_hz * d, c.fluctuation, c.fluctuation_tau_ms)
        ptr, aff = poisson_spikes(rng, np.repeat(rates, 2, axis=0), groups, c.dt_ms)
        ptrs.append(ptr + offset)
        affs.append(aff)
        offset += len(aff)
    return LifState(exc, channel, path, np.broadcast_to(w0, (len(drives), 1, c.n_aff)).copy(), profile,
                    np.stack(ptrs) if ptrs else np.zeros((0, n_steps + 1), np.int64),
                    np.concatenate(affs) if affs else np.zeros(0, np.int64), tuple(drives), n_steps,
                    n_steps - int(round(score_s * 1000 / c.dt_ms)))


def simulate_lif(task, rule, record: bool = False) -> LifResult:
    """One rule on a LIF task's trials."""
    from ...tasks import pack_rules
    return SIMULATOR.simulate(task, pack_rules([rule]), record=record)


SIMULATOR = LifSimulator()
