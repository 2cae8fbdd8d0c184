"""Re-simulate every member of a family (``rulesearch families`` output folder) with new input
seeds, and say which constraints fail on re-simulation and by how much.

Each member (a row of family.csv) is simulated ``--repeats`` times, each time with an input
seed no simulation of the run used (the run's seeds are below 2^31; these are offset by
``--offset`` + 1,000,003 x repeat), with the member's own drive (``--new-drive`` draws a new
drive from the prior's range instead, from ``--seed``). Prints the fraction passing all
constraints per repeat and over all repeats, the failures per constraint, and for each metric
the seed-to-seed spread (standard deviation across repeats, median over members) against the
family's margin to the nearest bound. ``--csv FILE`` writes every re-simulation's metrics.

    NUMBA_NUM_THREADS=2 python benchmarks/family_resimulate.py RUN_DIR [--repeats 2] [--new-drive]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from rulesearch.family_filter import FAMILY_FILE, Space
from rulesearch.results import read_csv, read_json, write_csv
from rulesearch.tasks import load_task


def resimulate(run_dir: Path, repeats: int, offset: int, new_drive: bool, seed: int, batch: int = 50):
    """-> (space, task, family rows, {metric: (repeats, n) array}) of the re-simulations."""
    info = read_json(run_dir / "run.json")
    task = load_task(info["task"], info["overrides"], seed=info["seed"])
    space = Space(task)
    family = read_csv(run_dir / FAMILY_FILE)
    values = np.array([[float(r[n]) for n in space.names] for r in family])
    base = np.array([int(r["seed"]) for r in family], np.int64)
    rng = np.random.default_rng(seed)
    out: dict[str, list] = {}
    for k in range(repeats):
        v = values.copy()
        if new_drive:
            for j, (lo, hi) in enumerate(space.nuisance.values()):
                v[:, 6 * len(space.pathways) + j] = rng.uniform(lo, hi, len(v))
        seeds = (base + offset + 1_000_003 * (k + 1)) % (2 ** 62)
        m: dict[str, list] = {}
        for a in range(0, len(v), batch):
            part = task.metrics(space.pack(v[a:a + batch], seeds[a:a + batch]))
            for key, x in part.items():
                m.setdefault(key, []).append(x)
        for key, x in m.items():
            out.setdefault(key, []).append(np.concatenate(x))
    return space, task, family, {k: np.array(v) for k, v in out.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--offset", type=int, default=7_000_000_000)
    p.add_argument("--new-drive", action="store_true")
    p.add_argument("--seed", type=int, default=0, help="of the new drives (--new-drive)")
    p.add_argument("--csv", type=Path)
    a = p.parse_args()
    t0 = time.perf_counter()
    space, task, family, m = resimulate(a.run_dir, a.repeats, a.offset, a.new_drive, a.seed)
    wall = time.perf_counter() - t0
    constraints = task.sim.constraints(task.config)
    holds = {k.metric: k.holds(m[k.metric]) for k in constraints}  # (repeats, n)
    all_ok = np.all(list(holds.values()), axis=0)
    n = len(family)
    print(f"{a.run_dir}: {n} members x {a.repeats} re-simulations ({'new drive' if a.new_drive else 'same drive'}, "
          f"new seeds) in {wall:.0f} s")
    for k in range(a.repeats):
        print(f"  repeat {k}: {all_ok[k].mean():.1%} pass every constraint ({all_ok[k].sum()}/{n})")
    print(f"  every repeat: {all_ok.all(axis=0).mean():.1%} of members; all re-simulations: {all_ok.mean():.1%}")
    print(f"  {'metric':8s} {'fails':>6s} {'fail %':>7s} {'worst':>9s} {'bound':>12s} {'seed sd':>8s} "
          f"{'margin (median)':>15s}")
    for k in constraints:
        x = m[k.metric]
        fails = int((~holds[k.metric]).sum())
        bad = x[~holds[k.metric]]
        worst = (np.nanmax(bad) if np.nanmean(bad) > k.high else np.nanmin(bad)) if fails and np.isfinite(bad).any() \
            else np.nan
        sd = np.nanmedian(np.nanstd(x, axis=0)) if a.repeats > 1 else np.nan
        margin = np.nanmedian(np.minimum(np.abs(x - k.low), np.abs(k.high - x)))
        print(f"  {k.metric:8s} {fails:6d} {fails / x.size:7.1%} {worst:9.4g} {k.low:5g}..{k.high:<6g} {sd:8.3g} "
              f"{margin:15.3g}")
    if a.csv:
        cols = ["member", "repeat"] + [k.metric for k in constraints] + ["exploded", "pass"]
        rows = [[str(i), str(k)] + [repr(float(m[c.metric][k, i])) for c in constraints]
                + [str(int(m["exploded"][k, i])), str(int(all_ok[k, i]))]
                for k in range(a.repeats) for i in range(n)]
        write_csv(a.csv, cols, rows)


if __name__ == "__main__":
    main()
