"""Figures of a run, written as PNG without a display."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .results import atomic_file  # noqa: E402


def plot_front(path: str | Path, front: Sequence[dict], history: Sequence[dict], title: str = "") -> None:
    """Loss against complexity of the front (selected rule starred) and best loss per generation."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    comp = [int(r["complexity"]) for r in front]
    loss = [float(r["loss"]) for r in front]
    ax1.step(comp, loss, where="post", color="0.6", lw=1)
    ax1.plot(comp, loss, "o", color="C0")
    for r in front:
        if str(r["selected"]) == "1":
            ax1.plot(int(r["complexity"]), float(r["loss"]), "*", ms=16, color="C3",
                     label=f"selected: {r['expression']}")
    ax1.set(xlabel="complexity (nodes)", ylabel="loss", title="Pareto front")
    if min(loss) > 0:
        ax1.set_yscale("log")
    ax1.legend(loc="upper right", fontsize=8)
    gens = [h["generation"] for h in history]
    best = [h["best_loss"] for h in history]
    ax2.plot(gens, best, "-", color="C0")
    ax2.set(xlabel="generation", ylabel="best loss", title="learning curve")
    if best and min(best) > 0:
        ax2.set_yscale("log")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    with atomic_file(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=100)
    plt.close(fig)
