"""Compare fitted rules on held-out choices: likelihood, deviance explained, AIC and BIC.

Each run folder (``evolve`` or ``fit``) contributes one model: its selected rule or
fitted family. All models are scored on the same held-out trials of the same data
(every ``protocol.heldout_every``-th trial of every animal, which no fit has seen),
next to the model without plasticity (the null model of the deviance).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import TaskError
from .fit import split_trials
from .results import PARAMS_FILE, RUN_FILE, read_json
from .runs import read_fit, read_front
from .sims import choice
from .tasks import Task, load_task, pack_rules
from .vm import PackedPrograms

L1_PARAMETER_CUT = 0.01  # L1 fits: coefficients above 1 % of the largest count as parameters


@dataclass(frozen=True)
class Model:
    name: str  # the run folder's name
    description: str  # the rule, or the family
    packed: PackedPrograms
    n_params: int


def load_model(run_dir: str | Path, task: Task) -> Model:
    """The selected rule (evolve) or fitted family (fit) of a run folder, as one packed program."""
    run_dir = Path(run_dir)
    if (run_dir / PARAMS_FILE).is_file():
        info, family, params = read_fit(run_dir)
        if info.get("term_selection"):  # terms selected and refitted: the others are exactly 0
            k = int(np.count_nonzero(params))
        elif family.kind == "taylor" and info.get("l1", 0) > 0:
            k = int(np.sum(np.abs(params) > L1_PARAMETER_CUT * np.abs(params).max()))
        else:
            k = family.n_params
        text = info.get("rule") or f"{family.kind} ({family.n_params} parameters)"
        return Model(run_dir.name, text, family.pack(params[None]), k)
    rows = read_front(run_dir)
    selected = next(r for r in rows if str(r["selected"]) == "1")
    rule = task.parse(selected["expression"])
    return Model(run_dir.name, rule.text(), pack_rules([rule]), len(rule.constants()))


@dataclass(frozen=True)
class Comparison:
    models: list[Model]
    animals: tuple[str, ...]
    decisions: np.ndarray  # (A,) held-out decisions per animal
    nll: np.ndarray  # (n_models, A) held-out negative log-likelihood (nats)
    null_nll: np.ndarray  # (A,)
    task: Task  # the held-out view
    weights: np.ndarray  # (n_models, A, T + 1, n_out, n_in) weight trajectories

    def summary(self) -> list[dict]:
        n = float(self.decisions.sum())
        out = []
        for m, nll in zip(self.models, self.nll):
            total = float(nll.sum())
            out.append({"model": m.name, "rule": m.description, "parameters": m.n_params,
                        "decisions": int(n), "nll": total,
                        "deviance_explained": 1 - total / float(self.null_nll.sum()),
                        "aic": 2 * m.n_params + 2 * total, "bic": m.n_params * np.log(n) + 2 * total})
        best = int(np.argmin([r["aic"] for r in out]))
        for k, r in enumerate(out):
            r["delta_aic"] = r["aic"] - out[best]["aic"]
            # held-out NLL against the best model by AIC, with its standard error from the spread of
            # the per-animal differences (animals are the independent units)
            d = self.nll[k] - self.nll[best]
            r["delta_nll"] = float(d.sum())
            r["delta_nll_se"] = float(np.sqrt(len(d)) * d.std(ddof=1)) if len(d) > 1 else float("nan")
        return out


def compare_runs(run_dirs: list[str | Path]) -> Comparison:
    """Score the runs' models on the held-out trials of the data they were fitted to."""
    if len(run_dirs) < 1:
        raise ValueError("compare needs at least one run folder")
    infos = []
    for d in run_dirs:
        path = Path(d) / RUN_FILE
        if not path.is_file():
            raise TaskError(f"{d}: no {RUN_FILE} (not a run folder)")
        infos.append(read_json(path))
    first = infos[0]
    for d, info in zip(run_dirs, infos):
        if info.get("kind") == "distill":
            raise TaskError(f"{d}: a distill folder; compare its fit folder, or an evolve run of the formula")
        if info.get("data") is None:
            raise TaskError(f"{d}: was not fitted to data (no --data): nothing held out to compare on")
        if Path(info["data"]).resolve() != Path(first["data"]).resolve():
            raise TaskError(f"{d}: fitted to {info['data']}, but {run_dirs[0]} to {first['data']}: "
                            "models must be compared on the same data")
    task = load_task(first["task"], first["overrides"], first["data"], first["seed"])
    if task.objective != "fit_choices":
        raise TaskError(f"{run_dirs[0]}: compare scores choice tasks (objective fit_choices); "
                        f"this run's objective is '{task.objective}'")
    _, test = split_trials(task, 0.0)
    if test is None:
        raise TaskError(f"{first['task']}: protocol.heldout_every is 0: no held-out trials to compare on")
    models = [load_model(d, test) for d in run_dirs]
    sims = [test.simulate(m.packed, record=True) for m in models]
    null = test.simulate([test.parse("0")])
    return Comparison(models, task.state.data.names, sims[0].count, np.stack([s.nll[0] for s in sims]),
                      null.nll[0], test, np.stack([s.w[0] for s in sims]))


def acceptance_curves(comparison: Comparison, animal: int) -> dict:
    """P(accept) of each odour before each trial under each model, and the animal's running
    acceptance rate per odour (window of 10 encounters of that odour), for one animal."""
    t = comparison.task
    ch = t.state.choices
    n_trials = int(ch.n_trials[animal])
    probs = []
    for w in comparison.weights:  # (A, T + 1, n_out, n_in)
        W = w[animal, :n_trials + 1]  # (trials, n_out, n_in)
        probs.append(choice.acceptance_probability(W, t.state.patterns, t.config.readout,
                                                   t.config.protocol.odour_variance))
    odour, decision, _ = t.state.data.per_animal(animal)
    trial_of = np.concatenate([[0], np.cumsum(decision)[:-1]])  # trial index of each encounter
    running = []
    for o in (0, 1):
        sel = np.flatnonzero(odour == o)
        d = decision[sel].astype(float)
        c = np.cumsum(np.concatenate([[0.0], d]))
        k = np.arange(1, len(d) + 1)
        lo = np.maximum(k - 10, 0)
        running.append((trial_of[sel], (c[k] - c[lo]) / (k - lo)))
    return {"probs": probs, "running": running, "n_trials": n_trials}
