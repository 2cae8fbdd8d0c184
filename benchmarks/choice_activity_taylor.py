"""The choice model's activity objective: the default Taylor fit over data seeds (issue 18, done-when 1).

    python benchmarks/choice_activity_taylor.py [--out results/choice-activity-taylor] [--seeds 1 2 ... 8]

Per seed and true rule (x*(r - rbar) - 0.05*w and x*(r - rbar)): 18 flies from
tasks/fly-choice-activity.toml, their output P(accept) recorded at every encounter with noise of
0.1 x its std; the task's default Taylor fit (Levenberg-Marquardt, the published 18 terms, terms
selected by likelihood-ratio tests, Wald intervals). Reports whether exactly the true terms were
selected, each true coefficient's error (%) and whether its 95 % interval covers the truth.
Writes activity-taylor.csv in --out.
"""
from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

from rulesearch.choices import save_choices_mat
from rulesearch.results import write_csv
from rulesearch.runs import RunSpec, fit_run
from rulesearch.sims.choice import simulate_choices
from rulesearch.tasks import load_task

TASK = str(Path(__file__).resolve().parent.parent / "tasks" / "fly-choice-activity.toml")
TRUTHS = {"x*(r - rbar) - 0.05*w": {"x*(r - rbar)": 1.0, "w": -0.05}, "x*(r - rbar)": {"x*(r - rbar)": 1.0}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="results/choice-activity-taylor")
    ap.add_argument("--seeds", type=int, nargs="+", default=list(range(1, 9)))
    ap.add_argument("--noise", type=float, default=0.1)
    args = ap.parse_args()
    out = Path(args.out)
    rows = []
    for rule, truth in TRUTHS.items():
        for seed in args.seeds:
            task = load_task(TASK, seed=seed, require_data=False)
            case = out / f"{'forgetting' if 'w' in rule else 'plain'}-seed{seed}"
            save_choices_mat(case / "flies", simulate_choices(task, task.parse(rule), seed=seed,
                                                              activity_noise=args.noise))
            _, info, _ = fit_run(RunSpec(TASK, (), str(case / "flies"), seed), case / "fit", force=True)
            selected = {r["monomial"]: (float(r["value"]), float(r["ci95_low"]), float(r["ci95_high"]))
                        for r in csv.DictReader(open(case / "fit" / "coefficients.csv")) if r["selected"] == "1"}
            row = {"rule": rule, "seed": seed, "exact_terms": set(selected) == set(truth), "fitted": info["rule"]}
            for m, t in truth.items():
                v = selected.get(m)
                row[f"{m} error %"] = round(100 * (v[0] - t) / abs(t), 3) if v else None
                row[f"{m} covered"] = bool(v and v[1] <= t <= v[2])
            row["fit_seconds"] = round(info.get("search_seconds_total") or 0.0, 2)
            rows.append(row)
            print(json.dumps(row), flush=True)
    keys = list(dict.fromkeys(k for r in rows for k in r))
    write_csv(out / "activity-taylor.csv", keys, [[r.get(k) for k in keys] for r in rows])


if __name__ == "__main__":
    main()
