"""Evolve a task into a run folder, and resume one: what ``rulesearch evolve`` does, as an API."""
from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .distill import check_backend, distill
from .errors import TaskError
from .evaluators import make_evaluator
from .families import family_from_spec
from .fit import FamilyFit, FitResult, heldout_scores, make_family, split_trials
from .fit import state_from_json as fit_state_from_json
from .fronts import indistinguishable
from .gp import EvolveResult, Search
from .gradfit import gradient_fitter, lm_state_from_json
from .grammar import load_grammar
from .plots import plot_fit, plot_front
from .results import (
    CHECKPOINT_FILE,
    COEFFICIENTS_FILE,
    FIT_PLOT,
    FRONT_PLOT,
    COEFFICIENTS_FULL_FILE,
    PARAMS_FILE,
    PARETO_COLUMNS,
    PARETO_FILE,
    RUN_FILE,
    read_csv,
    read_json,
    versions,
    write_csv,
    write_json,
    check_output,
    held_run,
    run_kind,
)
from .tasks import load_task, pack_rules

log = logging.getLogger("rulesearch")


@dataclass(frozen=True)
class RunSpec:
    """Everything needed to start, or restart, a search or a fit exactly."""

    task: str
    overrides: tuple[str, ...] = ()
    data: str | None = None
    seed: int | None = None
    population: int | None = None
    generations: int | None = None
    workers: int | None = None
    evaluator: str = "local"  # or "dask"
    scheduler: str | None = None  # a Dask scheduler's address (dask; default: a LocalCluster)


def _start(spec: RunSpec, out, resume: bool, kind: str, force: bool = False) -> tuple[RunSpec, Path | None]:
    """The spec to run (a resumed run's recorded one) and the folder, refusing to overwrite a run
    or anything else already there (unless ``force``)."""
    if not resume:
        if out is not None and (Path(out) / CHECKPOINT_FILE).exists():
            raise TaskError(f"{out}: already holds {held_run(out)}; pass --resume {out} to continue it, "
                            "or another --out")
        if out is not None:
            check_output(out, force)
        # absolute paths, so that resume, distill and compare work from any directory
        spec = replace(spec, task=str(Path(spec.task).resolve()),
                       data=None if spec.data is None else str(Path(spec.data).resolve()))
        return spec, None if out is None else Path(out)
    out = Path(out)
    if not (out / CHECKPOINT_FILE).is_file() or not (out / RUN_FILE).is_file():
        raise TaskError(f"{out}: no {CHECKPOINT_FILE} and {RUN_FILE} to resume from")
    info = read_json(out / RUN_FILE)
    if info.get("kind", "evolve") != kind:
        raise TaskError(f"{out}: holds a '{info.get('kind', 'evolve')}' run, not a '{kind}' run")
    missing = [k for k in ("task", "overrides", "data", "seed", "generations") if k not in info]
    if missing:
        raise TaskError(f"{out / RUN_FILE}: not a run record (missing {', '.join(missing)})")
    # the evaluator is the caller's: a run may continue on another cluster, or locally
    workers = spec.workers or (info["workers"] if info.get("evaluator", "local") == spec.evaluator else None)
    return RunSpec(info["task"], tuple(info["overrides"]), info["data"], info["seed"],
                   info.get("population"), spec.generations or info["generations"],
                   workers, spec.evaluator, spec.scheduler), out


def _checkpoint(out: Path, parse: Callable[[dict], object]):
    """A run folder's checkpoint, parsed; one ``TaskError`` naming the file when it is damaged."""
    path = out / CHECKPOINT_FILE
    try:
        return parse(read_json(path))
    except TaskError as exc:
        raise TaskError(str(exc) if str(path) in str(exc) else f"{path}: {exc}") from None
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise TaskError(f"{path}: damaged checkpoint ({type(exc).__name__}: {exc}); nothing was written") from None


def _record_and_run(runner, state, out: Path, info: dict, progress):
    """Write run.json, then run the search or fit with a checkpoint after every step it reports."""
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / RUN_FILE, info)
    return runner.run(state, checkpoint=lambda obj: write_json(out / CHECKPOINT_FILE, obj, compact=True),
                      progress=progress)


