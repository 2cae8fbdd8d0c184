"""Recover reward-modulated rules from synthetic flies' choices (issue 5, done-when 1-2).

    python benchmarks/fly_recovery.py [--out results/fly] [--seeds 1 2 3]

Per seed, 18 synthetic flies (tasks/fly-choice.toml) from each ground truth:
  A. x*(r - rbar): `evolve` (reward grammar) and the default Taylor `fit` (54 terms, Levenberg-Marquardt
     through the weight filter, terms selected by likelihood-ratio tests); reports the selected
     rule, the Taylor x*(r - rbar) coefficient (true 1) with its 95 % interval, the selected terms,
     and weight R^2 against the true rule on the fitted flies and on 18 new flies.
     --taylor-only: only the data and the Taylor fit of A.
  B. x*(r - rbar) - 0.05*w (forgetting) and C. x*(r - rbar): `evolve` with and without the
     weight in the grammar, then `compare` on held-out trials (ΔNLL, ΔAIC of the forgetting model).
Writes fly.csv in --out and prints a table.
"""
from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import sympy

from rulesearch.choices import save_choices_mat
from rulesearch.compare import compare_runs
from rulesearch.results import write_csv
from rulesearch.rules import parse_rule, symbol
from rulesearch.fit import heldout_scores
from rulesearch.runs import RunSpec, evolve_run, fit_run, read_fit
from rulesearch.sims.choice import simulate_choices
from rulesearch.tasks import load_task, with_data

TASK = str(Path(__file__).resolve().parent.parent / "tasks" / "fly-choice.toml")
NO_FORGETTING = ('grammar="reward-no-forgetting"',)


def flies(out: Path, rule: str, seed: int) -> str:
    task = load_task(TASK, seed=seed, require_data=False)
    save_choices_mat(out, simulate_choices(task, task.parse(rule), seed=seed))
    return str(out)


def weight_r2_on_new_flies(fit_dir: Path, rule: str, seed: int) -> float:
    """R^2 between the weight trajectories of the fitted and the true rule on 18 flies that no fit
    has seen (sampled with another seed), both driven by those flies' odours and rewards."""
    task = load_task(TASK, seed=seed + 1000, require_data=False)
    new = with_data(task, simulate_choices(task, task.parse(rule), seed=seed + 1000))
    _, family, params = read_fit(fit_dir)
    return heldout_scores(new, family.pack(params[None]), rule)["weight_r2"]


def timed(f, *args, **kwargs):
    t0 = time.time()
    result = f(*args, **kwargs)
    return result, round(time.time() - t0, 1)


def coefficient(expression: str, grammar, monomial) -> float:
    return float(sympy.expand(parse_rule(expression, grammar).to_sympy()[0]).as_coefficients_dict().get(monomial, 0))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="results/fly")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--no-taylor", action="store_true", help="skip the Taylor fits")
    ap.add_argument("--taylor-only", action="store_true", help="only the Taylor fit of x*(r - rbar) per seed")
    args = ap.parse_args()
    out = Path(args.out)
    w = symbol("w")
    grammar = load_task(TASK, require_data=False).grammar
    rows = []
    for seed in args.seeds:
        case = out / f"seed{seed}"
        data_a = flies(case / "flies-reward", "x*(r - rbar)", seed)
        row = {"seed": seed}
        if not args.taylor_only:
            (ev, _), t_ev = timed(evolve_run, RunSpec(TASK, (), data_a, seed), case / "A-evolve")
            row.update({"A_selected": ev.selected.expression, "A_seconds": t_ev})
        if not args.no_taylor:
            (fit, info, _), t_fit = timed(fit_run, RunSpec(TASK, (), data_a, seed), case / "A-taylor")
            coefs = {r["term"]: r for r in csv.DictReader(open(case / "A-taylor" / "coefficients.csv"))}
            c = coefs["theta_x1_y0_w0_(r-rbar)1"]
            theta = float(c["value"])
            row.update({"A_taylor_x(r-rbar)": round(theta, 4),
                        "A_taylor_ci95": f"[{c['ci95_low']}, {c['ci95_high']}]" if c["ci95_low"] else "",
                        "A_taylor_terms": info["rule"],
                        "A_taylor_weight_r2": round(info["heldout"]["weight_r2"], 4),
                        "A_taylor_weight_r2_new_flies": round(
                            weight_r2_on_new_flies(case / "A-taylor", "x*(r - rbar)", seed), 4),
                        "A_taylor_seconds": t_fit})
        if args.taylor_only:
            rows.append(row)
            print(row, flush=True)
            write_csv(out / "fly-taylor.csv", list(rows[0]), [list(v.values()) for v in rows])
            continue
        for label, rule in (("B", "x*(r - rbar) - 0.05*w"), ("C", "x*(r - rbar)")):
            if label == "C":  # the same data as A: A's run is the full-grammar model
                data, full, full_dir = data_a, ev, case / "A-evolve"
            else:
                data = flies(case / "flies-forgetting", rule, seed)
                full_dir = case / f"{label}-evolve"
                full, _ = evolve_run(RunSpec(TASK, (), data, seed), full_dir)
            evolve_run(RunSpec(TASK, NO_FORGETTING, data, seed), case / f"{label}-no-forgetting")
            c = compare_runs([full_dir, case / f"{label}-no-forgetting"])
            s = c.summary()
            row.update({f"{label}_selected": full.selected.expression,
                        f"{label}_w_coefficient": round(coefficient(full.selected.expression, grammar, w), 4),
                        f"{label}_no_forgetting": s[1]["rule"],
                        f"{label}_dNLL": round(s[1]["nll"] - s[0]["nll"], 2),
                        f"{label}_dAIC": round(s[1]["aic"] - s[0]["aic"], 2)})
        rows.append(row)
        print(row, flush=True)
        write_csv(out / "fly.csv", list(rows[0]), [list(v.values()) for v in rows])


if __name__ == "__main__":
    main()
