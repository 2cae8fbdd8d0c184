"""``rulesearch families``: families of co-active rules filtered by constraints (Confavreux et al. 2023).

Every plastic pathway of the task gets the doublet rule (``families.DoubletFamily``: tau_pre,
tau_post, alpha, beta, gamma, kappa); a candidate is one rule per pathway plus the simulator's
nuisance parameters (the external drive), simulated once with its own input seed. It is
*plausible* when every constraint of the task holds on its metrics.

Rounds. Round 0 draws ``simulations`` candidates from the prior: taus log-uniform in
``tau_range_ms``, coefficients uniform in ``coefficient_range``, nuisances uniform in their
ranges. Each later round proposes from what was simulated so far, with scikit-learn (backend
"sklearn"), in the prior's unit box, modelled on an *elite* set: the candidates passing every
constraint the proposed round checks, topped up to ``ELITE_FRACTION`` of all simulations (at
least ``ELITE_MIN``) with the least violating ones (``violation``: the summed distance outside
each range, relative to the bound crossed). That is ABC-SMC's adaptive tolerance: a round whose
constraints nothing has passed yet still moves towards them, instead of restarting from the prior.

1. a classifier of elite / not elite (gradient-boosted trees) over every simulation so far;
2. a density model of the elite (a Gaussian mixture, its covariances widened by ``WIDEN`` so the
   proposal explores around them), mixed with ``DEFENSIVE`` of the prior;
3. candidates drawn from that mixture outside the prior's box are dropped; the rest are kept with
   probability P(elite) / max P(elite) from the classifier (rejection), until the round is full.

Backend "sbi" (``family_sbi``, optional extra) proposes instead from sbi's neural posterior
estimation, as the published work did: a density estimator of the parameters given the checked
metrics, trained on every simulation so far and conditioned on targets drawn over the allowed
ranges; one proposal per round (training takes 10-60 s).

This is a restricted proposal, not a posterior: the family is the set of plausible combinations
found (those passing every constraint, in any round), and round 0's pass fraction is the
unbiased plausible fraction of the prior. With ``staged``, round r < last checks only the
constraints of stages <= r (rates, then weights, then the rest), as the published work did, and
the last round every constraint; the family always satisfies all of them.

A pathway can be pinned to a fixed rule (``families.pinned``, any rule the grammar can express):
it leaves the sampled space and every candidate runs it.

Within a later round the proposal is refitted after every batch (``families.refit``, default on;
``families.batch`` simulations each), so that a round of 700 in batches of 50 is 14 steps of the
sequential scheme rather than one: with three rounds, one-shot proposals moved too little towards
the weight constraints (README). Round 0 is always one draw from the prior.

Confirmation (``families.confirm``, default 0; the ei-network task: 1). A candidate passing every
constraint joins the family only if it passes every constraint again in ``confirm`` more
simulations with new input seeds (its own drive: the drive is a coordinate of the candidate, and
the family records it), run in the same batch and stored in confirmations.csv; a failed
confirmation makes the candidate count as failing, in the family and in the proposal's elite
set. The metrics of this small network carry seed noise that is heavy-tailed (w_creep's relative
drift of a mean weight near 0.05: README), so one passing simulation is weak evidence.

Aim (``families.aim``). Proposals are modelled on the constraints narrowed, on each finite side,
by ``aim`` x the seed noise the confirmations have measured so far (``seed_noise``), so that they
move towards rules that another input seed does not carry across a bound. The family's
membership is still decided by the task's constraints; only the proposal aims inside them.

Budget (``families.budget``, 0: none). Every simulation counts: the rounds', the confirmations'
and the final re-check of the family. A batch that could take the run past the budget (each of
its candidates counted with ``confirm`` confirmations and a re-check) is not started: the run ends
there, in whatever round, and run.json says ``stopped_by_budget``.

Resumable: each block of candidates is drawn once and saved (proposals.npz); simulations are run
in batches, and simulations.csv and checkpoint.json are written after each, so an interrupted
run continues where it stopped and ends exactly as an uninterrupted one.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .errors import TaskError
from .families import DoubletFamily
from .rules import RuleSpace, parse_rule
from .results import (CHECKPOINT_FILE, RUN_FILE, check_output, held_run, read_csv, read_json, savez_atomic, versions,
                      write_csv, write_json)
from .tasks import Task, load_task
from .vm import PackedPrograms, interleave

SIMULATIONS_FILE, ROUNDS_FILE, FAMILY_FILE, PROPOSALS_FILE = "simulations.csv", "rounds.csv", "family.csv", \
    "proposals.npz"
CONFIRMATIONS_FILE = "confirmations.csv"
DEFENSIVE = 0.1  # fraction of each later round's proposal drawn from the prior (before the classifier)
ELITE_FRACTION, ELITE_MIN = 0.03, 10  # a proposal is modelled on at least this many candidates
VIOLATION_CAP = 10.0  # a constraint's largest contribution to a candidate's violation
WIDEN = 1.2  # proposal covariance = WIDEN^2 x the mixture's (ABC-SMC kernels: about 1.4)
MAX_COMPONENTS = 5  # Gaussian mixture components (at most one per 10 passing candidates)
PER_PATHWAY = ("tau_pre_ms", "tau_post_ms", "alpha", "beta", "gamma", "kappa")
NOISE_QUANTILE, NOISE_MIN_PAIRS = 0.9, 10  # the seed noise a proposal aims clear of (see ``aimed``)


@dataclass(frozen=True)
class FamilySpec:
    """Everything needed to start, or restart, a family filter exactly."""

    task: str
    overrides: tuple[str, ...] = ()
    seed: int | None = None
    rounds: int | None = None
    simulations: int | None = None
    workers: int | None = None
    evaluator: str = "local"
    scheduler: str | None = None


class Space:
    """The candidates' parameters: readable names and values (taus in ms) <-> the prior's unit box.

    ``pathways``: the sampled pathways (the doublet family on each); ``all_pathways``: every plastic
    pathway of the task, in its order, including those ``families.pinned`` fixes to one rule (any
    rule the grammar can express; a part not written is 0; its traces use the network's
    ``tau_pre_ms`` and ``tau_post_ms``)."""

    def __init__(self, task: Task):
        if not task.sim.constraints(task.config):
            raise TaskError(f"{task.source}: the '{task.sim.name}' simulator has no constraints; "
                            "'rulesearch families' needs one that has (e.g. tasks/ei-network.toml)")
        self.pinned_text = task.families.pinned.strip()
        self.pinned, self.pinned_programs = _pinned(task, self.pinned_text)
        parts = task.space.pathways
        self.all_pathways = [n[:-len("pre")].rstrip(".") for n in task.space.names[::2]]
        sampled = [q for k, q in enumerate(parts) if self.all_pathways[k // 2] not in self.pinned]
        if not sampled:
            raise TaskError(f"{task.source}: field 'families.pinned' fixes every plastic pathway "
                            f"({', '.join(self.all_pathways)}): nothing is left to sample")
        self.family = DoubletFamily(RuleSpace(tuple(sampled)))
        self.pathways = self.family.pathways
        self.pinned_taus_ms = (float(getattr(task.config, "tau_pre_ms", DoubletFamily.TAU_REFERENCE_MS)),
                               float(getattr(task.config, "tau_post_ms", DoubletFamily.TAU_REFERENCE_MS)))
        s = task.families
        self.nuisance = task.sim.nuisance(task.config)
        self.names = [f"{p}.{n}" for p in self.pathways for n in PER_PATHWAY] + list(self.nuisance)
        lo, hi = [], []
        for _ in self.pathways:  # taus in log space (log-uniform prior), then the four coefficients
            lo += [np.log(s.tau_range_ms[0])] * 2 + [s.coefficient_range[0]] * 4
            hi += [np.log(s.tau_range_ms[1])] * 2 + [s.coefficient_range[1]] * 4
        for a, b in self.nuisance.values():
            lo.append(a)
            hi.append(b)
        self.low, self.high = np.array(lo), np.array(hi)
        self.log = np.array([n.endswith("_ms") for n in self.names])

    @property
    def dim(self) -> int:
        return len(self.names)

    def to_values(self, unit: np.ndarray) -> np.ndarray:
        """(n, dim) in [0, 1] -> readable values (taus in ms)."""
        z = self.low + unit * (self.high - self.low)
        return np.where(self.log, np.exp(z), z)

    def to_unit(self, values: np.ndarray) -> np.ndarray:
        z = np.where(self.log, np.log(np.maximum(values, 1e-300)), values)
        span = np.where(self.high > self.low, self.high - self.low, 1.0)
        return (z - self.low) / span

    def pack(self, values: np.ndarray, seeds: np.ndarray):
        """Candidates (n, dim) and their input seeds -> the packed population for ``Task.metrics``:
        every plastic pathway's pre and post programs (sampled or pinned), then per pathway tau_pre
        and tau_post (ms), then the nuisances and the seed."""
        n, k = len(values), len(self.pathways)
        per = values[:, :6 * k].reshape(n, k, 6).copy()
        packs, taus = [], []
        for p in self.all_pathways:
            if p in self.pinned:
                packs += [_repeat(q, n) for q in self.pinned_programs[p]]
                taus.append(np.broadcast_to(self.pinned_taus_ms, (n, 2)))
            else:
                j = self.pathways.index(p)
                packs += list(self.family.pathway_packs(per[:, j]))
                taus.append(per[:, j, :2])
        extras = np.concatenate(taus + [values[:, 6 * k:], np.asarray(seeds, float)[:, None]], axis=1)
        return replace(interleave(packs), extras=np.ascontiguousarray(extras))

    def describe(self, row: dict, pathway: str) -> str:
        """One pathway's rule, readable: 'pre: a + k*x_post; post: b + g*x_pre (tau_pre .., tau_post ..)'."""
        if pathway in self.pinned:
            pre, post = self.pinned[pathway]
            return (f"pre: {pre}; post: {post} (pinned; tau_pre {self.pinned_taus_ms[0]:.1f} ms, "
                    f"tau_post {self.pinned_taus_ms[1]:.1f} ms)")
        g = {n: float(row[f"{pathway}.{n}"]) for n in PER_PATHWAY}
        return (f"pre: {g['alpha']:.3g} {'+' if g['kappa'] >= 0 else '-'} {abs(g['kappa']):.3g}*x_post; "
                f"post: {g['beta']:.3g} {'+' if g['gamma'] >= 0 else '-'} {abs(g['gamma']):.3g}*x_pre "
                f"(tau_pre {g['tau_pre_ms']:.1f} ms, tau_post {g['tau_post_ms']:.1f} ms)")