def _times(result, state, started: float) -> dict:
    """Status, counts and times of a finished search or fit for run.json: elapsed_seconds is this
    invocation's search (never above wall_seconds), search_seconds_total every invocation's."""
    before = state.elapsed if state is not None else 0.0
    return {"status": result.stopped, "elapsed_seconds": round(result.elapsed - before, 3),
            "search_seconds_total": round(result.elapsed, 3), "wall_seconds": round(time.time() - started, 3),
            "evaluations": result.evaluations, "generations_run": result.generations}


def _run_info(spec: RunSpec, task, kind: str, started: float, argv, **extra) -> dict:
    return {"kind": kind, "command": list(argv) if argv is not None else sys.argv,
            "task": str(spec.task), "task_name": task.name, "overrides": list(spec.overrides),
            "data": spec.data, "seed": task.seed, **extra,
            **task.sim.data_facts(task), "grammar": task.space.grammar(0).source,
            **({"pathways": {p.name: {"grammar": p.grammar.source, "symbol": p.symbol, "eta": eta}
                             for p, eta in zip(task.space.pathways, task.etas)}} if task.space.multi else {}),
            "objective": task.objective,
            "started": datetime.fromtimestamp(started, timezone.utc).isoformat(timespec="seconds"),
            "versions": versions(), "status": "running"}


# evolve's checkpoint holds every loss it has computed (about 1 MB after an Oja search): rewritten
# after every generation it cost 0.6 s of a 9 s search; a kill loses at most this much work
CHECKPOINT_SECONDS = 2.0
TERM_THRESHOLD = 0.05  # Taylor terms below this fraction of the largest are left out of the readable rule


def default_out(task_name: str) -> Path:
    return Path("results") / f"{task_name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def front_rows(result) -> list[dict]:
    """Rows of pareto.csv from anything with a ``front`` of ``FrontEntry`` (evolve, distill); rules
    of several pathways also get an expression and a LaTeX column per pathway."""
    rows = []
    for e in result.front:
        row = {"complexity": e.complexity, "loss": e.loss, "expression": e.expression,
               "latex": e.rule.latex(lhs=False), "selected": int(e.selected)}
        if e.rule.space.multi:
            for name, text, tex in zip(e.rule.space.names, e.rule.parts(), e.rule.latex_parts()):
                row[f"expression_{name}"] = text
                row[f"latex_{name}"] = tex
        rows.append(row)
    return rows


def front_columns(rows: Sequence[dict]) -> tuple[str, ...]:
    """pareto.csv's columns: the standard ones, then any per-pathway ones."""
    extra = [c for c in (rows[0] if rows else {}) if c not in PARETO_COLUMNS]
    return PARETO_COLUMNS + tuple(extra)


