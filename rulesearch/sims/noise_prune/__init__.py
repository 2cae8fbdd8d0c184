"""Noise-driven pruning (``network.simulator = "noise_prune"``): a linear recurrent network
dx/dt = A x + sigma xi, probed by noise, and the rule that decides which synapses to keep
(Moore and Chaudhuri 2020, "Using noise to probe recurrent neural network structure and prune
synapses").

Pathway ``keep``: a rule is a score over what a synapse (i <- j) sees, ``w`` (A_ij), ``c``
(the noise-driven covariance C_ij), ``c_pre`` (C_jj) and ``c_post`` (C_ii). The network stays
symmetric, so the two synapses i <- j and j <- i are kept or pruned together: the pair's score
is the mean of theirs (a rule cannot exploit how the neurons happen to be numbered; for a rule
symmetric in pre and post it is the rule's value). Each off-diagonal pair {i, j} with A_ij != 0
is kept with probability p_ij = min(1, k score_ij),
k set so that the expected kept fraction is ``pruning.keep``; kept weights become A_ij / p_ij
(unbiased: E[pruned A_ij] = A_ij) and the diagonal is compensated as published (row sums,
``kernel._pruned``). Scores <= 0 mean "never keep"; a NaN or inf score, or no positive score,
makes the rule blown (worst loss). The published rule is ``PUBLISHED_RULE``.

Objective ``preserve_dynamics``: the slow-mode-weighted mean squared relative error of the pruned
network's eigenvalues (``objectives.preserve_dynamics_loss``), over ``pruning.samples`` sampling
draws shared by all candidates.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ... import vm
from ...errors import DataError, TaskError
from ..base import Objective, PathwaySpec, Simulator, provided
from .kernel import PruneResult, keep_probabilities, noise_trajectory, prune_population, sampled_covariance
from .network import PUBLISHED_CLUSTERS, NetworkSpec, check_matrix, clustered_network, exact_covariance
from .objectives import preserve_dynamics_loss, slow_mode_error

__all__ = ["CONTROL_RULE", "PUBLISHED_RULE", "PruneData", "PruneResult", "NoisePruneConfig", "NoisePruneState",
           "SIMULATOR"]

PUBLISHED_RULE = "abs(w)*(c_pre + c_post - 2*sign(w)*c)"  # Moore and Chaudhuri (2020)
CONTROL_RULE = "abs(w)"  # their control: keep in proportion to |weight|
COVARIANCES = ("exact", "sampled")
BURN_IN_TIME_CONSTANTS = 10.0  # sampled runs: unsampled start of 10 slowest time constants (transient e^-10)


@dataclass(frozen=True)
class NoisePruneConfig:
    source: str  # the task file (for messages)
    network: NetworkSpec
    network_seed: int | None  # default networks: built from this seed, else from the task's seed
    sigma: float  # noise std (the covariance scales with sigma^2; the scores of a rule may not)
    covariance: str  # "exact" | "sampled"
    dt: float  # sampled: Euler-Maruyama step, time units of A
    sample_time: float  # sampled: length of the sampled run, time units of A
    keep: float  # expected fraction of synapse pairs kept
    samples: int  # sampling draws per candidate (shared by all candidates)
    trajectory_weight: float = 0.0  # > 0: the loss also weighs the noise-driven trajectories' error
    trajectory_time: float = 50.0  # length of the compared runs, time units of A (steps of noise.dt)


@dataclass(frozen=True, eq=False)
class NoisePruneState:
    """The network, what noise reveals in it and the shared sampling draws. Synapse pair k is
    (rows[k] < cols[k]); the VM's arrays hold its two synapses, i <- j at batch index k and
    j <- i at m + k (pre/post batch = synapses, one unit each)."""

    A: np.ndarray  # (n, n)
    C: np.ndarray  # (n, n) stationary covariance, exact or sampled
    eigenvalues: np.ndarray  # (n,) of A, ascending
    rows: np.ndarray  # int (m,) post neuron i
    cols: np.ndarray  # int (m,) pre neuron j
    margin: np.ndarray  # (n,) A_ii + sum_j |A_ij| (<= 0 for diagonally dominant A)
    pre: np.ndarray  # (3, 2m, 1): slot 2 c_pre (C_jj, then C_ii)
    post: np.ndarray  # (4, 2m, 1): slot 3 c_post (C_ii, then C_jj)
    syn: np.ndarray  # (2, 2m): slot 0 w = A_ij, slot 1 c = C_ij (both halves alike)
    trial: np.ndarray  # (0, 2m)
    uniforms: np.ndarray  # (samples, m) in [0, 1): pair k kept in draw s when uniforms[s, k] < p_k
    trajectories: tuple | None = None  # (noise (steps, n), dt, sigma, the original's run (steps, n))

    @property
    def n(self) -> int:
        return self.A.shape[0]

    @property
    def w(self) -> np.ndarray:
        """(m,) the pairs' weights A_ij."""
        return self.syn[0, :self.rows.shape[0]]