def _pinned(task: Task, text: str) -> tuple[dict[str, tuple[str, str]], dict[str, tuple]]:
    """``families.pinned`` -> ({pathway: (pre text, post text)}, {pathway: (pre Program, post Program)})."""
    if not text:
        return {}, {}
    names = task.space.names  # "ee.pre", "ee.post", ...
    given = {}
    for part in text.split(";"):
        label, sep, body = part.partition(":")
        label = label.strip()
        if not sep or label not in names or label in given:
            why = "is given twice" if label in given else "names no plastic part of this network"
            raise TaskError(f"{task.source}: field 'families.pinned' is {text!r}: '{part.strip()}' {why} "
                            f"(write 'part: expression' with parts from {', '.join(names)})")
        given[label] = body.strip()
    pinned = [pre.rsplit(".", 1)[0] for pre, post in zip(names[::2], names[1::2]) if pre in given or post in given]
    text_of = {n: given.get(n, "0") if n.rsplit(".", 1)[0] in pinned else "0" for n in names}
    try:  # as a whole rule of the task: the grammar's errors name the token and the part
        rule = parse_rule("; ".join(f"{n}: {t}" for n, t in text_of.items()), task.space, limits=True)
    except ValueError as e:
        raise TaskError(f"{task.source}: field 'families.pinned' is {text!r}: {e}") from None
    programs = rule.programs()
    texts, progs = {}, {}
    for k, n in enumerate(names[::2]):
        p = n.rsplit(".", 1)[0]
        if p in pinned:
            texts[p] = (text_of[n], text_of[names[2 * k + 1]])
            progs[p] = (programs[2 * k], programs[2 * k + 1])
    return texts, progs