def evolve_run(spec: RunSpec, out: str | Path | None = None, resume: bool = False,
               progress: Callable[[int, int, float, int], None] | None = None,
               argv: Sequence[str] | None = None,
               on_chunk: Callable[[int, int], None] | None = None, force: bool = False,
               stage: Callable[[str], None] | None = None) -> tuple[EvolveResult, Path]:
    """Run a search and write ``out``: run.json, pareto.csv, checkpoint.json, front.png.
    ``stage(text)`` is told each long step outside the generations (the Taylor seed, the judging).

    With ``resume``, ``out`` must hold a checkpoint; the search continues from it
    with the run's recorded task, overrides, data and seed (and the evaluator of ``spec``).
    """
    started = time.time()
    spec, out = _start(spec, out, resume, "evolve", force)
    task = load_task(spec.task, spec.overrides, spec.data, spec.seed)
    out = out or default_out(task.name)
    # on recorded data the search, like a fit, never sees the held-out trials (the simulator's
    # split: the last fit.holdout of recorded trials, every k-th trial of each animal); without
    # data, a simulator may hold out conditions of its own (e.g. other input drives)
    train, test = split_trials(task, task.fit.holdout) if task.data_source else (task, None)
    test = test if test is not None else task.sim.heldout(task)
    split = task.sim.split_info(train, test) if task.data_source else {}
    stage = stage or (lambda text: None)
    seeds, seeded = fit_seeds(train, stage) if task.data_source else ([], None)
    evaluator = make_evaluator(train, spec.evaluator, spec.workers, spec.scheduler, on_chunk)
    try:
        search = Search(train, evaluator, task.seed, spec.population, spec.generations,
                        test if task.data_source else None, seeds, checkpoint_seconds=CHECKPOINT_SECONDS,
                        on_stage=stage)
        # everything a resume reads is validated before anything is written
        state = _checkpoint(out, search.state_from_json) if resume else None
        info = _run_info(spec, task, "evolve", started, argv, population=search.mu,
                         generations=search.generations, **evaluator.describe(), **split)
        result = _record_and_run(search, state, out, info, progress)
    finally:
        evaluator.close()
    _warn_if_blown(result, task)
    judged = test if test is not None else train
    judge = judged.sim.judged_by(judged)
    by = f", judged by the {judge}" if judge else ""
    if seeded is not None:
        stage(f"checking the Taylor rule against the front{by}")
    fit_check = check_fit_seed(seeded, seeds, result, train, test) if seeded is not None else None
    rows = front_rows(result)
    if task.data_source and test is not None:
        stage(f"comparing the front on the held-out trials{by}")
    report = heldout_indistinguishable(result, test) if task.data_source else None
    if report is not None:  # pareto.csv gets the held-out comparison with the selected rule
        for row, loss, diff, se, verdict in zip(rows, report["heldout_loss"], report["difference"], report["se"],
                                                report["verdict"]):
            row.update(heldout_loss="" if loss is None else loss, heldout_difference="" if diff is None else diff,
                       heldout_se="" if se is None else se, heldout_verdict=verdict)
    columns = front_columns(rows)
    write_csv(out / PARETO_FILE, columns, [[r[c] for c in columns] for r in rows])
    plot_front(out / FRONT_PLOT, rows, result.history, f"{task.name} (seed {task.seed})")
    heldout = None if test is None else heldout_scores(test, pack_rules([result.selected.rule]),
                                                      (task.data_meta or {}).get("rule"))
    info.update(**_times(result, state, started), blown_evaluations=result.blown,
                selection=result.selection or {"method": "tolerance", "rel_tol": task.search.selection_rel_tol,
                                               "abs_tol": task.search.selection_abs_tol},
                selected=result.selected.expression,
                selected_loss=result.selected.loss, heldout=heldout)
    if report is not None:
        info["indistinguishable"] = report
    if fit_check is not None:
        info["fit_seed"] = fit_check
    write_json(out / RUN_FILE, info)
    return result, out


def fit_seeds(train, stage: Callable[[str], None] | None = None) -> tuple[list, dict | None]:
    """Rules to start ``evolve`` with: the terms an exact Taylor fit of the fitting trials selects
    (``fit --family taylor`` with Levenberg-Marquardt, the selected terms refitted), as a rule of the
    task's grammar, so that a search cannot miss a rule the fit finds. None where the task has no
    gradient Taylor fit (the fit would be a CMA-ES run as long as the search) or the rule is beyond
    the grammar. Returns (rules, a record for run.json or None)."""
    from .errors import GrammarError
    if not train.search.seed_with_fit or train.fit.family != "taylor":
        return [], None
    try:
        family = make_family(train)
        fitter = gradient_fitter(train, family)
    except TaskError:
        return [], None
    if fitter is None:
        return [], None
    if stage is not None:
        stage("fitting a Taylor rule to seed the search")
    started = time.time()
    fitted = fitter.run()
    text = family.text(fitted.params, 0.0)
    record = {"rule": text, "fit_loss": float(fitted.loss), "seconds": round(time.time() - started, 3)}
    try:
        rule = train.parse(text, limits=True)
    except (GrammarError, ValueError) as exc:
        return [], {**record, "used": False, "reason": str(exc)}
    return [rule], {**record, "used": True}


