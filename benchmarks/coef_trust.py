"""Issue 15's activity cases: exact sparse refits, interval coverage and identifiability of the
default `rulesearch fit --family taylor` (Levenberg-Marquardt with exact gradients), on data from
the independent NumPy generator of benchmarks/activity_cases.py.

    python benchmarks/coef_trust.py [--seeds 10] [--noise 0.1] [--out results/coef_trust.json]

For each case: one noise-free fit (exact terms? every other term 0? interval covers the truth?
time), then one fit per data seed with Gaussian noise of ``noise`` x the activity's std: are the
selected terms the generating ones, and do the 95 % intervals cover the truth.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from activity_cases import CASES, generate, overrides  # noqa: E402

from rulesearch.results import read_csv, write_json  # noqa: E402
from rulesearch.runs import RunSpec, fit_run  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TRUTH = {"hebb_centred": {"theta_x1_y1_w0": 1.0, "theta_x1_y0_w0": -0.5, "theta_x0_y1_w0": -0.5,
                          "theta_x0_y0_w0": 0.25},
         "decay_sigmoid": {"theta_x1_y1_w0": -1.0, "theta_x0_y0_w1": -0.1}}


def fit_case(case: str, noise: float, seed: int, tmp: Path) -> dict:
    path = tmp / f"{case}-{noise}-{seed}.npz"
    np.savez(path, **generate(case, noise, seed))
    start = time.perf_counter()
    _, info, out = fit_run(RunSpec(str(ROOT / "tasks" / "fit-activity.toml"),
                                   tuple(overrides(case)) + ('fit.family="taylor"',), str(path), 0),
                           tmp / f"fit-{case}-{noise}-{seed}", force=True)
    wall = time.perf_counter() - start
    rows = {r["term"]: r for r in read_csv(out / "coefficients.csv")}
    truth = TRUTH[case]
    selected = {t for t, r in rows.items() if r["selected"] == "1"}
    covered = {t: float(rows[t]["ci95_low"]) <= v <= float(rows[t]["ci95_high"]) if t in selected else False
               for t, v in truth.items()}
    errors = {t: abs(float(rows[t]["value"]) - v) / abs(v) for t, v in truth.items()}
    others = max((abs(float(r["value"])) for t, r in rows.items() if t not in truth), default=0.0)
    flat = info["identifiability"]["not_determined"]
    return {"case": case, "noise": noise, "seed": seed, "terms_exact": selected == set(truth),
            "selected": sorted(selected), "largest_relative_error": max(errors.values()),
            "largest_other_term": others, "covered": covered, "fit_seconds": info["elapsed_seconds"],
            "wall_seconds": round(wall, 3), "evaluations": info["evaluations"],
            "heldout_weight_r2": info["heldout"].get("weight_r2"),
            "not_determined": len(flat), "w2_named": sum("w**2" in f["direction"] for f in flat),
            "rule": info["rule"]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--noise", type=float, default=0.1)
    p.add_argument("--cases", nargs="+", default=sorted(CASES))
    p.add_argument("--out", default=None)
    a = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for case in a.cases:
            for noise, seeds in ((0.0, [0]), (a.noise, range(a.seeds))):
                for seed in seeds:
                    r = fit_case(case, noise, seed, Path(tmp))
                    rows.append(r)
                    print(f"{case:14s} noise {noise:4.2f} seed {seed}: terms exact {r['terms_exact']}, "
                          f"largest error {100 * r['largest_relative_error']:.3g} %, other terms <= "
                          f"{r['largest_other_term']:.2g}, covered {sum(r['covered'].values())}/{len(r['covered'])}, "
                          f"fit {r['fit_seconds']:.2f} s ({r['evaluations']} simulations), not determined "
                          f"{r['not_determined']} ({r['w2_named']} with w**2), rule {r['rule']}", flush=True)
    summary = {}
    for case in a.cases:
        noisy = [r for r in rows if r["case"] == case and r["noise"] > 0]
        cov = [c for r in noisy for c in r["covered"].values()]
        summary[case] = {"noisy_terms_exact": f"{sum(r['terms_exact'] for r in noisy)}/{len(noisy)}",
                         "noisy_coverage": f"{sum(cov)}/{len(cov)}",
                         "noisy_coverage_fraction": sum(cov) / max(len(cov), 1)}
        print(f"{case}: noise {a.noise}: generating terms selected in {summary[case]['noisy_terms_exact']} "
              f"data sets; 95 % intervals cover the truth for {summary[case]['noisy_coverage']} coefficients")
    if a.out:
        write_json(a.out, {"rows": rows, "summary": summary})
    return 0


if __name__ == "__main__":
    sys.exit(main())