def _repeat(program, n: int) -> PackedPrograms:
    """One program for each of n individuals (a pinned pathway's)."""
    c, k = len(program.code), len(program.consts)
    return PackedPrograms(np.tile(program.code, n), np.tile(program.arg, n), np.tile(program.consts, n),
                          np.arange(n + 1, dtype=np.int64) * c, np.arange(n + 1, dtype=np.int64) * k,
                          program.depth)


def check_backend(name: str) -> None:
    """The proposal backend, or one line saying how to get it."""
    if name == "sbi":
        try:
            import sbi  # noqa: F401
        except ImportError:
            raise ValueError("families backend 'sbi' needs the sbi package (neural posterior estimation): "
                             "pip install sbi, or use backend = \"sklearn\" (the default)") from None


# ---------------------------------------------------------------- proposals

def violation(rows: Sequence[dict], constraints, checked: Sequence[str]) -> np.ndarray:
    """(n,) how far each simulation is from passing the ``checked`` constraints: the sum over them
    of the distance outside [low, high], relative to the bound it crosses (a rate of 60 Hz against
    50 Hz: 0.2; w_creep 0.1 against 0.05: 1), each capped at ``VIOLATION_CAP``, which is also what a
    metric that could not be measured (NaN: an exploded network) counts. 0 = passes them all."""
    total = np.zeros(len(rows))
    for k in constraints:
        if k.metric not in checked:
            continue
        v = np.array([float(r[k.metric]) for r in rows])
        with np.errstate(invalid="ignore"):
            below = (k.low - v) / (abs(k.low) if k.low != 0 else 1.0)
            above = (v - k.high) / (abs(k.high) if np.isfinite(k.high) and k.high != 0 else 1.0)
            d = np.maximum(np.maximum(below, above), 0.0)
        total += np.where(np.isfinite(d), np.minimum(d, VIOLATION_CAP), VIOLATION_CAP)
    return total


