"""Cost of the choice likelihood, side by side in one run: with and without the weight filter.

18 synthetic flies from x*(r - rbar) (tasks/fly-choice.toml), teacher-forced likelihood of a
population of rules per call (2 threads): 300 small rules (one GP generation) and 24 Taylor
polynomials of 54 terms and 24 MLP rules (one CMA-ES generation each), with
protocol.weight_filter on and off.

    python benchmarks/bench_choice.py [--repeats 5]
"""
from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from rulesearch.families import TaylorFamily
from rulesearch.fit import make_family
from rulesearch.sims.choice import simulate_choices
from rulesearch.tasks import load_task, pack_rules, with_data

TASK = str(Path(__file__).resolve().parent.parent / "tasks" / "fly-choice.toml")
SMALL = ["x*(r - rbar)", "0.9*x*(r - rbar) - 0.05*w", "(x + y**2)*(r - rbar)", "x*y*r - rbar*w"]


def best_time(f, repeats: int) -> float:
    f()  # compile / warm up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        f()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    task = load_task(TASK, require_data=False, seed=1)
    task = with_data(task, simulate_choices(task, task.parse("x*(r - rbar)"), seed=1))
    small = pack_rules([task.parse(s) for s in SMALL] * 75)
    family = make_family(task)
    assert isinstance(family, TaylorFamily)
    params = 0.01 * np.random.default_rng(0).standard_normal((24, family.n_params))
    params[:, family.names.index("theta_x1_y0_w0_(r-rbar)1")] += 1.0  # near a fitted rule: no blow-ups
    taylor = family.pack(params)
    mlp_family = make_family(replace(task, fit=replace(task.fit, family="mlp")))
    mlp = mlp_family.pack(np.stack([mlp_family.initial(np.random.default_rng(k)) for k in range(24)]))
    print(f"{'population':<34} {'filter off':>11} {'filter on':>11} {'ratio':>7}")
    for label, packed in (("300 small rules (GP generation)", small),
                          (f"24 Taylor rules, {family.n_params} terms (CMA-ES)", taylor),
                          (f"24 MLP rules, {mlp_family.n_params} parameters", mlp)):
        off = best_time(lambda: task.simulate(packed, filtered=False), args.repeats)
        on = best_time(lambda: task.simulate(packed, filtered=True), args.repeats)
        print(f"{label:<34} {1e3 * off:>9.0f}ms {1e3 * on:>9.0f}ms {on / off:>6.1f}x", flush=True)


if __name__ == "__main__":
    main()
