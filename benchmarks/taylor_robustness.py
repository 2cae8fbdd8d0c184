"""Robustness of the Taylor fit of Oja's rule to measurement noise and sparse recording.

    python benchmarks/taylor_robustness.py [--out results/robustness] [--seeds 0 1] [--figure docs/robustness.png]

For each noise level (0 to 1 x the activity's std), fraction of recorded neurons (1.0 down
to 0.1 of 10 output neurons) and seed: simulate data from Oja's rule (tasks/fit-activity.toml
with 10 output neurons), fit the 27-term Taylor family on 75 % of the trials, and score the
fit on the held-out trials against the true rule: weight-trajectory R^2, activity R^2 and the
coefficients of x*y and y^2*w. Writes robustness.csv (one row per fit, appended as it goes)
and a figure of weight R^2 against noise, one line per recorded fraction.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from rulesearch.data import save_activity
from rulesearch.plots import plt
from rulesearch.results import atomic_file, read_csv, write_csv
from rulesearch.runs import RunSpec, fit_run
from rulesearch.sims.rate import simulate_activity
from rulesearch.tasks import load_task

TASK = Path(__file__).resolve().parent.parent / "tasks" / "fit-activity.toml"
SETTINGS = ("network.n_out=10",)
NOISE = (0.0, 0.25, 0.5, 1.0)
OBSERVED = (1.0, 0.5, 0.2, 0.1)
COLUMNS = ("noise", "observed", "seed", "weight_r2", "activity_r2", "theta_xy", "theta_yyw",
           "largest_other", "seconds")


def run_one(out: Path, noise: float, observed: float, seed: int) -> dict:
    case = out / f"noise{noise}-obs{observed}-seed{seed}"
    task = load_task(TASK, SETTINGS, seed=seed, require_data=False)
    data = case / "data.npz"
    save_activity(data, simulate_activity(task, task.parse("x*y - y**2*w"), noise, observed, seed))
    t0 = time.time()
    result, info, fdir = fit_run(RunSpec(str(TASK), SETTINGS, str(data), seed), case / "fit")
    names = info["family"]["names"]
    p = dict(zip(names, result.params))
    xy, yyw = p.pop("theta_x1_y1_w0"), p.pop("theta_x0_y2_w1")
    return {"noise": noise, "observed": observed, "seed": seed, "weight_r2": info["heldout"]["weight_r2"],
            "activity_r2": info["heldout"]["activity_r2"], "theta_xy": xy, "theta_yyw": yyw,
            "largest_other": max(abs(v) for v in p.values()), "seconds": round(time.time() - t0, 1)}


def plot(rows: list[dict], path: Path) -> None:
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for k, obs in enumerate(sorted({float(r["observed"]) for r in rows}, reverse=True)):
        sub = [r for r in rows if float(r["observed"]) == obs]
        levels = sorted({float(r["noise"]) for r in sub})
        for ax, key in ((ax1, "weight_r2"), (ax2, "theta_xy")):
            vals = [[float(r[key]) for r in sub if float(r["noise"]) == n] for n in levels]
            mean = [np.mean(v) for v in vals]
            ax.plot(levels, mean, "o-", color=f"C{k}", label=f"{obs:.0%} of neurons recorded")
            ax.fill_between(levels, [min(v) for v in vals], [max(v) for v in vals], color=f"C{k}", alpha=0.15)
    ax1.set(xlabel="measurement noise (x activity std)", ylabel="weight-trajectory R$^2$ (held-out trials)",
            title="Taylor fit of Oja's rule", ylim=(min(0.9, ax1.get_ylim()[0]), 1.005))
    ax2.axhline(1.0, color="k", lw=0.5)
    ax2.set(xlabel="measurement noise (x activity std)", ylabel=r"fitted $\theta_{xy}$ (true 1)",
            title="coefficient of x y")
    ax1.legend(fontsize=8)
    fig.tight_layout()
    with atomic_file(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=100)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="results/robustness")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--figure", default=None, help="figure path (default: OUT/robustness.png)")
    ap.add_argument("--plot-only", action="store_true", help="redraw the figure from OUT/robustness.csv")
    args = ap.parse_args()
    out = Path(args.out)
    table = out / "robustness.csv"
    rows = read_csv(table) if table.is_file() else []
    done = {(float(r["noise"]), float(r["observed"]), int(r["seed"])) for r in rows}
    if not args.plot_only:
        for seed in args.seeds:
            for observed in OBSERVED:
                for noise in NOISE:
                    if (noise, observed, seed) in done:
                        continue  # resumable: rows already in the table are kept
                    row = run_one(out, noise, observed, seed)
                    print(row, flush=True)
                    rows.append(row)
                    write_csv(table, COLUMNS, [[r[c] for c in COLUMNS] for r in rows])
    plot(rows, Path(args.figure) if args.figure else out / "robustness.png")
    print("\n| noise | " + " | ".join(f"{o:.0%} recorded" for o in OBSERVED) + " |")
    print("|---|" + "---|" * len(OBSERVED))
    for n in NOISE:
        cells = []
        for o in OBSERVED:
            v = [float(r["weight_r2"]) for r in rows if float(r["noise"]) == n and float(r["observed"]) == o]
            cells.append(f"{min(v):.3f}-{max(v):.3f}" if v else "-")
        print(f"| {n} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
