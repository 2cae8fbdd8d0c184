"""Oja's rule and an anti-Hebbian rule discovered together (issue 10, done-when 1).

    python benchmarks/pca_network_seeds.py [--out results/pca-network-seeds] [--seeds 1 2 ...] [--set K=V ...]

Runs `rulesearch evolve tasks/pca-network.toml --seed S` per seed and reports the selected pair,
whether the feed-forward rule is Oja's up to a positive factor (ff / (x*y - y**2*w) is a positive
number), whether the lateral rule is anti-Hebbian (lat / (-x*y) is a positive number), the loss
and the wall time. Writes pca-network.csv in --out.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import sympy

from rulesearch.results import write_csv
from rulesearch.rules import symbol
from rulesearch.runs import RunSpec, evolve_run

TASK = str(Path(__file__).resolve().parent.parent / "tasks" / "pca-network.toml")


def positive_multiple(expr: sympy.Expr, reference: sympy.Expr) -> bool:
    ratio = sympy.simplify(expr / reference)
    return bool(ratio.is_number and ratio.is_real and float(ratio) > 0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="results/pca-network-seeds")
    ap.add_argument("--seeds", type=int, nargs="+", default=list(range(1, 11)))
    ap.add_argument("--set", action="append", default=[], help="task override, as for rulesearch --set")
    args = ap.parse_args()
    out = Path(args.out)
    x, y, w = (symbol(n) for n in "xyw")
    rows = []
    for seed in args.seeds:
        start = time.perf_counter()
        result, _ = evolve_run(RunSpec(TASK, tuple(args.set), seed=seed), out / f"seed{seed}")
        wall = time.perf_counter() - start
        sel = result.selected
        ff, lat = sel.rule.to_sympy()
        oja, anti = positive_multiple(ff, x * y - y**2 * w), positive_multiple(lat, -x * y)
        rows.append([seed, sel.expression, int(oja), int(anti), sel.loss, round(wall, 1)])
        print(f"seed {seed:2d}  {wall:6.1f} s  oja={oja!s:5s} anti-hebbian={anti!s:5s} "
              f"loss {sel.loss:.4g}  {sel.expression}", flush=True)
    write_csv(out / "pca-network.csv", ["seed", "selected", "oja", "anti_hebbian", "loss", "wall_s"], rows)
    found = sum(r[2] and r[3] for r in rows)
    print(f"Oja + anti-Hebbian selected for {found} of {len(rows)} seeds; wall {min(r[5] for r in rows):.0f}-"
          f"{max(r[5] for r in rows):.0f} s")


if __name__ == "__main__":
    main()
