"""Rules from choice data that record each encounter's input and each fly's initial weights (issue 18,
done-when 2).

    python benchmarks/choice_recorded.py [--out results/choice-recorded] [--seeds 1] [--animals 18 3]

Per seed and number of flies: synthetic flies from x*(r - rbar) written with
``protocol.record_inputs = true`` (the published code records each encounter's input; here also
the initial weights), then `evolve` (the task's selection) and the task's default Taylor `fit` (54
terms, Levenberg-Marquardt, terms selected by likelihood-ratio tests) on them. Reports the selected
rule, the coefficient of x*(r - rbar) in both (true 1) with the Taylor fit's 95 % interval, the
held-out cross-entropy and the time of each command. Writes recorded.csv in --out.
"""
from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import sympy

from rulesearch.choices import save_choices_mat
from rulesearch.results import write_csv
from rulesearch.rules import parse_rule, symbol
from rulesearch.runs import RunSpec, evolve_run, fit_run
from rulesearch.sims.choice import simulate_choices
from rulesearch.tasks import load_task

TASK = str(Path(__file__).resolve().parent.parent / "tasks" / "fly-choice.toml")
RECORDED = ("protocol.record_inputs=true",)


def coefficient(expression: str, grammar) -> float:
    """Coefficient of x*r in the expanded rule (that of x*(r - rbar) when the rule has that form)."""
    terms = sympy.expand(parse_rule(expression, grammar).to_sympy()[0]).as_coefficients_dict()
    return float(terms.get(symbol("x") * symbol("r"), 0))


def equivalent_to_xr(expression: str, grammar) -> bool:
    """c * x*(r - rbar) for some c, and nothing else."""
    e = sympy.expand(parse_rule(expression, grammar).to_sympy()[0])
    c = coefficient(expression, grammar)
    return c != 0 and sympy.simplify(e - c * symbol("x") * (symbol("r") - symbol("rbar"))) == 0


def interval(fit_dir: Path) -> str:
    """The 95 % interval of x*(r - rbar) from the fit's coefficients.csv ('' when not selected)."""
    for row in csv.DictReader(open(fit_dir / "coefficients.csv")):
        if row["monomial"] == "x*(r - rbar)" and row["ci95_low"]:
            return f"[{float(row['ci95_low']):.4f}, {float(row['ci95_high']):.4f}]"
    return ""


def run(out: Path, seed: int, animals: int) -> dict:
    task = load_task(TASK, RECORDED + (f"protocol.animals={animals}",), seed=seed, require_data=False)
    folder = out / f"flies-{animals}-seed{seed}"
    data = simulate_choices(task, task.parse("x*(r - rbar)"), seed=seed)
    save_choices_mat(folder, data)
    spec = RunSpec(TASK, (), str(folder), seed)
    t0 = time.time()
    evo, evo_dir = evolve_run(spec, out / f"evolve-{animals}-seed{seed}", force=True)
    t_evo = time.time() - t0
    t0 = time.time()
    fit, info, _ = fit_run(spec, out / f"taylor-{animals}-seed{seed}", force=True)
    t_fit = time.time() - t0
    g = task.grammar
    sel = evo.selected.expression
    return {"seed": seed, "flies": animals, "encounters": len(data.animal), "evolve_selected": sel,
            "evolve_equivalent": equivalent_to_xr(sel, g), "evolve_coefficient": round(coefficient(sel, g), 4),
            "evolve_heldout_loss": round(json.loads((evo_dir / "run.json").read_text())["heldout"]["loss"], 5),
            "evolve_seconds": round(t_evo, 1), "taylor_rule": info["rule"],
            "taylor_coefficient": round(coefficient(info["rule"], g), 4),
            "taylor_ci95": interval(out / f"taylor-{animals}-seed{seed}"),
            "taylor_heldout_loss": round(info["heldout"]["loss"], 5), "taylor_seconds": round(t_fit, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="results/choice-recorded")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1])
    ap.add_argument("--animals", type=int, nargs="+", default=[18, 3])
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for seed in args.seeds:
        for animals in args.animals:
            rows.append(run(out, seed, animals))
            print(rows[-1], flush=True)
    write_csv(out / "recorded.csv", tuple(rows[0]), [list(r.values()) for r in rows])


if __name__ == "__main__":
    main()