def worst_violation(rows: Sequence[dict], constraints, checked: Sequence[str],
                    confirmations: Sequence[dict] = ()) -> np.ndarray:
    """(n,) ``violation`` of each candidate, the largest over its own simulation and its
    confirmation simulations (rows of confirmations.csv, matched by round and index): a candidate
    that passed once and failed its confirmation does not count as passing."""
    d = violation(rows, constraints, checked)
    if len(confirmations):
        at = {(r["round"], r["index"]): i for i, r in enumerate(rows)}
        dc = violation(confirmations, constraints, checked)
        for row, v in zip(confirmations, dc):
            i = at.get((row["round"], row["index"]))
            if i is not None:
                d[i] = max(d[i], v)
    return d


def seed_noise(rows: Sequence[dict], confirmations: Sequence[dict], metrics: Sequence[str]) -> dict[str, float]:
    """Per metric, the seed noise measured by the confirmations: the ``NOISE_QUANTILE`` quantile,
    over the candidates with a first confirmation, of |own - confirmation| / sqrt(2) (the spread
    of one simulation, if the two are independent draws); 0 with fewer than ``NOISE_MIN_PAIRS``.
    A quantile, not a standard deviation: the noise is heavy-tailed (w_creep: median 0.0012,
    90 % 0.017 over the family of the README's run)."""
    at = {(r["round"], r["index"]): r for r in rows}
    pairs = [(at[(c["round"], c["index"])], c) for c in confirmations
             if c["repeat"] == "1" and (c["round"], c["index"]) in at]
    out = {}
    for m in metrics:
        d = np.array([abs(float(a[m]) - float(b[m])) for a, b in pairs]) / np.sqrt(2)
        d = d[np.isfinite(d)]
        out[m] = float(np.quantile(d, NOISE_QUANTILE)) if len(d) >= NOISE_MIN_PAIRS else 0.0
    return out


def aimed(constraints, noise: dict[str, float], z: float) -> list:
    """The constraints a proposal aims at: each range narrowed by z x the metric's seed noise on
    its finite sides (a lower bound of 0 is no side: those metrics are >= 0), so that the proposal
    favours candidates that another input seed does not carry across a bound. The family's
    membership is still decided by the constraints themselves."""
    out = []
    for k in constraints:
        e = z * noise.get(k.metric, 0.0)
        low = k.low + e if np.isfinite(k.low) and k.low > 0 else k.low
        high = k.high - e if np.isfinite(k.high) else k.high
        if low > high:  # noise larger than the range: aim at its middle
            low = high = 0.5 * (k.low + k.high)
        out.append(replace(k, low=low, high=high))
    return out


def elite(rows: Sequence[dict], constraints, checked: Sequence[str], fraction: float = ELITE_FRACTION,
          minimum: int = ELITE_MIN, confirmations: Sequence[dict] = ()) -> np.ndarray:
    """Bool (n,): the candidates a proposal is modelled on: those passing every ``checked``
    constraint (in their own simulation and every confirmation of it), topped up to ``fraction`` of
    ``rows`` (at least ``minimum``) with the least violating ones (an adaptive tolerance, as in
    ABC-SMC), so that a round whose constraints nothing has passed yet still moves towards them
    rather than falling back to the prior."""
    d = worst_violation(rows, constraints, checked, confirmations)
    want = min(len(rows), max(minimum, int(np.ceil(fraction * len(rows)))))
    if (d == 0).sum() >= want:
        return d == 0
    out = np.zeros(len(rows), bool)
    out[np.argsort(d, kind="stable")[:want]] = True
    return out