def check_fit_seed(seeded: dict, seeds: list, result, train, test=None) -> dict:
    """After the search: does the fit's rule beat the selected one? It beats a front rule when that
    rule's loss exceeds the fit rule's by more than ``search.selection_se`` standard errors, paired
    over the objective's units (animals, recorded trials), as noise-aware selection judges; on the
    held-out trials when there are any (``test``), since on the fitted trials the fit's coefficients,
    tuned to their noise, beat the true rule itself (fit_activity_sweep: noise 0.3 and 1.0 of the
    activity's std overruled the exact `x*y - 0.5*w*y**2`). A fixed tolerance can be looser than the data's noise (``selection_abs_tol`` 1e-6 let
    ``0.64*x`` stand for Oja's rule on activity of variance 5e-4, weight R^2 -1346): then the selected
    rule is replaced, in ``result``, by the simplest front rule the fit's rule does not beat (the seeded
    rule, or its polished form, is on the front unless a simpler rule is as good). Returns the record
    for run.json."""
    if not seeds:
        return seeded
    front = result.front
    judge = test if test is not None else train
    units = judge.unit_losses([seeds[0]] + [e.rule for e in front])
    n, fit_units = units.shape[1], units[0]
    se_multiple = train.search.selection_se

    def beaten(i: int) -> bool:
        u = units[i + 1]
        if not np.all(np.isfinite(u)):
            return True
        d = u - fit_units
        margin = max(1e-6 * abs(float(u.sum())), train.search.target_loss, 1e-15)  # rounding is no improvement
        se = np.sqrt(n) * d.std(ddof=1) if n > 1 else 0.0
        return bool(float(d.sum()) > max(se_multiple * se, margin))

    old = next(i for i, e in enumerate(front) if e.selected)
    d_old = units[old + 1] - fit_units  # selected_minus_fit: the search's selection, before any reselection
    margin = {"selected_minus_fit": float(d_old.sum()),
              "se": float(np.sqrt(n) * d_old.std(ddof=1)) if n > 1 else None} if np.all(np.isfinite(d_old)) else {}
    record = {**seeded, **margin, "loss": float(fit_units.sum()) if np.all(np.isfinite(fit_units)) else None,
              "complexity": seeds[0].complexity, "beats_selected": beaten(old),
              "test": f"{'held-out' if test is not None else 'fitted'}-trial loss lower by more than "
                      f"{se_multiple:g} SE, paired over {n} {train.sim.objectives[train.objective].unit_name or 'units'}"
                      + (f", by the {likelihood}" if (likelihood := judge.sim.judged_by(judge)) else "")}
    if record["beats_selected"]:
        keep = [i for i in range(len(front)) if not beaten(i)]
        if keep:
            new = min(keep, key=lambda i: (front[i].complexity, front[i].loss))
            result.front = [replace(e, selected=i == new) for i, e in enumerate(front)]
            record["reselected"] = {"previous": front[old].expression, "selected": front[new].expression}
            log.warning("the Taylor fit's rule %s beats the selected rule %s beyond the noise; selected instead: %s",
                        seeded["rule"], front[old].expression, front[new].expression)
        else:
            log.warning("the Taylor fit's rule %s beats every rule on the front beyond the noise; the search kept "
                        "no rule as good, so the selection stands (see 'fit check' below)", seeded["rule"])
    return record


def heldout_indistinguishable(result, test) -> dict | None:
    """The held-out comparison of every front rule with the selected one (``fronts.indistinguishable``),
    or None without a held-out view or per-unit losses (objectives without units)."""
    if test is None or test.sim.objectives[test.objective].units is None:
        return None
    units = test.unit_losses([e.rule for e in result.front])
    selected = next(i for i, e in enumerate(result.front) if e.selected)
    report = indistinguishable(units, selected, [e.expression for e in result.front],
                               test.sim.objectives[test.objective].unit_name)
    if likelihood := test.sim.judged_by(test):
        report["likelihood"] = likelihood
    return report


BLOWN_WARNING = 0.9  # a search in which more of the evaluations than this blew up is reported


def _warn_if_blown(result, task) -> None:
    if result.evaluations and result.blown / result.evaluations > BLOWN_WARNING:
        log.warning("%d of %d rules evaluated (%.0f %%) blew up (|w| > %g or not finite): check network.eta (%s) "
                    "and weight_bound", result.blown, result.evaluations, 100 * result.blown / result.evaluations,
                    task.config.weight_bound, ", ".join(f"{e:g}" for e in task.etas))


def read_front(run_dir: str | Path) -> list[dict]:
    """The rows of a run folder's pareto.csv; ``TaskError`` if it is not a finished run."""
    path = Path(run_dir) / PARETO_FILE
    if not Path(run_dir).is_dir():
        raise TaskError(f"{run_dir}: no such folder")
    if not path.is_file():
        kind = run_kind(run_dir)
        if kind == "families":
            raise TaskError(f"{run_dir}: a families run, which has no front of rules (rulesearch show {run_dir} "
                            "summarises it; family.csv lists its rules)")
        raise TaskError(f"{run_dir}: no {PARETO_FILE} (not a finished run folder"
                        + (f"; it holds an unfinished '{kind}' run)" if kind else ")"))
    rows = read_csv(path)
    if not rows or set(PARETO_COLUMNS) - set(rows[0]):
        raise TaskError(f"{path}: expected columns {', '.join(PARETO_COLUMNS)}")
    if any(r.get(c) in (None, "") for r in rows for c in PARETO_COLUMNS):
        raise TaskError(f"{path}: a row has an empty field (a truncated file?)")
    if sum(str(r["selected"]) == "1" for r in rows) != 1:
        raise TaskError(f"{path}: expected exactly one selected row (selected = 1)")
    return rows


