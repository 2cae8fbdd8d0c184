"""Rules from the recorded output of the mushroom-body choice model (issue 18, done-when 1).

    python benchmarks/choice_activity.py [--out results/choice-activity] [--seeds 1] [--noise 0.1]

Per seed and ground truth (x*(r - rbar) and x*(r - rbar) - 0.05*w): 18 synthetic flies from
tasks/fly-choice-activity.toml, their output P(accept) recorded at every encounter with Gaussian
noise of 0.1 x its standard deviation (with each encounter's input and the initial weights); then
`evolve` (held-out selection) and the task's default Taylor `fit` (the published 18 terms; LM with term
selection since l1 became 0 in the task, CMA-ES with L1 1e-5 before). Reports
the selected rule, the coefficients of x*(r - rbar) and w in both against the truth, held-out scores and times.
Writes activity.csv in --out.
"""
from __future__ import annotations

import argparse
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

TASK = str(Path(__file__).resolve().parent.parent / "tasks" / "fly-choice-activity.toml")
TRUTHS = {"x*(r - rbar)": (1.0, 0.0), "x*(r - rbar) - 0.05*w": (1.0, -0.05)}


def terms(expression: str, grammar) -> dict:
    """Expanded coefficients of the rule: {monomial: value}."""
    return {k: float(v) for k, v in
            sympy.expand(parse_rule(expression, grammar).to_sympy()[0]).as_coefficients_dict().items()}


def check(expression: str, grammar, truth: tuple[float, float], tol: float) -> tuple[float, float, bool]:
    """(coefficient of x*(r - rbar), of w, whether the rule has exactly the true terms within ``tol``)."""
    t = terms(expression, grammar)
    x, r, rbar, w = (symbol(n) for n in ("x", "r", "rbar", "w"))
    c, cw = t.get(x * r, 0.0), t.get(w, 0.0)
    wanted = {x * r: truth[0], x * rbar: -truth[0]} | ({w: truth[1]} if truth[1] else {})
    same = set(t) == set(wanted) and all(abs(t[k] - v) <= tol * abs(v) for k, v in wanted.items())
    return c, cw, same


def run(out: Path, seed: int, rule: str, noise: float) -> dict:
    task = load_task(TASK, seed=seed, require_data=False)
    tag = "forgetting" if "w" in rule else "plain"
    folder = out / f"flies-{tag}-seed{seed}"
    data = simulate_choices(task, task.parse(rule), seed=seed, activity_noise=noise)
    save_choices_mat(folder, data)
    spec = RunSpec(TASK, (), str(folder), seed)
    t0 = time.time()
    evo, evo_dir = evolve_run(spec, out / f"evolve-{tag}-seed{seed}", force=True)
    t_evo = time.time() - t0
    t0 = time.time()
    _, info, _ = fit_run(spec, out / f"taylor-{tag}-seed{seed}", force=True)
    t_fit = time.time() - t0
    g, truth = task.grammar, TRUTHS[rule]
    sel = evo.selected.expression
    ce, cwe, same = check(sel, g, truth, 0.10)
    # the Taylor fit's coefficients of x*(r - rbar) and w, from coefficients.csv
    rows = {r.split(",")[1]: float(r.split(",")[2]) for r in
            (out / f"taylor-{tag}-seed{seed}" / "coefficients.csv").read_text().splitlines()[1:]}
    held = json.loads((evo_dir / "run.json").read_text())["heldout"]
    others = max(abs(v) for k, v in rows.items() if k not in ("x*(r - rbar)", "w"))
    return {"seed": seed, "truth": rule, "encounters": len(data.animal), "evolve_selected": sel,
            "evolve_terms_within_10pct": same, "evolve_xr": round(ce, 4), "evolve_w": round(cwe, 4),
            "evolve_heldout_output_r2": round(held["activity_r2_data"], 4),
            "evolve_heldout_weight_r2": round(held["weight_r2"], 4), "evolve_seconds": round(t_evo, 1),
            "taylor_xr": round(rows["x*(r - rbar)"], 4), "taylor_w": round(rows["w"], 4),
            "taylor_largest_other": round(others, 4), "taylor_rule": info["rule"],
            "taylor_heldout_weight_r2": round(info["heldout"]["weight_r2"], 4), "taylor_seconds": round(t_fit, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="results/choice-activity")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1])
    ap.add_argument("--noise", type=float, default=0.1)
    ap.add_argument("--rules", nargs="+", default=list(TRUTHS))
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for seed in args.seeds:
        for rule in args.rules:
            rows.append(run(out, seed, rule, args.noise))
            print(rows[-1], flush=True)
    write_csv(out / "activity.csv", tuple(rows[0]), [list(r.values()) for r in rows])


if __name__ == "__main__":
    main()
