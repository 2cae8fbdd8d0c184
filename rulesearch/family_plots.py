"""Figures of a family run: pass fraction per round, pair plots of the plausible rules against
the prior (one per pathway), and metric histograms with the allowed ranges shaded."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from .results import atomic_file

PASS_PLOT, METRICS_PLOT = "pass_fraction.png", "metrics.png"


def _save(fig: Figure, path: Path) -> None:
    with atomic_file(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=90)


def plot_families(out: Path, space, task, rows: list[dict], table: list[dict]) -> None:
    """Write PASS_PLOT, METRICS_PLOT and pairs_<pathway>.png into ``out``."""
    fig = Figure(figsize=(5, 3.5), layout="constrained")
    ax = fig.subplots()
    r = [t["round"] for t in table]
    ax.plot(r, [t["pass_fraction_all"] for t in table], "o-", label="all constraints")
    if task.families.staged:
        ax.plot(r, [t["pass_fraction"] for t in table], "s--", label="the round's constraints")
    ax.set(xlabel="round", ylabel="pass fraction", xticks=r, title=f"{task.name}: plausible fraction per round")
    ax.legend()
    _save(fig, out / PASS_PLOT)

    constraints = task.sim.constraints(task.config)
    cols = 4
    fig = Figure(figsize=(3 * cols, 2.4 * -(-len(constraints) // cols)), layout="constrained")
    axes = fig.subplots(-(-len(constraints) // cols), cols, squeeze=False).ravel()
    for ax, k in zip(axes, constraints):
        v = np.array([float(row[k.metric]) for row in rows])
        v = v[np.isfinite(v)]
        if len(v):
            lo, hi = np.quantile(v, [0.01, 0.99])
            lo, hi = min(lo, k.low if np.isfinite(k.low) else lo), max(hi, k.high if np.isfinite(k.high) else hi)
            ax.hist(np.clip(v, lo, hi), bins=40, color="0.4")
            ax.axvspan(max(k.low, lo), min(k.high, hi), color="C2", alpha=0.25)
        ax.set_title(f"{k.metric} ({len(v)} measured)", fontsize=9)
    for ax in axes[len(constraints):]:
        ax.set_visible(False)
    _save(fig, out / METRICS_PLOT)

    family = np.array([[float(row[n]) for n in space.names] for row in rows if row["pass"] == "1"])
    prior = np.array([[float(row[n]) for n in space.names] for row in rows if row["round"] == "0"])
    for p in space.pathways:
        names = [n for n in space.names if n.startswith(p + ".")]
        idx = [space.names.index(n) for n in names]
        d = len(idx)
        fig = Figure(figsize=(1.6 * d, 1.6 * d), layout="constrained")
        axes = fig.subplots(d, d, squeeze=False)
        for a in range(d):
            for b in range(d):
                ax = axes[a, b]
                if b > a:
                    ax.set_visible(False)
                    continue
                ja, jb = idx[a], idx[b]
                logx, logy = space.log[jb], space.log[ja]
                if a == b:
                    bins = np.geomspace(*np.exp([space.low[ja], space.high[ja]]), 15) if logy else \
                        np.linspace(space.low[ja], space.high[ja], 15)
                    ax.hist(prior[:, ja], bins=bins, color="0.8", density=True)
                    if len(family):
                        ax.hist(family[:, ja], bins=bins, color="C3", alpha=0.7, density=True)
                else:
                    ax.plot(prior[:, jb], prior[:, ja], ".", ms=1, color="0.75")
                    if len(family):
                        ax.plot(family[:, jb], family[:, ja], ".", ms=2, color="C3")
                    ax.set_yscale("log" if logy else "linear")
                ax.set_xscale("log" if logx else "linear")
                ax.tick_params(labelsize=6)
                if a == d - 1:
                    ax.set_xlabel(names[b].split(".")[1], fontsize=7)
                if b == 0 and a > 0:
                    ax.set_ylabel(names[a].split(".")[1], fontsize=7)
        fig.suptitle(f"{p}: plausible rules ({len(family)}, red) vs prior samples (grey)", fontsize=9)
        _save(fig, out / f"pairs_{p}.png")