@dataclass(frozen=True, eq=False)
class PruneData:
    """A network given with ``--data FILE.npz`` (array ``A``)."""

    A: np.ndarray
    meta: dict
    source: str = "<memory>"


def _seed(seed: int, stream: int) -> np.random.Generator:
    """Independent streams of one seed: 0 the network, 1 the noise of a sampled run, 2 the draws."""
    return np.random.default_rng([int(seed), stream])


def make_state(A: np.ndarray, config: NoisePruneConfig, seed: int) -> NoisePruneState:
    """Everything a population is scored on, for the network A (already checked)."""
    n = A.shape[0]
    eigenvalues = np.linalg.eigvalsh(A)
    needs_dt = config.covariance == "sampled" or config.trajectory_weight > 0
    if needs_dt and config.dt * abs(eigenvalues[0]) >= 1.0:
        raise TaskError(f"{config.source}: field 'noise.dt' is {config.dt:g}: expected less than "
                        f"{1.0 / abs(eigenvalues[0]):.3g} (1 / the fastest rate |lambda|) for a stable "
                        "Euler-Maruyama run")
    if config.covariance == "exact":
        C = exact_covariance(A, config.sigma)
    else:
        burn = BURN_IN_TIME_CONSTANTS / abs(eigenvalues[-1])
        C = sampled_covariance(A, config.sigma, config.dt, config.sample_time, burn,
                               int(_seed(seed, 1).integers(2**31)))
    rows, cols = np.nonzero(np.triu(A, 1))
    m = rows.shape[0]
    pre, post, syn = np.zeros((3, 2 * m, 1)), np.zeros((4, 2 * m, 1)), np.zeros((2, 2 * m))
    pre[2, :, 0] = np.concatenate([C[cols, cols], C[rows, rows]])
    post[3, :, 0] = np.concatenate([C[rows, rows], C[cols, cols]])
    syn[0], syn[1] = np.tile(A[rows, cols], 2), np.tile(C[rows, cols], 2)
    margin = np.diag(A) + np.abs(A - np.diag(np.diag(A))).sum(axis=1)
    uniforms = _seed(seed, 2).random((config.samples, m))
    trajectories = None
    if config.trajectory_weight > 0:
        noise = _seed(seed, 3).standard_normal((max(1, int(round(config.trajectory_time / config.dt))), n))
        trajectories = (noise, config.dt, config.sigma, noise_trajectory(A, noise, config.dt, config.sigma))
    return NoisePruneState(A, C, eigenvalues, rows.astype(np.int64), cols.astype(np.int64), margin, pre, post,
                           syn, np.zeros((0, 2 * m)), uniforms, trajectories)


def load_matrix(path: str | Path) -> PruneData:
    """Read a network from an NPZ file with a square float array ``A`` (``DataError`` naming file,
    array and problem); the checks of ``network.check_matrix``."""
    from ...data import open_npz, read_meta
    path = Path(path)
    with open_npz(path, "A") as npz:
        if "A" not in npz.files:
            raise DataError(f"{path}: array 'A' is missing: expected float (n, n), the network's weights")
        try:
            A = npz["A"]
        except ValueError:
            raise DataError(f"{path}: array 'A' holds Python objects: expected float (n, n) "
                            "(object arrays are never unpickled)") from None
        meta = read_meta(npz, path)
    if not (np.issubdtype(A.dtype, np.floating) or np.issubdtype(A.dtype, np.integer)) or A.dtype == np.bool_:
        raise DataError(f"{path}: array 'A' has dtype {A.dtype}: expected float (n, n)")
    A = A.astype(np.float64)
    problem = check_matrix(A, str(path))
    if problem:
        raise DataError(f"{path}: array 'A' {problem}")
    return PruneData(A, meta, str(path))