def propose(space: Space, rows: list[dict], constraints, checked: Sequence[str], n: int,
            rng: np.random.Generator, confirmations: Sequence[dict] = ()) -> np.ndarray:
    """n candidates in the unit box: the prior when there is nothing to learn from yet, else the
    restricted proposal of the module docstring, modelled on ``elite(rows, constraints, checked)``.
    ``rows``: every simulation so far (dicts of simulations.csv); ``checked``: the metrics whose
    constraints the proposed round checks; ``confirmations``: their confirmation simulations."""
    if not rows:
        return rng.random((n, space.dim))
    x = space.to_unit(np.array([[float(r[k]) for k in space.names] for r in rows]))
    y = elite(rows, constraints, checked, confirmations=confirmations)
    if y.sum() < 2 or y.all():
        return rng.random((n, space.dim))
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.mixture import GaussianMixture
    seed = int(rng.integers(2 ** 31))
    clf = HistGradientBoostingClassifier(max_iter=100, learning_rate=0.1, random_state=seed,
                                         class_weight="balanced").fit(x, y)
    k = int(max(1, min(MAX_COMPONENTS, y.sum() // 20)))
    # reg_covar: a floor of (0.02)^2 on each variance in the unit box, so a mixture of a few points
    # still explores around them rather than copying them
    gmm = GaussianMixture(k, covariance_type="full", reg_covar=4e-4, random_state=seed).fit(x[y])
    chol = np.linalg.cholesky(gmm.covariances_)
    out = []
    for _ in range(200):  # rounds of rejection; each draws 4n candidates
        m = 4 * n
        from_prior = rng.random(m) < DEFENSIVE
        comp = rng.choice(k, size=m, p=gmm.weights_)
        z = rng.standard_normal((m, space.dim))
        cand = gmm.means_[comp] + WIDEN * np.einsum("nij,nj->ni", chol[comp], z)
        cand[from_prior] = rng.random((from_prior.sum(), space.dim))
        cand = cand[np.all((cand >= 0) & (cand <= 1), axis=1)]
        if len(cand):
            p = clf.predict_proba(cand)[:, 1]
            out.append(cand[rng.random(len(cand)) < p / max(p.max(), 1e-12)])
        if sum(len(o) for o in out) >= n:
            break
    got = np.concatenate(out) if out else np.zeros((0, space.dim))
    if len(got) < n:  # the classifier rejects nearly everything: fill from the prior
        got = np.concatenate([got, rng.random((n - len(got), space.dim))])
    return got[:n]


def _propose_sbi(space: Space, rows: list[dict], constraints, checked: Sequence[str], n: int,
                 rng: np.random.Generator) -> np.ndarray:
    """n candidates in the unit box from the sbi backend (``family_sbi``): neural posterior estimation
    on every simulation so far, conditioned on targets in the ranges of the ``checked`` constraints."""
    from .family_sbi import propose_sbi
    if not rows:
        return rng.random((n, space.dim))
    theta = space.to_unit(np.array([[float(r[k]) for k in space.names] for r in rows]))
    ks = [k for k in constraints if k.metric in checked]
    metrics = np.array([[float(r[k.metric]) for k in ks] for r in rows])
    return propose_sbi(theta, metrics, np.array([k.low for k in ks], float), np.array([k.high for k in ks], float),
                       n, rng)


# ---------------------------------------------------------------- the run

def _columns(space: Space, task: Task) -> list[str]:
    metrics = [k.metric for k in task.sim.constraints(task.config)]
    return (["round", "index", "seed"] + space.names + metrics + ["exploded", "stopped_s"]
            + [f"pass_{m}" for m in metrics] + ["pass", "pass_round", "member"])


def _confirm_columns(task: Task) -> list[str]:
    metrics = [k.metric for k in task.sim.constraints(task.config)]
    return ["round", "index", "repeat", "seed"] + metrics + ["exploded", "pass"]


def confirmation_seed(seed: int, round_: int, index: int, repeat: int) -> int:
    """The input seed of a candidate's ``repeat``-th confirmation simulation (repeat >= 1): drawn
    from the run's seed and the candidate, independent of every other simulation's seed."""
    return int(np.random.default_rng([seed, 11, round_, index, repeat]).integers(0, 2 ** 31 - 1))


def _confirm(space: Space, task: Task, evaluator, new: list[dict]) -> list[dict]:
    """Confirmation simulations of the candidates of ``new`` (rows of one batch) that pass every
    constraint: up to ``families.confirm`` each, with new input seeds and the candidate's own drive,
    stopping at the first that fails. Sets each row's ``member`` (passes every constraint in its
    own simulation and every confirmation); returns the confirmations' rows."""
    constraints = task.sim.constraints(task.config)
    alive = [row for row in new if row["pass"] == "1"]
    out = []
    for k in range(1, task.families.confirm + 1):
        if not alive:
            break
        values = np.array([[float(row[n]) for n in space.names] for row in alive])
        seeds = np.array([confirmation_seed(task.seed, int(row["round"]), int(row["index"]), k) for row in alive])
        m = evaluator.metrics(space.pack(values, seeds))
        ok = np.all([c.holds(m[c.metric]) for c in constraints], axis=0)
        for i, row in enumerate(alive):
            line = {"round": row["round"], "index": row["index"], "repeat": str(k), "seed": str(int(seeds[i]))}
            line.update({c.metric: repr(float(m[c.metric][i])) for c in constraints})
            line.update(exploded=str(int(m["exploded"][i])), **{"pass": str(int(ok[i]))})
            out.append(line)
        alive = [row for i, row in enumerate(alive) if ok[i]]
    members = {id(row) for row in alive}
    for row in new:
        row["member"] = str(int(id(row) in members))
    return out


def _rows(space, task, round_: int, start: int, values, seeds, metrics, stage) -> list[dict]:
    constraints = task.sim.constraints(task.config)
    held = {k.metric: k.holds(metrics[k.metric]) for k in constraints}
    checked = [k.metric for k in constraints if stage is None or k.stage <= stage]
    rows = []
    for i in range(len(values)):
        row = {"round": str(round_), "index": str(start + i), "seed": str(int(seeds[i]))}
        row.update({n: repr(float(v)) for n, v in zip(space.names, values[i])})
        row.update({m: repr(float(metrics[m][i])) for m in held})
        row["exploded"] = str(int(metrics["exploded"][i]))
        row["stopped_s"] = repr(float(metrics["stopped_s"][i]))
        row.update({f"pass_{m}": str(int(held[m][i])) for m in held})
        row["pass"] = str(int(all(held[m][i] for m in held)))
        row["pass_round"] = str(int(all(held[m][i] for m in checked)))
        rows.append(row)
    return rows


def _stage(task: Task, round_: int, rounds: int) -> int | None:
    """The last stage round ``round_`` checks (None: every constraint). Staged, round r checks the
    stages <= r, and the last round every constraint, whatever the number of rounds."""
    if not task.families.staged or round_ >= rounds - 1:
        return None
    return round_


def _checked(task: Task, round_: int, rounds: int) -> list[str]:
    stage = _stage(task, round_, rounds)
    return [k.metric for k in task.sim.constraints(task.config) if stage is None or k.stage <= stage]


def families_run(spec: FamilySpec, out=None, resume: bool = False,
                 progress: Callable[[int, int, int, int, float], None] | None = None,
                 argv: Sequence[str] | None = None, force: bool = False) -> tuple[dict, Path]:
    """Run (or resume) a family filter into ``out``; returns (run info, folder).

    ``progress(round, rounds, done, total, pass_fraction_so_far)`` after each batch.
    """
    from .evaluators import make_evaluator
    started = time.time()
    if resume:
        out = Path(out)
        if not (out / RUN_FILE).is_file() or not (out / CHECKPOINT_FILE).is_file():
            raise TaskError(f"{out}: no {RUN_FILE} and {CHECKPOINT_FILE} to resume from")
        info = read_json(out / RUN_FILE)
        if info.get("kind") != "families":
            raise TaskError(f"{out}: holds a '{info.get('kind', 'evolve')}' run, not a 'families' run")
        spec = replace(spec, task=info["task"], overrides=tuple(info["overrides"]), seed=info["seed"],
                       rounds=spec.rounds or info["rounds"], simulations=info["simulations"])
    elif out is not None:
        if (Path(out) / CHECKPOINT_FILE).exists():
            raise TaskError(f"{out}: already holds {held_run(out)}; pass --resume {out} to continue it, "
                            "or another --out")
        check_output(out, force)
    if not resume:
        spec = replace(spec, task=str(Path(spec.task).resolve()))
    task = load_task(spec.task, spec.overrides, seed=spec.seed)
    check_backend(task.families.backend)
    space = Space(task)
    rounds = spec.rounds or task.families.rounds
    n_sim = spec.simulations or task.families.simulations
    if out is None:
        from .runs import default_out
        out = default_out(f"{task.name}-families")
    out = Path(out)
    rows = read_csv(out / SIMULATIONS_FILE) if resume and (out / SIMULATIONS_FILE).is_file() else []
    confirms = read_csv(out / CONFIRMATIONS_FILE) if resume and (out / CONFIRMATIONS_FILE).is_file() else []
    # confirmations are written before their batch's rows: drop those of a batch that was not saved
    saved = {(row["round"], row["index"]) for row in rows}
    confirms = [c for c in confirms if (c["round"], c["index"]) in saved]
    before = float(read_json(out / CHECKPOINT_FILE).get("elapsed", 0.0)) if resume else 0.0
    info = {"kind": "families", "command": list(argv) if argv is not None else [], "task": spec.task,
            "task_name": task.name, "overrides": list(spec.overrides), "seed": task.seed, "rounds": rounds,
            "simulations": n_sim, "backend": task.families.backend, "staged": task.families.staged,
            "confirm": task.families.confirm, "budget": task.families.budget,
            "prior": {"tau_range_ms": list(task.families.tau_range_ms),
                      "coefficient_range": list(task.families.coefficient_range),
                      **{k: list(v) for k, v in space.nuisance.items()}},
            "constraints": {k.metric: [k.low, k.high] for k in task.sim.constraints(task.config)},
            "parameters": space.names, "pinned": {p: list(t) for p, t in space.pinned.items()},
            "network": task.sim.describe(task.config), "versions": versions(),
            "status": "running"}
    evaluator = make_evaluator(task, spec.evaluator, spec.workers, spec.scheduler)
    info.update(evaluator.describe())
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / RUN_FILE, info)
    columns, confirm_columns = _columns(space, task), _confirm_columns(task)
    t0 = time.time()
    try:
        constraints = task.sim.constraints(task.config)
        fam = task.families

        def over_budget(n: int) -> bool:
            """Whether n more candidates could take the run past ``families.budget`` simulations:
            each costs at most itself, its confirmations and its re-check; the family found so far
            will be re-checked."""
            if not fam.budget:
                return False
            used = len(rows) + len(confirms) + (sum(row["member"] == "1" for row in rows) if fam.recheck else 0)
            return used + n * (1 + fam.confirm + int(fam.recheck)) > fam.budget

        stopped = False
        for r in range(rounds):
            # round 0 samples the prior at once; a later round refits its proposal after every batch
            # (sbi trains a neural density estimator per proposal, 10-60 s: one proposal per round)
            step = n_sim if r == 0 or not task.families.refit or task.families.backend == "sbi" \
                else min(task.families.batch, n_sim)
            while not stopped:
                done = sum(int(row["round"]) == r for row in rows)
                if done >= n_sim:
                    break
                if over_budget(min(fam.batch, n_sim - done)):
                    stopped = True
                    break
                start = done // step * step
                size = min(step, n_sim - start)
                proposals = out / PROPOSALS_FILE
                stored = np.load(proposals) if proposals.is_file() else None
                if stored is not None and int(stored["round"]) == r and int(stored["start"]) == start:
                    unit, seeds = stored["unit"], stored["seeds"]
                else:  # drawn once, from the seed and the simulations before this block
                    rng = np.random.default_rng([task.seed, 7, r, start])
                    known = [row for row in rows if int(row["round"]) < r
                             or (int(row["round"]) == r and int(row["index"]) < start)]
                    # modelled on the candidates nearest to passing the constraints this round checks
                    keys = {(row["round"], row["index"]) for row in known}
                    seen = [c for c in confirms if (c["round"], c["index"]) in keys]
                    aim = aimed(constraints, seed_noise(known, seen, [k.metric for k in constraints]),
                                task.families.aim)
                    if task.families.backend == "sbi":
                        unit = _propose_sbi(space, known, aim, _checked(task, r, rounds), size, rng)
                    else:
                        unit = propose(space, known, aim, _checked(task, r, rounds), size, rng, seen)
                    seeds = rng.integers(0, 2 ** 31 - 1, size)
                    savez_atomic(proposals, round=np.array(r), start=np.array(start), unit=unit, seeds=seeds)
                values = space.to_values(unit)
                for a in range(done - start, size, task.families.batch):
                    b = min(a + task.families.batch, size)
                    if over_budget(b - a):  # the budget ends the run here; a resumed run stops here too
                        stopped = True
                        break
                    metrics = evaluator.metrics(space.pack(values[a:b], seeds[a:b]))
                    new = _rows(space, task, r, start + a, values[a:b], seeds[a:b], metrics, _stage(task, r, rounds))
                    confirms += _confirm(space, task, evaluator, new)
                    rows += new
                    write_csv(out / CONFIRMATIONS_FILE, confirm_columns,
                              [[c[k] for k in confirm_columns] for c in confirms])
                    write_csv(out / SIMULATIONS_FILE, columns, [[row[c] for c in columns] for row in rows])
                    write_json(out / CHECKPOINT_FILE, {"round": r, "done": start + b,
                                                       "elapsed": before + time.time() - t0})
                    if progress is not None:
                        this = [row for row in rows if int(row["round"]) == r]
                        progress(r, rounds, start + b, n_sim, np.mean([row["pass_round"] == "1" for row in this]))
        summary = _finish(space, task, out, rows, rounds, evaluator, confirms)
        summary["stopped_by_budget"] = stopped
    except KeyboardInterrupt:
        info.update(status="interrupted", elapsed_seconds=round(before + time.time() - t0, 3))
        write_json(out / RUN_FILE, info)
        raise
    finally:
        evaluator.close()
    rechecked = summary.pop("rechecked")
    info.update(status="done", elapsed_seconds=round(before + time.time() - t0, 3),
                wall_seconds=round(time.time() - started, 3), evaluations=len(rows) + len(confirms) + rechecked,
                **summary)
    write_json(out / RUN_FILE, info)
    return info, out


def _finish(space: Space, task: Task, out: Path, rows: list[dict], rounds: int, evaluator,
            confirms: Sequence[dict] = ()) -> dict:
    """rounds.csv, family.csv (with a re-simulation under new seeds), the figures; facts for run.json."""
    from .family_plots import plot_families
    table = []
    for r in range(rounds):
        this = [row for row in rows if int(row["round"]) == r]
        table.append({"round": r, "simulations": len(this),
                      "passed_round": sum(row["pass_round"] == "1" for row in this),
                      "passed_all": sum(row["pass"] == "1" for row in this),
                      "members": sum(row["member"] == "1" for row in this),
                      "pass_fraction": np.mean([row["pass_round"] == "1" for row in this]) if this else 0.0,
                      "pass_fraction_all": np.mean([row["pass"] == "1" for row in this]) if this else 0.0,
                      "exploded_fraction": np.mean([row["exploded"] == "1" for row in this]) if this else 0.0})
    write_csv(out / ROUNDS_FILE, list(table[0]), [[t[c] for c in t] for t in table])
    family = [row for row in rows if row["member"] == "1"]
    recheck = None
    if task.families.recheck and family:
        values = np.array([[float(row[n]) for n in space.names] for row in family])
        seeds = np.array([int(row["seed"]) for row in family]) + 1_000_003  # new input streams
        m = {}
        for a in range(0, len(family), task.families.batch):
            part = evaluator.metrics(space.pack(values[a:a + task.families.batch], seeds[a:a + task.families.batch]))
            for k, v in part.items():
                m.setdefault(k, []).append(v)
        m = {k: np.concatenate(v) for k, v in m.items()}
        held = {k.metric: k.holds(m[k.metric]) for k in task.sim.constraints(task.config)}
        recheck = np.all(list(held.values()), axis=0)
        failed = [" ".join(k for k, v in held.items() if not v[i]) for i in range(len(family))]
        failures = {k: int((~v).sum()) for k, v in held.items() if (~v).any()}
    cols = ["round", "index", "seed"] + list(space.all_pathways) + space.names + (
        ["recheck_pass", "recheck_failed"] if recheck is not None else [])
    family_rows = []
    for i, row in enumerate(family):
        line = {"round": row["round"], "index": row["index"], "seed": row["seed"],
                **{p: space.describe(row, p) for p in space.all_pathways}, **{n: row[n] for n in space.names}}
        if recheck is not None:
            line["recheck_pass"] = str(int(recheck[i]))
            line["recheck_failed"] = failed[i]  # the constraints the re-simulation violates
        family_rows.append([line[c] for c in cols])
    write_csv(out / FAMILY_FILE, cols, family_rows)
    if task.families.figures:
        plot_families(out, space, task, rows, table)
    return {"rounds_table": [{k: (round(float(v), 4) if isinstance(v, float) else v) for k, v in t.items()}
                             for t in table],
            "family_size": len(family), "confirmations": len(confirms),
            "seed_noise": {k: round(v, 6) for k, v in seed_noise(
                rows, confirms, [c.metric for c in task.sim.constraints(task.config)]).items()},
            "rechecked": 0 if recheck is None else len(family),
            "recheck_pass_fraction": None if recheck is None else round(float(np.mean(recheck)), 4),
            "recheck_failures": None if recheck is None else failures}


# ---------------------------------------------------------------- show

def summarise(run_dir: str | Path) -> dict:
    """What ``rulesearch show`` prints for a family folder: size, per parameter the plausible range
    (5-95 % of the family) against the prior's, and the most correlated parameter pairs across pathways."""
    run_dir = Path(run_dir)
    info = read_json(run_dir / RUN_FILE)
    path = run_dir / FAMILY_FILE
    if not path.is_file():
        raise TaskError(f"{run_dir}: no {FAMILY_FILE} (an unfinished family run: continue it with --resume)")
    rows = read_csv(path)
    names = info["parameters"]
    prior = info["prior"]
    out = {"info": info, "size": len(rows), "parameters": [], "correlations": []}
    if not rows:
        return out
    x = np.array([[float(r[n]) for n in names] for r in rows])
    for j, name in enumerate(names):
        if name.endswith("_ms"):
            lo, hi = prior["tau_range_ms"]
            q = np.exp(np.quantile(np.log(x[:, j]), [0.05, 0.95]))
            width = np.log(q[1] / q[0]) / np.log(hi / lo)
        else:
            lo, hi = prior.get(name, prior["coefficient_range"])
            q = np.quantile(x[:, j], [0.05, 0.95])
            width = (q[1] - q[0]) / (hi - lo) if hi > lo else 1.0
        out["parameters"].append({"name": name, "low": float(q[0]), "high": float(q[1]), "prior": [lo, hi],
                                  "width": float(width), "pinned": bool(width < 0.6)})
    if len(rows) >= 5:
        with np.errstate(invalid="ignore", divide="ignore"):  # only the taus are logged
            z = np.where([n.endswith("_ms") for n in names], np.log(x), x)
        c = np.corrcoef(z, rowvar=False)
        pairs = [(abs(c[a, b]), names[a], names[b], c[a, b]) for a in range(len(names)) for b in range(a)
                 if names[a].split(".")[0] != names[b].split(".")[0] and np.isfinite(c[a, b])]
        out["correlations"] = [{"a": a, "b": b, "r": float(r)} for _, a, b, r in sorted(pairs, reverse=True)[:6]]
    return out
