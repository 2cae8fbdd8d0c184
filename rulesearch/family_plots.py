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
    fig = Figure(figsize=(3 * cols, 2.4 * -(-len(constraints) // cols)))
    fig.subplots_adjust(left=0.04, right=0.98, bottom=0.08, top=0.92, wspace=0.25, hspace=0.45)
    axes = fig.subplots(-(-len(constraints) // cols), cols, squeeze=False).ravel()
    for ax, k in zip(axes, constraints):
        v = np.array([float(row[k.metric]) for row in rows])
        v = v[np.isfinite(v)]
        if len(v):
            lo, hi = np.quantile(v, [0.01, 0.99])
            lo, hi = min(lo, k.low if np.isfinite(k.low) else lo), max(hi, k.high if np.isfinite(k.high) else hi)
            ax.hist(np.clip(v, lo, hi), bins=40, color="0.3", histtype="stepfilled")
            ax.axvspan(max(k.low, lo), min(k.high, hi), color="C2", alpha=0.25)
        ax.set_title(f"{k.metric} ({len(v)} measured)", fontsize=9)
    for ax in axes[len(constraints):]:
        ax.set_visible(False)
    _save(fig, out / METRICS_PLOT)

    # pair plots: taus on log10 axes drawn linearly, ticks on the outer panels only (constrained
    # layout and log axes on 36 panels take seconds per figure)
    family = np.array([[float(row[n]) for n in space.names] for row in rows if row.get("member", row["pass"]) == "1"])
    prior = np.array([[float(row[n]) for n in space.names] for row in rows if row["round"] == "0"])
    family, prior = (np.where(space.log, np.log10(np.maximum(a, 1e-300)), a) if len(a) else a for a in (family, prior))
    low = np.where(space.log, space.low / np.log(10), space.low)
    high = np.where(space.log, space.high / np.log(10), space.high)
    for p in space.pathways:
        names = [n for n in space.names if n.startswith(p + ".")]
        idx = [space.names.index(n) for n in names]
        d = len(idx)
        fig = Figure(figsize=(1.5 * d, 1.5 * d))
        fig.subplots_adjust(left=0.1, right=0.98, bottom=0.1, top=0.93, wspace=0.08, hspace=0.08)
        grid = fig.add_gridspec(d, d)
        for a in range(d):
            for b in range(a + 1):  # the lower triangle only
                ax = fig.add_subplot(grid[a, b])
                ja, jb = idx[a], idx[b]
                if a == b:
                    bins = np.linspace(low[ja], high[ja], 15)
                    ax.hist(prior[:, ja], bins=bins, color="0.6", density=True, histtype="step")
                    if len(family):
                        ax.hist(family[:, ja], bins=bins, color="C3", density=True, histtype="step")
                    ax.set_yticks([])
                else:
                    ax.plot(prior[:, jb], prior[:, ja], ".", ms=1, color="0.75")
                    if len(family):
                        ax.plot(family[:, jb], family[:, ja], ".", ms=2, color="C3")
                    ax.set_ylim(low[ja], high[ja])
                ax.set_xlim(low[jb], high[jb])
                ax.tick_params(labelsize=6)
                label = lambda n: ("log10 " if n.endswith("_ms") else "") + n.split(".")[1]
                if a == d - 1:
                    ax.set_xlabel(label(names[b]), fontsize=7)
                else:
                    ax.set_xticks([])
                if b == 0 and a > 0:
                    ax.set_ylabel(label(names[a]), fontsize=7)
                elif a != b:
                    ax.set_yticks([])
        fig.suptitle(f"{p}: plausible rules ({len(family)}, red) vs prior samples (grey)", fontsize=9)
        _save(fig, out / f"pairs_{p}.png")