def fit_run(spec: RunSpec, out: str | Path | None = None, resume: bool = False,
            progress: Callable[[int, int, float, int], None] | None = None,
            argv: Sequence[str] | None = None,
            on_chunk: Callable[[int, int], None] | None = None, force: bool = False) -> tuple[FitResult, dict, Path]:
    """Fit the task's parametric family (``[fit]``, e.g. ``--set fit.family=mlp``) by CMA-ES.

    Writes ``out``: run.json (with held-out scores), params.json, coefficients.csv
    (Taylor), checkpoint.json and fit.png. Returns (result, run info, folder).
    """
    started = time.time()
    spec, out = _start(spec, out, resume, "fit", force)
    task = load_task(spec.task, spec.overrides, spec.data, spec.seed)
    out = out or default_out(f"{task.name}-fit")
    family = make_family(task)
    train, test = split_trials(task, task.fit.holdout)
    evaluator = make_evaluator(train, spec.evaluator, spec.workers, spec.scheduler, on_chunk)
    try:
        # --generations caps an LM fit's iterations (per refit; default 100)
        lm = gradient_fitter(train, family, spec.generations or 100)
        fitter = lm or FamilyFit(train, family, evaluator, task.seed, spec.generations)
        s = task.fit
        split = task.sim.split_info(train, test)
        # an LM fit takes seconds and is deterministic: a resumed one (its checkpoint validated) runs again
        state = _checkpoint(out, fit_state_from_json if lm is None else lm_state_from_json) if resume else None
        state = None if lm is not None else state
        settings = {"optimizer": "lm", "select_alpha": s.select_alpha} if lm else \
            {"optimizer": "cmaes", "popsize": s.popsize, "sigma0": s.sigma0, "l1": s.l1}
        info = _run_info(spec, task, "fit", started, argv, family=family.spec(), generations=fitter.generations,
                         **settings, **evaluator.describe(), **split)
        result = _record_and_run(fitter, state, out, info, progress)
    finally:
        evaluator.close()
    params = result.params
    packed = family.pack(params[None])
    report = lm.report if lm is not None else {}
    # printed as fitted: products of the family's variables (x*(r - rbar)), not the canonical expansion;
    # LM fits report the selected terms exactly (the others are exactly 0), CMA-ES fits leave out
    # terms below TERM_THRESHOLD of the largest
    rule_text = family.describe(params) if family.kind == "doublet" else \
        family.text(params, 0.0 if lm else TERM_THRESHOLD) if family.kind == "taylor" else None
    write_json(out / PARAMS_FILE, {**family.spec(), "params": params.tolist(), "rule": rule_text,
                                   **({"params_full": report["params_full"], "selected": report["selected"]}
                                      if "params_full" in report else {})})
    rows = []
    if family.kind in ("taylor", "doublet"):
        rows = family.coefficient_rows(params)
        if lm:
            _write_coefficients(out, family, params, report)
        else:
            write_csv(out / COEFFICIENTS_FILE, ("term", "monomial", "value"),
                      [[r["term"], r["monomial"], repr(r["value"])] for r in rows])
    heldout = None
    if test is not None:
        heldout = heldout_scores(test, packed, (task.data_meta or {}).get("rule"))
        if "params_full" in report:
            report["heldout_full"] = heldout_scores(test, family.pack(np.array(report["params_full"])[None]),
                                                    (task.data_meta or {}).get("rule"))
    example = None if test is None else task.sim.example_trace(test, packed)
    plot_fit(out / FIT_PLOT, result.history, rows, example, f"{task.name}: {family.kind} fit (seed {task.seed})")
    info.update(**_times(result, state, started), loss=result.loss, objective=result.objective,
                rule=rule_text, heldout=heldout,
                **{k: report[k] for k in LM_REPORT if k in report})
    write_json(out / RUN_FILE, info)
    return result, info, out


# what run.json keeps of an LM fit's report
LM_REPORT = ("starts", "start_losses", "likelihood", "loss_full", "heldout_full", "term_selection", "intervals",
             "identifiability")


