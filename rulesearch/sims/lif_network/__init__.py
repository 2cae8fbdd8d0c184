"""The recurrent E/I spiking network (``network.simulator = "lif_network"``) of Confavreux et al.
(2023), scaled down: n_exc + n_inh conductance-based LIF neurons (the neuron of ``sims/lif``),
random connectivity with probability ``p_connect``, independent Poisson drive per neuron whose
rate is a nuisance parameter drawn per simulation, and four plastic pathways ``ee``, ``ei``
(E -> I), ``ie`` (I -> E), ``ii``, each with a ``pre`` and a ``post`` part (rules are written
``"ee.pre: ...; ee.post: ...; ei.pre: ..."``).

Why a simulator of its own and not more options of ``sims/lif``: that one is a single neuron fed
by recorded or generated afferents, scored against a target rate; this one is a recurrent
network whose pre- and postsynaptic neurons are the same population, whose input is drawn inside
the kernel per simulation, and which is scored by constraints. They share the neuron model, its
fields (``lif.neuron_fields``) and the kernel's constants.

Weights are in the published network's units (a weight of 1 is a conductance step of
``g_unit_ns``, the published neuron's leak conductance), so eta, w_max, the rules and the bounds
on mean weights keep their published values. The published network has 4096 E and 1024 I
neurons, so a neuron receives p * 4096 E and p * 1024 I synapses; with fewer neurons each
synapse of a source population counts published_n / n times as much (``g_unit_ns * 4096 / n_exc``
for E sources), which keeps every neuron's mean recurrent conductance (synapses x weight x rate)
what it is in the published network at the same rates. The external drive is not scaled: each
neuron receives ``n_ext`` Poisson inputs of weight ``ext_weight``, as in the published network.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ...errors import TaskError
from ..base import Objective, PathwaySpec, Simulator, provided
from ..lif import positive, neuron_fields
from ..lif.kernel import C_PF, G_INH_UNIT
from . import metrics as M
from .kernel import NetworkResult, simulate_network

__all__ = ["NetworkConfig", "NetworkState", "NetworkResult", "SIMULATOR", "PATHWAYS", "METRICS"]

PATHWAYS = ("ee", "ei", "ie", "ii")  # index = 2 * (source is I) + (target is I)
EVENTS = ("pre", "post")
# metric -> (default allowed range: the published thresholds, stage: 0 rates, 1 weights, 2 the rest, meaning)
METRICS = {
    "rate_e": ((1.0, 50.0), 0, "excitatory rate in the scoring window (Hz)"),
    "rate_i": ((1.0, 50.0), 0, "inhibitory rate in the scoring window (Hz)"),
    "cv_isi": ((0.7, 2.7), 2, "mean CV of the excitatory neurons' inter-spike intervals"),
    "fano": ((0.5, 2.5), 2, "mean Fano factor of excitatory spike counts in fano_bin_ms bins"),
    "w_blow": ((0.0, 0.1), 1, "fraction of weights at 0 or w_max at the end (mean over pathways)"),
    "w_creep": ((0.0, 0.05), 1, "largest relative drift of a pathway's mean weight in the scoring window"),
    "w_ee": ((0.0, 0.5), 1, "mean final E->E weight"),
    "w_ei": ((0.0, 0.5), 1, "mean final E->I weight"),
    "w_ie": ((0.0, 5.0), 1, "mean final I->E weight"),
    "w_ii": ((0.0, 5.0), 1, "mean final I->I weight"),
}
NUISANCE = "drive_rate_hz"
# Auryn's IFGroup of the published network rests and resets at -70 mV. Inhibition is twice as fast
# as published (GABA 5 ms, not 10) with I->E weights twice the published 1, so that an I->E spike
# carries the published charge: with 10x larger unitary conductances than the published network,
# 10 ms inhibition makes this small network fire in population bursts (Fano factor 3.4, CV 2).
NEURON_DEFAULTS = dict(e_leak_mv=-70.0, v_reset_mv=-70.0, tau_inh_ms=5.0)
W_INIT = (0.1, 0.1, 2.0, 1.0)  # ee, ei, ie, ii (published: 0.1, 0.1, 1, 1)


@dataclass(frozen=True)
class NetworkConfig:
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
    n_exc: int
    n_inh: int
    p_connect: float
    published_n_exc: int
    published_n_inh: int
    g_unit_ns: float
    w_init: tuple[float, float, float, float]  # ee, ei, ie, ii (published units)
    plastic: tuple[str, ...]
    eta: float
    w_max: float
    tau_pre_ms: float
    tau_post_ms: float
    max_rate_hz: float
    tau_checker_ms: float
    n_ext: int
    ext_weight: float
    drive_range_hz: tuple[float, float]
    plasticity_s: float
    score_s: float
    fano_bin_ms: float
    weight_snapshot_ms: float
    inputs_seed: int | None
    constraints: tuple[M.Constraint, ...]

    @property
    def n(self) -> int:
        return self.n_exc + self.n_inh

    @property
    def drive_default_hz(self) -> float:
        """The drive of a simulation not given one (a search's, not a family filter's): mid-range."""
        return 0.5 * (self.drive_range_hz[0] + self.drive_range_hz[1])

    def g_unit(self) -> np.ndarray:
        """nS per unit weight per pathway: the published unit times published / our source count."""
        e = self.g_unit_ns * self.published_n_exc / self.n_exc
        i = self.g_unit_ns * self.published_n_inh / max(self.n_inh, 1)
        return np.array([e, e, i, i])

    def neuron(self) -> np.ndarray:
        """The constants of ``sims/lif/kernel`` (its unit conductances are unused here: 0)."""
        v = np.zeros(G_INH_UNIT + 1)
        v[C_PF:G_INH_UNIT - 1] = [self.capacitance_pf, self.g_leak_ns, self.e_leak_mv, self.e_exc_mv, self.e_inh_mv,
                                  self.v_threshold_mv, self.v_reset_mv, round(self.refractory_ms / self.dt_ms),
                                  self.tau_exc_ms, self.tau_inh_ms, self.dt_ms]
        return v


@dataclass(frozen=True, eq=False)
class NetworkState:
    """The fixed connectivity (from the seed) shared by every simulation of a task."""

    syn_post: np.ndarray  # (n_syn,) target of each synapse; synapses sorted by source, target type, target
    syn_pre: np.ndarray  # (n_syn,) source
    syn_path: np.ndarray  # (n_syn,) pathway index (PATHWAYS)
    out_ptr: np.ndarray  # (N + 1,)
    in_ptr: np.ndarray  # (N + 1,)
    in_syn: np.ndarray  # (n_syn,) synapse ids by target, sources E first
    in_pre: np.ndarray  # (n_syn,)
    w0: np.ndarray  # (n_syn,)
    n_steps: int
    score_from: int
    bin_steps: int
    snapshot_steps: int  # w_blow's weight snapshots: every so many steps inside the scoring window
    seed: int  # the external input's seed of a simulation not given one


class NetworkSimulator(Simulator):
    name = "lif_network"
    sections = ("inputs", "objective", "constraints")
    objectives = {
        "plausibility": Objective("plausibility", lambda task, result: plausibility_loss(task, result),
                                  description="number of the task's constraints a network's activity and weights "
                                              "violate (0: plausible)"),
    }
    data_help = "nothing: the network generates its inputs"
    smooth_loss = False
    rule_parameters = ("tau_pre_ms", "tau_post_ms")  # per plastic pathway, in packed.extras

    def configure(self, network, sections, objective):
        n = network
        neuron = neuron_fields(n, NEURON_DEFAULTS, unit_conductances=False)
        size = dict(n_exc=n.get("n_exc", int, 400, low=1), n_inh=n.get("n_inh", int, 100, low=0),
                    p_connect=n.get("p_connect", float, 0.1, low=0.0, high=1.0),
                    published_n_exc=n.get("published_n_exc", int, 4096, low=1),
                    published_n_inh=n.get("published_n_inh", int, 1024, low=0),
                    g_unit_ns=n.get("g_unit_ns", float, 10.0, low=0.0))
        w_init = tuple(n.get(f"w_{p}", float, d, low=0.0) for p, d in zip(PATHWAYS, W_INIT))
        plastic = n.get("plastic", list, list(PATHWAYS))
        if not plastic or not all(isinstance(p, str) and p in PATHWAYS for p in plastic) \
                or len(set(plastic)) != len(plastic):
            n.fail("plastic", f"is {plastic!r}: expected a list of distinct pathways from {', '.join(PATHWAYS)}")
        plasticity = dict(plastic=tuple(p for p in PATHWAYS if p in plastic), eta=n.get("eta", float, 0.01, low=0.0),
                          w_max=positive(n, "w_max", 20.0), tau_pre_ms=positive(n, "tau_pre_ms", 20.0),
                          tau_post_ms=positive(n, "tau_post_ms", 20.0), max_rate_hz=positive(n, "max_rate_hz", 100.0),
                          tau_checker_ms=positive(n, "tau_checker_ms", 100.0))
        if any(w > plasticity["w_max"] for w in w_init):
            n.fail("w_max", f"is {plasticity['w_max']:g}: expected at least every initial weight "
                   f"({', '.join(f'w_{p} = {w:g}' for p, w in zip(PATHWAYS, w_init))})")
        n.finish()
        f = sections["inputs"]
        drive = f.numbers("drive_rate_hz", (5.0, 15.0))
        if len(drive) == 1:
            drive = (drive[0], drive[0])
        if len(drive) != 2 or not 0 <= drive[0] <= drive[1]:
            f.fail("drive_rate_hz", f"is {list(drive)}: expected [low, high] in Hz with 0 <= low <= high "
                   "(the nuisance range; a single number fixes it)")
        inputs = dict(n_ext=f.get("n_ext", int, 250, low=0), ext_weight=f.get("ext_weight", float, 0.075, low=0.0),
                      drive_range_hz=tuple(drive), plasticity_s=f.get("plasticity_s", float, 4.0, low=0.0),
                      score_s=positive(f, "score_s", 2.0), fano_bin_ms=positive(f, "fano_bin_ms", 100.0),
                      weight_snapshot_ms=positive(f, "weight_snapshot_ms", 100.0),
                      inputs_seed=f.get("seed", int, None))
        steps = (inputs["plasticity_s"] + inputs["score_s"]) * 1000 / neuron["dt_ms"]
        if steps > 1e8:
            f.fail("plasticity_s", f"is {inputs['plasticity_s']:g}: {steps:.3g} steps of {neuron['dt_ms']:g} ms is "
                   "more than this simulator runs (1e8)")
        if inputs["fano_bin_ms"] > inputs["score_s"] * 1000:
            f.fail("fano_bin_ms", f"is {inputs['fano_bin_ms']:g}: expected at most the scoring window "
                   f"(score_s = {inputs['score_s']:g} s)")
        f.finish()
        sections["objective"].finish()
        constraints = read_constraints(sections["constraints"])
        return NetworkConfig(**neuron, **size, w_init=w_init, **plasticity, **inputs, constraints=constraints)

    def pathways(self, config):
        variables = provided("x_pre", "x_post", "w", "v")
        meaning = {"ee": "E -> E", "ei": "E -> I", "ie": "I -> E", "ii": "I -> I"}
        return tuple(PathwaySpec(f"{p}.{e}", variables, rf"\Delta w_{{\mathrm{{{p.upper()}}}}}^{{\mathrm{{{e}}}}}",
                                 config.eta, f"{meaning[p]} synapses, at each {e}synaptic spike")
                     for p in config.plastic for e in EVENTS)

    def generate(self, config, seed):
        seed = config.inputs_seed if config.inputs_seed is not None else seed
        return connectivity(config, np.random.default_rng([seed, 0]), seed)

    def nuisance(self, config) -> dict[str, tuple[float, float]]:
        return {NUISANCE: config.drive_range_hz}

    def constraints(self, config):
        return config.constraints

    def simulate(self, task, packed, record=False, drive_rate_hz=None, seeds=None, spike_cap=None, **options):
        """The population on the network. ``packed.extras`` (n_ind, 2 * n_plastic [+ 2]): trace time
        constants (tau_pre, tau_post per plastic pathway, ms), then optionally the drive rate (Hz) and
        the input seed of each simulation; without them the task's taus, ``drive_rate_hz`` (default
        mid-range) and ``seeds`` (default the task's)."""
        c, s = task.config, task.state
        n_ind = packed.n_individuals
        k = len(c.plastic)
        tau_pre = np.full((n_ind, 4), c.tau_pre_ms)
        tau_post = np.full((n_ind, 4), c.tau_post_ms)
        drive = np.broadcast_to(np.asarray(c.drive_default_hz if drive_rate_hz is None else drive_rate_hz, float),
                                (n_ind,))
        seeds = np.full(n_ind, s.seed, np.int64) if seeds is None else np.broadcast_to(np.asarray(seeds, np.int64),
                                                                                        (n_ind,))
        if packed.extras is not None:
            extras = np.asarray(packed.extras, float)
            if extras.shape[1] not in (2 * k, 2 * k + 2):
                raise ValueError(f"packed.extras has {extras.shape[1]} columns: expected {2 * k} (tau_pre, "
                                 f"tau_post per plastic pathway) or {2 * k + 2} (then drive rate and seed)")
            for q, p in enumerate(c.plastic):
                tau_pre[:, PATHWAYS.index(p)] = extras[:, 2 * q]
                tau_post[:, PATHWAYS.index(p)] = extras[:, 2 * q + 1]
            if extras.shape[1] == 2 * k + 2:
                drive, seeds = extras[:, 2 * k], extras[:, 2 * k + 1].astype(np.int64)
        part_of = np.full(4, -1, np.int64)
        for q, p in enumerate(c.plastic):
            part_of[PATHWAYS.index(p)] = 2 * q
        if spike_cap is None:
            spike_cap = int(c.n * (c.plasticity_s + c.score_s) * 2 * c.max_rate_hz + 10) if record else 0
        return simulate_network(packed, part_of, c.n_exc, s.syn_post, s.out_ptr, s.in_ptr, s.in_syn, s.in_pre, s.w0,
                                c.neuron(), c.g_unit(), c.ext_weight * c.g_unit_ns, drive * c.n_ext, seeds,
                                np.full(4, c.eta), np.full(4, c.w_max), tau_pre, tau_post, s.n_steps, s.score_from,
                                s.bin_steps, c.max_rate_hz, c.tau_checker_ms, record, spike_cap, s.snapshot_steps)

    def metrics(self, task, packed) -> dict[str, np.ndarray]:
        """Every metric of ``METRICS`` per individual, with ``exploded``, ``blown`` and ``stopped_s``."""
        return network_metrics(task, self.simulate(task, packed))

    def describe(self, config):
        return {"n_exc": config.n_exc, "n_inh": config.n_inh, "p_connect": config.p_connect, "eta": config.eta,
                "w_max": config.w_max, "plastic": list(config.plastic), "g_unit_ns": list(config.g_unit()),
                "drive_rate_hz": list(config.drive_range_hz), "plasticity_s": config.plasticity_s,
                "score_s": config.score_s}


def read_constraints(f) -> tuple[M.Constraint, ...]:
    """[constraints]: ``metric = [low, high]`` (inf allowed) for metrics of ``METRICS``; the
    published thresholds where absent."""
    for key in f.table:
        if key not in METRICS:
            f.fail(key, f"is not a metric of this network (metrics: {', '.join(METRICS)})")
    out = []
    for name, ((low, high), stage, _) in METRICS.items():
        value = f.numbers(name, (low, high))
        if len(value) != 2 or not value[0] <= value[1]:
            f.fail(name, f"is {list(value)}: expected [low, high] with low <= high (inf for no upper bound)")
        out.append(M.Constraint(name, value[0], value[1], stage))
    f.finish()
    return tuple(out)


def connectivity(c: NetworkConfig, rng: np.random.Generator, seed: int) -> NetworkState:
    """Random connections (probability p_connect, no self-connections) and the initial weights."""
    n = c.n
    mask = rng.random((n, n)) < c.p_connect  # [source, target]
    np.fill_diagonal(mask, False)
    src, tgt = np.nonzero(mask)  # sorted by source, then target: E targets (< n_exc) come first
    path = 2 * (src >= c.n_exc) + (tgt >= c.n_exc)
    out_ptr = np.searchsorted(src, np.arange(n + 1)).astype(np.int64)
    order = np.lexsort((src, src >= c.n_exc, tgt))  # by target, then source type, then source
    in_ptr = np.searchsorted(tgt[order], np.arange(n + 1)).astype(np.int64)
    n_steps = int(round((c.plasticity_s + c.score_s) * 1000 / c.dt_ms))
    return NetworkState(tgt.astype(np.int64), src.astype(np.int64), path.astype(np.int64), out_ptr, in_ptr,
                        order.astype(np.int64), src[order].astype(np.int64), np.asarray(c.w_init)[path],
                        n_steps, n_steps - int(round(c.score_s * 1000 / c.dt_ms)),
                        max(1, int(round(c.fano_bin_ms / c.dt_ms))),
                        max(1, int(round(c.weight_snapshot_ms / c.dt_ms))), int(seed))


def network_metrics(task, result: NetworkResult) -> dict[str, np.ndarray]:
    """Metrics per individual from a simulation result (see ``metrics.py``)."""
    c, s = task.config, task.state
    ne = c.n_exc
    window_s = (np.minimum(result.steps_run, s.n_steps) - s.score_from) * c.dt_ms * 1e-3
    done = ~result.exploded & ~result.blown
    out = {"rate_e": M.rates(result.counts[:, :ne], window_s),
           "rate_i": M.rates(result.counts[:, ne:], window_s) if c.n_inh else np.full(len(done), np.nan),
           "cv_isi": np.where(done, M.cv_isi(result.isi_n[:, :ne], result.isi_sum[:, :ne], result.isi_sum2[:, :ne]),
                              np.nan),
           "fano": np.where(done, M.fano(result.counts[:, :ne]), np.nan),
           "w_blow": np.where(done, M.w_blow(result.w_bound), np.nan),
           "w_creep": np.where(done, M.w_creep(result.w_start, result.w_end), np.nan)}
    for k, p in enumerate(PATHWAYS):
        out[f"w_{p}"] = np.where(done, result.w_end[:, k], np.nan)
    out["exploded"] = result.exploded.astype(float)
    out["blown"] = result.blown.astype(float)
    out["stopped_s"] = result.steps_run * c.dt_ms * 1e-3
    return out


def passes(task, metrics: dict[str, np.ndarray], stage: int | None = None) -> dict[str, np.ndarray]:
    """Per constraint (up to ``stage``; None: all), whether it holds, per individual."""
    return {k.metric: k.holds(metrics[k.metric]) for k in task.config.constraints
            if stage is None or k.stage <= stage}


def plausibility_loss(task, result) -> np.ndarray:
    """Number of violated constraints (0: plausible)."""
    ok = passes(task, network_metrics(task, result))
    return sum((~v).astype(float) for v in ok.values())


SIMULATOR = NetworkSimulator()
