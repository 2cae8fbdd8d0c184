"""Does the weight filter's likelihood curve where the exact one is flat? The profile of
c*x*(r - rbar) on fly choices under the weight filter (the tasks' likelihood) and under the exact
marginal likelihood by particle filtering (rulesearch/sims/choice/particles.py), side by side.

    python benchmarks/fly_marginal.py [--set network.eta=1 protocol.readout=2] [--seeds 1 2 3 4]
                                      [--particles 2000] [--mc 2] [--data FOLDER --task TASK]

Per seed, 18 flies from x*(r - rbar) (tasks/fly-choice.toml's protocol; --set changes it), or the
flies in --data under --task. For c in --cs, the negative log-likelihood of the fitted trials'
decisions (nats, summed over decisions) minus that of c = 1, under the filter and under --mc
particle filters with different random numbers (their spread is the Monte Carlo error), and the
standard error of the difference paired over animals (the noise the one-SE selection compares it
with). Writes marginal.csv.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from rulesearch.results import write_csv
from rulesearch.sims.choice import simulate_choices
from rulesearch.sims.choice.particles import particle_nll
from rulesearch.tasks import load_task, pack_rules, with_data

TASK = str(Path(__file__).resolve().parent.parent / "tasks" / "fly-choice.toml")


def profile(task, cs, particles: int, mc: int) -> list[dict]:
    rules = [task.parse(f"{c:g}*x*(r - rbar)") for c in cs]
    c, p = task.config, task.config.protocol
    at_one = list(cs).index(1.0)
    kinds = {"filter": task.simulate(rules).nll}
    for s in range(mc):
        kinds[f"particles{s}"] = particle_nll(pack_rules(rules), task.state.choices, task.state.w0, c.readout,
                                              task.etas[0], c.weight_bound, p.odour_variance, c.init_std ** 2,
                                              particles, seed=s)[0]
    rows = []
    for k, cv in enumerate(cs):
        row = {"c": cv}
        for name, nll in kinds.items():
            d = nll[k] - nll[at_one]
            row[name] = round(float(d.sum()), 3)
            row[f"{name}_se"] = round(float(np.sqrt(len(d)) * d.std(ddof=1)), 3)
        rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--set", nargs="*", default=[], help="task settings KEY=VALUE")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4])
    ap.add_argument("--cs", type=float, nargs="+", default=[0.5, 0.6, 0.8, 1.0, 1.2, 1.4])
    ap.add_argument("--particles", type=int, default=2000)
    ap.add_argument("--mc", type=int, default=2, help="particle filters with different random numbers")
    ap.add_argument("--data", help="recorded flies instead of generated ones (with --task)")
    ap.add_argument("--task", default=TASK)
    ap.add_argument("--out", default="results/fly-marginal")
    args = ap.parse_args()
    if 1.0 not in args.cs:
        ap.error("--cs must include 1")
    rows = []
    for seed in ([0] if args.data else args.seeds):
        t0 = time.perf_counter()
        if args.data:
            task = load_task(args.task, args.set, data=args.data, seed=1)
        else:
            base = load_task(args.task, args.set, seed=seed, require_data=False)
            task = with_data(base, simulate_choices(base, base.parse("x*(r - rbar)"), seed=seed))
        train, _ = task.split()
        n = int(train.simulate([train.parse("0")]).count.sum())
        print(f"seed {seed}: {n} fitted decisions; NLL(c) - NLL(1) in nats (paired SE over animals)", flush=True)
        for row in profile(train, args.cs, args.particles, args.mc):
            rows.append({"seed": seed, **row})
            print("  c {c:4.2f}  filter {filter:+8.3f} ({filter_se:.3f})  particles ".format(**row)
                  + "  ".join(f"{row[f'particles{s}']:+8.3f} ({row[f'particles{s}_se']:.3f})" for s in range(args.mc)),
                  flush=True)
        print(f"  ({time.perf_counter() - t0:.0f} s)", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "marginal.csv", tuple(rows[0]), [list(r.values()) for r in rows])


if __name__ == "__main__":
    main()
