"""Noise-driven pruning rediscovered (issue 13, done-when 1 and 2).

    python benchmarks/noise_prune_seeds.py [--out results/noise-prune-seeds] [--seeds 1 2 ...]
        [--big 2000] [--figure docs/noise-prune-spectra.png] [--set K=V ...]

1. Per seed: `rulesearch evolve tasks/noise-prune.toml --seed S` (a finished run in OUT/seedS is
   reused), then the selected rule's scores of every synapse of a network it has not seen (the
   default construction, network seed 1000 + S, given as --data) against the published rule's:
   Spearman correlation, and whether the rule is the published one up to a positive factor.
   Passed: Spearman >= 0.99 or equivalent.
2. On one network of --big neurons (network seed 2000), 80 % pruned, 10 sampling draws: the median
   over draws of the median relative error of the slowest 10 % of eigenvalues, for each distinct
   selected rule, the published rule and the |w| control; the ratios control / rule (want >= 3)
   and rule / published (want <= 1.2). --figure: the spectra figure of the most often selected
   rule on that network (as `rulesearch simulate` draws it).
Writes noise-prune.csv and noise-prune-big.csv in --out.
"""
from __future__ import annotations

import argparse
import collections
import time
from pathlib import Path

import numpy as np
import sympy
from scipy.stats import spearmanr
from threadpoolctl import threadpool_limits

from rulesearch.results import read_csv, write_csv
from rulesearch.runs import RunSpec, evolve_run
from rulesearch.sims.noise_prune import CONTROL_RULE, PUBLISHED_RULE
from rulesearch.sims.noise_prune.network import NetworkSpec, clustered_network
from rulesearch.tasks import load_task, pack_rules

TASK = str(Path(__file__).resolve().parent.parent / "tasks" / "noise-prune.toml")


def write_network(path: Path, n: int, seed: int) -> Path:
    A = clustered_network(NetworkSpec(n, (1000.0, 200.0, 800.0), 0.6, 2.5), np.random.default_rng([seed, 0]))
    np.savez(path, A=A)
    return path


def positive_multiple(expr, reference) -> bool:
    ratio = sympy.simplify(expr / reference)
    return bool(ratio.is_number and ratio.is_real and float(ratio) > 0)


def selected(out: Path, seed: int, overrides) -> tuple[str, float, float]:
    """(selected rule, its loss, wall seconds) of the run of ``seed``, made if not there."""
    run = out / f"seed{seed}"
    if (run / "pareto.csv").exists():
        row = next(r for r in read_csv(run / "pareto.csv") if str(r["selected"]) == "1")
        return row["expression"].replace("Abs(", "abs("), float(row["loss"]), float("nan")  # runs before abs() text
    start = time.perf_counter()
    result, _ = evolve_run(RunSpec(TASK, tuple(overrides), seed=seed, workers=1), run)
    return result.selected.expression, result.selected.loss, time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="results/noise-prune-seeds")
    ap.add_argument("--seeds", type=int, nargs="+", default=list(range(1, 11)))
    ap.add_argument("--big", type=int, default=2000, help="neurons of the comparison network (0: skip)")
    ap.add_argument("--big-rules", type=int, default=4, help="distinct selected rules compared there, most "
                                                             "often selected first (default 4)")
    ap.add_argument("--figure", help="write the spectra figure of the big comparison here")
    ap.add_argument("--set", action="append", default=[], help="task override, as for rulesearch --set")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows, found = [], []
    for seed in args.seeds:
        rule_text, loss, wall = selected(out, seed, args.set)
        task = load_task(TASK, args.set, data=write_network(out / f"unseen{seed}.npz", 300, 1000 + seed), seed=seed)
        rule, published = task.parse(rule_text), task.parse(PUBLISHED_RULE)
        scores = task.sim.scores(task, pack_rules([rule, published]))
        rho = float(spearmanr(scores[0], scores[1])[0])
        same = positive_multiple(rule.to_sympy()[0], published.to_sympy()[0])
        ok = same or rho >= 0.99
        found.append(rule.text())  # canonical: abs(c_pre*w) and c_pre*abs(w) count as one
        rows.append([seed, rule_text, loss, round(rho, 5), int(same), int(ok), round(wall, 1)])
        print(f"seed {seed:2d}  {wall:6.1f} s  loss {loss:.5g}  spearman {rho:.5f}  equivalent={same!s:5s} "
              f"passed={ok!s:5s} {rule_text}", flush=True)
    write_csv(out / "noise-prune.csv", ["seed", "selected", "loss", "spearman_unseen", "equivalent", "passed",
                                        "wall_s"], rows)
    print(f"passed for {sum(r[5] for r in rows)} of {len(rows)} seeds")
    if args.big:
        big(out, args, collections.Counter(found))


def big(out: Path, args, found: collections.Counter) -> None:
    from rulesearch.sims.noise_prune.report import compare_rules, plot_spectra
    path = write_network(out / f"network{args.big}.npz", args.big, 2000)
    task = load_task(TASK, list(args.set) + ["pruning.samples=10", "pruning.keep=0.2"], data=path, seed=1)
    rules = {f"selected {k}x: {t}": task.parse(t) for t, k in found.most_common(args.big_rules)}
    rules.update(published=task.parse(PUBLISHED_RULE), control=task.parse(CONTROL_RULE))
    start = time.perf_counter()
    with threadpool_limits(limits=1, user_api="blas"):
        res = compare_rules(task, rules)
    pub, ctl = res["published"]["slow_error"], res["control"]["slow_error"]
    rows = []
    print(f"\n{args.big} neurons, {task.state.rows.shape[0]} synapse pairs, 80% pruned, 10 draws "
          f"({time.perf_counter() - start:.0f} s): median relative error of the slowest 10% of eigenvalues")
    for name, r in res.items():
        e = r["slow_error"]
        all_modes = float(np.median(np.abs(r["eigenvalues"] / task.state.eigenvalues - 1).mean(axis=1)))
        rows.append([name, e, ctl / e, e / pub, all_modes])
        print(f"  {name:60s} {e:.4f}   control/this {ctl / e:5.2f}   this/published {e / pub:5.2f}   "
              f"mean over all modes {all_modes:.4f}")
    write_csv(out / "noise-prune-big.csv", ["rule", "slow10_median_error", "control_over_rule",
                                            "rule_over_published", "all_modes_mean_error"], rows)
    if args.figure:
        top = next(iter(rules))
        plot_spectra(Path(args.figure), task.state.eigenvalues,
                     {f"{k} ({res[k]['slow_error']:.3g})": res[k]["eigenvalues"] for k in (top, "published", "control")},
                     f"{args.big} neurons, 80% of {task.state.rows.shape[0]} synapse pairs pruned; median |rel. error| "
                     "of the slowest 10% of eigenvalues over 10 draws in brackets")


if __name__ == "__main__":
    main()
