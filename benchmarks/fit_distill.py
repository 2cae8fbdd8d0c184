"""Parametric fits and distillation on three ground-truth rules (issue 4, done-when 1-3).

    python benchmarks/fit_distill.py [--out results/fit-distill] [--seed 0] [--backend operon]

For each rule: `rulesearch simulate` data (tasks/fit-activity.toml), `rulesearch fit --family
taylor`, `rulesearch fit --family mlp`, `rulesearch distill` on the MLP fit. Writes
fit_distill.csv in --out and prints a table: Taylor coefficients against the truth, held-out
R^2 of both fits, the distilled formula and its task loss relative to the MLP's.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import sympy

from rulesearch.data import save_activity
from rulesearch.results import read_csv, write_csv
from rulesearch.rules import symbol
from rulesearch.runs import RunSpec, distill_run, fit_run
from rulesearch.sims.rate import simulate_activity
from rulesearch.tasks import load_task

TASK = Path(__file__).resolve().parent.parent / "tasks" / "fit-activity.toml"
RULES = ["x*y - y**2*w",  # Oja
         "(x - 0.3)*y - 0.5*y**2*w",  # covariance-like (presynaptic threshold), normalised
         "x*y - 0.5*y**2*w - 0.2*w"]  # with a weight-decay term


def taylor_errors(coefficients: list[dict], truth):
    """(largest relative error of the true terms, largest other term / largest term); truth: a Rule."""
    true = sympy.Poly(sympy.expand(truth.to_sympy()[0]), *(symbol(n) for n in "xyw")).as_dict()
    found = {}
    for r in coefficients:
        exps = tuple(int(p[1:]) for p in r["term"].split("_")[1:])
        found[exps] = float(r["value"])
    largest = max(abs(v) for v in found.values())
    true_err = max(abs(found[e] - float(v)) / abs(float(v)) for e, v in true.items())
    others = max(abs(v) for e, v in found.items() if e not in true) / largest
    return true_err, others


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="results/fit-distill")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--backend", default="operon")
    args = ap.parse_args()
    out = Path(args.out)
    rows = []
    for k, rule_text in enumerate(RULES):
        case = out / f"rule{k}"
        task = load_task(TASK, seed=args.seed, require_data=False)
        data = case / "data.npz"
        save_activity(data, simulate_activity(task, task.parse(rule_text), seed=args.seed))
        t0 = time.time()
        _, taylor, tdir = fit_run(RunSpec(str(TASK), (), str(data), args.seed), case / "taylor")
        t_taylor = time.time() - t0
        err, others = taylor_errors(read_csv(tdir / "coefficients.csv"), task.parse(rule_text))
        t0 = time.time()
        _, mlp, mdir = fit_run(RunSpec(str(TASK), ('fit.family="mlp"',), str(data), args.seed), case / "mlp")
        t_mlp = time.time() - t0
        t0 = time.time()
        result, dist, _ = distill_run(mdir, args.backend)
        t_distill = time.time() - t0
        row = {"rule": rule_text, "taylor_true_term_error": err, "taylor_other_terms": others,
               "taylor_weight_r2": taylor["heldout"]["weight_r2"], "taylor_seconds": round(t_taylor, 1),
               "mlp_activity_r2": mlp["heldout"]["activity_r2"], "mlp_weight_r2": mlp["heldout"]["weight_r2"],
               "mlp_seconds": round(t_mlp, 1), "distilled": dist["selected"],
               "distilled_loss_ratio": dist["loss_ratio"], "distill_seconds": round(t_distill, 1)}
        rows.append(row)
        print(row, flush=True)
        write_csv(out / "fit_distill.csv", list(rows[0]), [list(r.values()) for r in rows])
    print(f"\n| rule | Taylor: true terms err | other terms / largest | weight R^2 | s | MLP activity R^2 "
          f"| weight R^2 | s | distilled ({args.backend}) | loss / MLP's | s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| `{r['rule']}` | {100 * r['taylor_true_term_error']:.2g} % | {100 * r['taylor_other_terms']:.2g} % "
              f"| {r['taylor_weight_r2']:.4f} | {r['taylor_seconds']} | {r['mlp_activity_r2']:.4f} "
              f"| {r['mlp_weight_r2']:.4f} | {r['mlp_seconds']} | `{r['distilled']}` "
              f"| {r['distilled_loss_ratio']:.3g} | {r['distill_seconds']} |")


if __name__ == "__main__":
    main()
