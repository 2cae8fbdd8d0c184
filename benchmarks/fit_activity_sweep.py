"""Recover rules from simulated activity: ground-truth rules x noise x fraction of neurons recorded.

    python benchmarks/fit_activity_sweep.py [--out results/fit-activity-sweep] [--seeds 1]

For each case: `rulesearch simulate` data from the true rule, `rulesearch evolve` on it, then the
selected rule's coefficients against the truth. Writes sweep.csv in --out and prints a table.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import sympy

from rulesearch.data import save_activity
from rulesearch.results import write_csv
from rulesearch.rules import symbol
from rulesearch.runs import RunSpec, evolve_run
from rulesearch.sims.rate import simulate_activity
from rulesearch.tasks import load_task

TASK = Path(__file__).resolve().parent.parent / "tasks" / "fit-activity.toml"
CASES = [  # (rule, noise in units of activity std, fraction of neurons recorded)
    ("x*y - 0.5*y**2*w", 0.0, 1.0),
    ("x*y - 0.5*y**2*w", 0.3, 1.0),
    ("x*y - 0.5*y**2*w", 1.0, 1.0),
    ("x*y - 0.5*y**2*w", 0.1, 0.34),
    ("x*y - 0.5*y**2*w - 0.2*w", 0.0, 1.0),
    ("x*y - 0.5*y**2*w - 0.2*w", 0.01, 0.67),
    ("x*y - 0.5*y**2*w - 0.2*w", 0.1, 0.67),
    ("(x - 0.3)*y - 0.5*y**2*w", 0.0, 1.0),
    ("(x - 0.3)*y - 0.5*y**2*w", 0.01, 0.67),
    ("(x - 0.3)*y - 0.5*y**2*w", 0.1, 0.67),
]


def coefficient_error(found, truth, names):
    """Largest relative coefficient error, or None if the monomials differ."""
    syms = [symbol(n) for n in names]
    f = sympy.Poly(sympy.expand(found), *syms).as_dict()
    t = sympy.Poly(sympy.expand(truth), *syms).as_dict()
    if set(f) != set(t):
        return None
    return max(abs(float(f[m]) - float(c)) / abs(float(c)) for m, c in t.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="results/fit-activity-sweep")
    parser.add_argument("--seeds", type=int, default=1)
    args = parser.parse_args()
    out = Path(args.out)
    rows = []
    for seed in range(1, args.seeds + 1):
        for i, (text, noise, observed) in enumerate(CASES):
            base = load_task(TASK, seed=seed, require_data=False)
            truth = base.parse(text)
            data_path = out / f"case{i}-seed{seed}.npz"
            save_activity(data_path, simulate_activity(base, truth, noise, observed, seed))
            t0 = time.perf_counter()
            result, _ = evolve_run(RunSpec(str(TASK), data=str(data_path), seed=seed),
                                   out / f"case{i}-seed{seed}", argv=["sweep"])
            wall = time.perf_counter() - t0
            sel = result.selected
            err = coefficient_error(sel.rule.to_sympy()[0], truth.to_sympy()[0], base.grammar.names)
            rows.append([text, noise, observed, seed, sel.expression, f"{sel.loss:.4g}",
                         "" if err is None else f"{100 * err:.2f}", f"{wall:.1f}"])
            print(f"{text:28s} noise {noise:4.2f} observed {observed:4.2f} seed {seed}: "
                  f"{sel.expression:34s} max coef error "
                  f"{'structure differs' if err is None else f'{100 * err:.2f} %'} ({wall:.0f} s)", flush=True)
    write_csv(out / "sweep.csv", ["rule", "noise", "observed", "seed", "selected", "loss",
                                  "max_coefficient_error_percent", "wall_seconds"], rows)


if __name__ == "__main__":
    main()