class NoisePruneSimulator(Simulator):
    name = "noise_prune"
    sections = ("noise", "pruning")
    objectives = {
        "preserve_dynamics": Objective(
            "preserve_dynamics", preserve_dynamics_loss, accepts_data=True,
            description="slow-mode-weighted mean squared relative error of the pruned network's eigenvalues"),
    }
    data_help = "a network: pass --data FILE.npz (array A, square, symmetric, negative diagonal, stable)"

    def configure(self, network, sections, objective):
        n = network.get("n", int, 300, low=2)
        clusters = network.numbers("clusters", PUBLISHED_CLUSTERS)
        if not clusters or any(c <= 0 for c in clusters) or 2 * len(clusters) > n:
            network.fail("clusters", f"is {list(clusters)}: expected 1..{n // 2} positive relative sizes "
                         f"(each cluster needs at least 2 of the {n} neurons)")
        density = network.get("density", float, 0.6, low=0.0, high=1.0)
        long_range = network.get("long_range", float, 2.5, low=0.0)
        seed = network.get("seed", int, None, low=0)
        network.finish()
        if min(np.floor(np.asarray(clusters) / sum(clusters) * n)) < 2:
            network.fail("clusters", f"is {list(clusters)}: a cluster would have fewer than 2 of the {n} neurons")
        f = sections["noise"]
        sigma = f.get("sigma", float, 1.0)
        if not sigma > 0:
            f.fail("sigma", f"is {sigma!r}: expected a positive noise std")
        covariance = f.get("covariance", str, "exact", choices=COVARIANCES)
        dt = f.get("dt", float, 0.02)
        sample_time = f.get("sample_time", float, 2000.0)
        for key, value in (("dt", dt), ("sample_time", sample_time)):
            if not value > 0:
                f.fail(key, f"is {value!r}: expected a positive time (time units of A)")
        f.finish()
        p = sections["pruning"]
        keep = p.get("keep", float, 0.2, high=1.0)
        if not keep > 0:
            p.fail("keep", f"is {keep!r}: expected a fraction in (0, 1] of the synapses to keep")
        samples = p.get("samples", int, 8, low=1)
        trajectory_weight = p.get("trajectory_weight", float, 0.0, low=0.0)
        trajectory_time = p.get("trajectory_time", float, 50.0)
        if not trajectory_time > 0:
            p.fail("trajectory_time", f"is {trajectory_time!r}: expected a positive time (time units of A)")
        p.finish()
        return NoisePruneConfig(network.path, NetworkSpec(n, tuple(clusters), density, long_range), seed,
                                sigma, covariance, dt, sample_time, keep, samples, trajectory_weight,
                                trajectory_time)

    def pathways(self, config):
        variables = provided("w", "c", "c_pre", "c_post",
                             meanings={"w": "weight A_ij of the synapse",
                                       "c": "noise-driven covariance C_ij of its two neurons",
                                       "c_pre": "noise-driven variance C_jj of the presynaptic neuron",
                                       "c_post": "noise-driven variance C_ii of the postsynaptic neuron"},
                             latex={"w": "A_{ij}", "c": "C_{ij}", "c_pre": "C_{jj}", "c_post": "C_{ii}"})
        return (PathwaySpec("keep", variables, r"s_{ij}", 1.0,
                            "score of a synapse; kept with probability min(1, k score)"),)

    def generate(self, config, seed):
        A = clustered_network(config.network, _seed(config.network_seed if config.network_seed is not None
                                                    else seed, 0))
        problem = check_matrix(A, config.source)
        if problem:  # e.g. a tiny or disconnected network whose off-diagonal part has no positive eigenvalue
            raise TaskError(f"{config.source}: the network built from [network] {problem}")
        return make_state(A, config, seed)

    def load_data(self, path):
        return load_matrix(path)

    def attach(self, task, data):
        if not isinstance(data, PruneData):
            raise TaskError(f"{task.source}: {type(data).__name__} given to a 'noise_prune' task (expected a "
                            "network: array A)")
        problem = check_matrix(data.A, data.source)
        if problem:
            raise DataError(f"{data.source}: array 'A' {problem}")
        config = replace(task.config, network=replace(task.config.network, n=data.A.shape[0]))
        return replace(task, config=config, state=make_state(data.A, config, task.seed),
                       data_source=data.source, data_meta=data.meta)

    def simulate(self, task, packed, record=False, **options):
        s = task.state
        return prune_population(self.scores(task, packed), s.rows, s.cols, s.w, s.margin, task.config.keep,
                                s.uniforms, record, s.trajectories)

    def scores(self, task, packed) -> np.ndarray:
        """Each rule's score of every synapse pair (n_ind, m): the mean of its two synapses' values,
        computed by the VM (NaN or inf stays so: the rule is then blown)."""
        s = task.state
        both = vm.evaluate(packed, s.pre, s.post, s.syn, s.trial)
        m = s.rows.shape[0]
        return 0.5 * (both[:, :m] + both[:, m:])

    def visited_states(self, task, packed, pathway, names, n_samples, rng):
        s = task.state
        k = rng.integers(0, s.syn.shape[1], n_samples)  # either synapse of a pair
        columns = {"w": s.syn[0, k], "c": s.syn[1, k], "c_pre": s.pre[2, k, 0], "c_post": s.post[3, k, 0]}
        missing = [v for v in names if v not in columns]
        if missing:
            raise ValueError(f"distill samples {', '.join(columns)}; this rule also uses {', '.join(missing)}")
        return np.stack([columns[v] for v in names], axis=1)

    def synthesize(self, task, rule, out, noise, observed, animals):
        from .report import write_pruned
        if noise != 0.0 or observed != 1.0 or animals is not None:
            raise ValueError("--noise, --observed and --animals are for activity and choice data; a "
                             "'noise_prune' task writes the pruned network (set the noise in [noise])")
        return write_pruned(task, rule, Path(out))

    def data_facts(self, task):
        s = task.state
        return {"neurons": int(s.n), "synapse_pairs": int(s.rows.shape[0])}

    def describe(self, config):
        return {"neurons": config.network.n, "covariance": config.covariance, "sigma": config.sigma,
                "keep": config.keep, "samples": config.samples}


SIMULATOR = NoisePruneSimulator()
