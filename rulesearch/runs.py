"""Evolve a task into a run folder, and resume one: what ``rulesearch evolve`` does, as an API."""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .data import ActivityData
from .errors import TaskError
from .evaluators import LocalEvaluator
from .gp import EvolveResult, Search
from .plots import plot_front
from .results import (CHECKPOINT_FILE, FRONT_PLOT, PARETO_COLUMNS, PARETO_FILE, RUN_FILE, read_csv,
                      read_json, versions, write_csv, write_json)
from .tasks import load_task, pack_rules


@dataclass(frozen=True)
class RunSpec:
    """Everything needed to start, or restart, a search exactly."""

    task: str
    overrides: tuple[str, ...] = ()
    data: str | None = None
    seed: int | None = None
    population: int | None = None
    generations: int | None = None
    workers: int | None = None


def default_out(task_name: str) -> Path:
    return Path("results") / f"{task_name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def front_rows(result: EvolveResult) -> list[dict]:
    return [{"complexity": e.complexity, "loss": e.loss, "expression": e.expression,
             "latex": e.rule.latex(lhs=False), "selected": int(e.selected)} for e in result.front]


def evolve_run(spec: RunSpec, out: str | Path | None = None, resume: bool = False,
               progress: Callable[[int, int, float, int], None] | None = None,
               argv: Sequence[str] | None = None) -> tuple[EvolveResult, Path]:
    """Run a search and write ``out``: run.json, pareto.csv, checkpoint.json, front.png.

    With ``resume``, ``out`` must hold a checkpoint; the search continues from it
    with the run's recorded task, overrides, data and seed.
    """
    started = time.time()
    if resume:
        out = Path(out)
        if not (out / CHECKPOINT_FILE).is_file() or not (out / RUN_FILE).is_file():
            raise TaskError(f"{out}: no {CHECKPOINT_FILE} and {RUN_FILE} to resume from")
        info = read_json(out / RUN_FILE)
        spec = RunSpec(info["task"], tuple(info["overrides"]), info["data"], info["seed"],
                       info["population"], spec.generations or info["generations"],
                       spec.workers or info["workers"])
    task = load_task(spec.task, spec.overrides, spec.data, spec.seed)
    out = Path(out) if out is not None else default_out(task.name)
    if not resume and (out / CHECKPOINT_FILE).exists():
        raise TaskError(f"{out}: already holds a run; pass --resume {out} to continue it, or another --out")
    evaluator = LocalEvaluator(task, spec.workers)
    search = Search(task, evaluator, task.seed, spec.population, spec.generations)
    info = {
        "command": list(argv) if argv is not None else sys.argv,
        "task": str(spec.task), "task_name": task.name, "overrides": list(spec.overrides),
        "data": spec.data, "seed": task.seed, "population": search.mu,
        "generations": search.generations, "workers": evaluator.workers,
        "grammar": task.grammar.source, "objective": task.objective,
        "started": datetime.fromtimestamp(started, timezone.utc).isoformat(timespec="seconds"),
        "versions": versions(), "status": "running",
    }
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / RUN_FILE, info)
    state = search.state_from_json(read_json(out / CHECKPOINT_FILE)) if resume else None
    result = search.run(state, checkpoint=lambda obj: write_json(out / CHECKPOINT_FILE, obj, compact=True),
                        progress=progress)
    rows = front_rows(result)
    write_csv(out / PARETO_FILE, PARETO_COLUMNS, [[r[c] for c in PARETO_COLUMNS] for r in rows])
    plot_front(out / FRONT_PLOT, rows, result.history, f"{task.name} (seed {task.seed})")
    info.update(status=result.stopped, elapsed_seconds=round(result.elapsed, 3),
                wall_seconds=round(time.time() - started, 3), evaluations=result.evaluations,
                generations_run=result.generations, selected=result.selected.expression,
                selected_loss=result.selected.loss)
    write_json(out / RUN_FILE, info)
    return result, out


def read_front(run_dir: str | Path) -> list[dict]:
    """The rows of a run folder's pareto.csv; ``TaskError`` if it is not a finished run."""
    path = Path(run_dir) / PARETO_FILE
    if not path.is_file():
        raise TaskError(f"{run_dir}: no {PARETO_FILE} (not a finished run folder)")
    rows = read_csv(path)
    if not rows or set(PARETO_COLUMNS) - set(rows[0]):
        raise TaskError(f"{path}: expected columns {', '.join(PARETO_COLUMNS)}")
    return rows


def simulate_activity(task, rule, noise: float = 0.0, observed: float = 1.0, seed: int = 0):
    """Ground-truth data in the activity schema: the task's inputs run under ``rule``.

    noise: measurement noise std in units of the recorded activity's std; observed:
    fraction of output neurons recorded (the same randomly chosen neurons in every
    trial, at least one); the others are NaN.
    """
    if noise < 0:
        raise ValueError(f"--noise {noise}: expected a non-negative number (units of activity std)")
    if not 0 < observed <= 1:
        raise ValueError(f"--observed {observed}: expected a fraction in (0, 1]")
    sim = task.simulate(pack_rules([rule]), record=True)
    if sim.blown[0]:
        raise ValueError(f"rule '{rule.text()}' blows up on task '{task.name}' "
                         f"(|w| > {task.network.weight_bound:g}): no data written")
    rng = np.random.default_rng(seed)
    y = sim.y[0].copy()
    if noise > 0:
        y += rng.normal(0.0, noise * y.std(), size=y.shape)
    n_out = y.shape[2]
    n_rec = max(1, int(round(observed * n_out)))
    hidden = np.sort(rng.permutation(n_out)[n_rec:])
    y[:, :, hidden] = np.nan
    meta = {"rule": rule.text(), "task": task.source, "seed": task.seed, "noise": noise,
            "observed": observed, "recorded_neurons": sorted(set(range(n_out)) - set(hidden.tolist())),
            "eta": task.network.eta, "activation": task.network.activation,
            "overrides": list(task.overrides), "versions": versions()}
    return ActivityData(task.x.copy(), y, task.w0.copy(), meta)
