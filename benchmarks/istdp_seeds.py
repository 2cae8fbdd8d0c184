"""Criterion 1 of the spiking issue: `rulesearch evolve tasks/istdp.toml --seed S` for seeds 1..10;
each selected rule scored on the held-out drives (never seen by the search). Prints one row per
seed: time, rule, held-out rates and tuning correlations, pass (5 +- 0.5 Hz and corr >= 0.8 on
every held-out drive).

    python benchmarks/istdp_seeds.py [--seeds 1-10] [--out results/istdp-seeds] [-- extra evolve args]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="1-10")
    ap.add_argument("--out", default="results/istdp-seeds")
    ap.add_argument("extra", nargs="*", help="more evolve arguments (after --)")
    args = ap.parse_args()
    a, _, b = args.seeds.partition("-")
    seeds = range(int(a), int(b or a) + 1)
    rows = []
    for seed in seeds:
        out = Path(args.out) / f"seed{seed}"
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "rulesearch.cli", "evolve", str(ROOT / "tasks" / "istdp.toml"),
                        "--seed", str(seed), "--out", str(out), "--force", *args.extra],
                       check=True, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - t0
        info = json.loads((out / "run.json").read_text())
        h = info["heldout"]
        target = h["target_rate_hz"]
        ok = all(abs(r - target) <= 0.1 * target for r in h["rate_hz"]) and min(h["balance"]) >= 0.8
        rows.append(ok)
        rates = " ".join(f"{r:.2f}" for r in h["rate_hz"])
        corr = " ".join(f"{c:.2f}" for c in h["balance"])
        print(f"seed {seed:2d}  {wall:6.1f} s  {'PASS' if ok else 'fail'}  rates [{rates}] Hz  corr [{corr}]  "
              f"{info['selected']}", flush=True)
    print(f"{sum(rows)}/{len(rows)} seeds pass")


if __name__ == "__main__":
    main()