def _write_coefficients(out: Path, family, params: np.ndarray, report: dict) -> None:
    """coefficients.csv of an LM fit (the selected terms refitted, every other term exactly 0, 95 %
    intervals of the selected ones) and coefficients_full.csv (every term fitted, no selection)."""
    se, selected = np.array(report["std_error"]), report["selected"]
    rows = family.coefficient_rows(params)
    z = report["intervals"]["z"]
    table = []
    for r, k, e in zip(rows, selected, se):
        interval = (repr(float(e)), repr(float(r["value"] - z * e)), repr(float(r["value"] + z * e))) if k else ("",) * 3
        table.append([r["term"], r["monomial"], repr(r["value"]), int(k), *interval])
    write_csv(out / COEFFICIENTS_FILE, ("term", "monomial", "value", "selected", "std_error", "ci95_low", "ci95_high"),
              table)
    full = family.coefficient_rows(np.array(report["params_full"]))
    write_csv(out / COEFFICIENTS_FULL_FILE, ("term", "monomial", "value", "std_error"),
              [[r["term"], r["monomial"], repr(r["value"]), repr(float(e))]
               for r, e in zip(full, report["std_error_full"])])


def largest_terms(rows: Sequence[dict], n: int = 8) -> list[dict]:
    return sorted(rows, key=lambda r: -abs(float(r["value"])))[:n]


def read_fit(run_dir: str | Path):
    """(run info, family, fitted parameters) of a finished fit folder; ``TaskError`` otherwise."""
    run_dir = Path(run_dir)
    if not (run_dir / PARAMS_FILE).is_file() or not (run_dir / RUN_FILE).is_file():
        raise TaskError(f"{run_dir}: no {PARAMS_FILE} and {RUN_FILE} (not a finished fit folder)")
    info, stored = read_json(run_dir / RUN_FILE), read_json(run_dir / PARAMS_FILE)
    try:
        if "pathways" in stored or stored.get("family") == "doublet":  # the task's rule space
            space = load_task(info["task"], info["overrides"], info["data"], info["seed"]).space
        else:
            space = load_grammar(info["grammar"])
        family = family_from_spec(stored, space)
        params = np.array([float(v) for v in stored["params"]])
    except (KeyError, TypeError, ValueError) as exc:
        raise TaskError(f"{run_dir / PARAMS_FILE}: not a valid fit ({exc})") from None
    if params.shape != (family.n_params,):
        raise TaskError(f"{run_dir / PARAMS_FILE}: {len(params)} params, expected {family.n_params}")
    return info, family, params


def distill_run(fit_dir: str | Path, backend: str = "operon", max_size: int = 25, out: str | Path | None = None,
                n_samples: int = 2000, seed: int | None = None, argv: Sequence[str] | None = None,
                force: bool = False, refit: bool = True):
    """Distill a fit folder's rule into formulas; writes ``out`` (default FIT_DIR/distill-BACKEND):
    run.json, pareto.csv (task loss and regression MSE per formula) and front.png."""
    started = time.time()
    check_backend(backend)
    fit_dir = Path(fit_dir)
    info, family, params = read_fit(fit_dir)
    out = check_output(Path(out) if out is not None else fit_dir / f"distill-{backend}", force)
    task = load_task(info["task"], info["overrides"], info["data"], info["seed"])
    train, _ = split_trials(task, task.fit.holdout)
    seed = task.seed if seed is None else seed
    result = distill(train, family, params, backend, max_size, n_samples, seed, refit)
    rows = [{**row, "regression_mse": result.regression_mse[row["expression"]]}
            for row in front_rows(result)]
    columns = front_columns(rows)
    write_csv(out / PARETO_FILE, columns, [[r[c] for c in columns] for r in rows])
    plot_front(out / FRONT_PLOT, rows, None, f"{task.name}: {family.kind} rule distilled by {backend}",
               reference=(f"{family.kind} rule (task loss)", result.blackbox_loss))
    sel = result.selected
    run = _run_info(RunSpec(info["task"], tuple(info["overrides"]), info["data"], info["seed"]), task,
                    "distill", started, argv, source=str(fit_dir), backend=backend, max_size=max_size,
                    n_samples=n_samples, distill_seed=seed, refit_constants=refit)
    run.update(status="done", wall_seconds=round(time.time() - started, 3), blackbox_loss=result.blackbox_loss,
               selected=sel.expression, selected_loss=sel.loss,
               selected_regression_mse=result.regression_mse[sel.expression],
               loss_ratio=sel.loss / result.blackbox_loss if result.blackbox_loss > 0 else None)
    write_json(out / RUN_FILE, run)
    return result, run, out
