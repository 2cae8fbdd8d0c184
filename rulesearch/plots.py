"""Figures of a run, written as PNG without a display."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib.figure import Figure

from .results import atomic_file

# Figures are made with matplotlib's object API (Figure, not pyplot): no backend is selected and no
# global state changes when rulesearch is imported or draws.


def _short(text: str, n: int = 70) -> str:
    return text if len(text) <= n else text[:n - 3] + "..."


def plot_front(path: str | Path, front: Sequence[dict], history: Sequence[dict] | None, title: str = "",
               reference: tuple[str, float] | None = None) -> None:
    """Loss against complexity of the front (selected rule starred) and best loss per generation.

    history None: the front alone; reference: a labelled loss drawn as a horizontal line.
    """
    # fixed margins: the constrained layout measured every tick label's box, 0.36 s of the 0.57 s that
    # drawing this figure took (a twentieth of an Oja search)
    fig = Figure(figsize=(5 if history is None else 10, 4))
    fig.subplots_adjust(left=0.16 if history is None else 0.08, right=0.97 if history is None else 0.985,
                        bottom=0.13, top=0.85 if title else 0.9, wspace=0.22)
    axes = fig.subplots(1, 1 if history is None else 2, squeeze=False)
    ax1 = axes[0, 0]
    comp = [int(r["complexity"]) for r in front]
    loss = [float(r["loss"]) for r in front]
    ax1.step(comp, loss, where="post", color="0.6", lw=1)
    ax1.plot(comp, loss, "o", color="C0")
    for r in front:
        if str(r["selected"]) == "1":
            ax1.plot(int(r["complexity"]), float(r["loss"]), "*", ms=16, color="C3",
                     label=_short(f"selected: {r['expression']}"))
    if reference is not None:
        ax1.axhline(reference[1], color="0.3", ls="--", lw=1, label=reference[0])
    ax1.set(xlabel="complexity (nodes)", ylabel="loss", title="Pareto front")
    if min(loss) > 0:
        ax1.set_yscale("log")
    ax1.legend(loc="upper right", fontsize=8)
    if history is not None:
        _plot_history(axes[0, 1], history)
    if title:
        fig.suptitle(title)
    with atomic_file(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=100)


def _plot_history(ax2, history: Sequence[dict]) -> None:
    gens = [h["generation"] for h in history]
    best = [h["best_loss"] for h in history]
    ax2.plot(gens, best, "-", color="C0")
    ax2.set(xlabel="generation", ylabel="best loss", title="learning curve")
    if best and min(best) > 0:
        ax2.set_yscale("log")


def plot_fit(path: str | Path, history: Sequence[dict], coefficients: Sequence[dict],
             example: dict | None, title: str = "") -> None:
    """Loss per CMA-ES generation; the largest Taylor coefficients; a held-out activity trace.

    coefficients: rows with term, monomial, value (empty for MLP fits); example:
    {"recorded": (steps, n_out) with NaN, "fitted": (steps, n_out)} or None.
    """
    panels = 1 + bool(coefficients) + (example is not None)
    fig = Figure(figsize=(5 * panels, 4), layout="constrained")
    axes = fig.subplots(1, panels, squeeze=False)
    axes = list(axes[0])
    ax = axes.pop(0)
    gens = [h["generation"] for h in history]
    ax.plot(gens, [max(h["best_loss"], 1e-300) for h in history], color="C0", label="best loss")
    if all("median_objective" in h for h in history):  # CMA-ES; LM fits have one point per iteration
        ax.plot(gens, [h["median_objective"] for h in history], color="0.6", lw=0.8, label="median (penalised)")
    ax.set(xlabel="CMA-ES generation (or LM iteration: full fit, then refits)", ylabel="loss", title="fit",
           yscale="log")
    ax.legend(fontsize=8)
    if coefficients:
        ax = axes.pop(0)
        top = sorted(coefficients, key=lambda r: -abs(r["value"]))[:12][::-1]
        ax.barh(range(len(top)), [r["value"] for r in top],
                color=["C3" if r["value"] < 0 else "C0" for r in top])
        ax.set_yticks(range(len(top)), [r["monomial"] for r in top], fontsize=8)
        ax.axvline(0, color="k", lw=0.5)
        ax.set(xlabel="coefficient (dw = eta * sum)", title="largest terms")
    if example is not None:
        ax = axes.pop(0)
        rec, fit = example["recorded"], example["fitted"]
        i = int(np.argmax(np.isfinite(rec).any(axis=0)))  # first recorded neuron
        ax.plot(rec[:, i], color="0.3", lw=1, label="recorded")
        ax.plot(fit[:, i], color="C1", lw=1, ls="--", label="fitted rule")
        ax.set(xlabel="step", ylabel=f"activity of neuron {i}", title="first held-out trial")
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    with atomic_file(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=100)


def plot_acceptance(path: str | Path, curves: dict, labels: Sequence[str], trials_per_block: int,
                    title: str = "") -> None:
    """Model P(accept) per odour over trials against the animal's running acceptance rate."""
    fig = Figure(figsize=(10, 6), layout="constrained")
    axes = fig.subplots(2, 1, sharex=True)
    for o, ax in enumerate(axes):
        trial, rate = curves["running"][o]
        ax.plot(trial, rate, ".", color="0.5", ms=3, label="animal (running mean of 10 encounters)")
        for k, (p, label) in enumerate(zip(curves["probs"], labels)):
            ax.plot(np.arange(len(p)), p[:, o], color=f"C{k}", lw=1.5, label=_short(label))
        for b in range(trials_per_block, curves["n_trials"], trials_per_block):
            ax.axvline(b, color="k", lw=0.6, ls=":")
        ax.set(ylabel=f"P(accept odour {o})", ylim=(-0.02, 1.02))
    axes[0].legend(fontsize=8, loc="lower left")
    axes[1].set_xlabel("trial (block boundaries dotted)")
    if title:
        fig.suptitle(title)
    with atomic_file(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=100)
