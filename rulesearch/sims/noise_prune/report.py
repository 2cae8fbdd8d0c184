"""``rulesearch simulate`` for noise-pruning tasks: prune the task's network (or the one given with
``--data``) under a rule, write the pruned matrix and a figure of the eigenvalues before and after,
next to the published rule and the |w| control."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from ...results import atomic_file, savez_atomic, versions
from .kernel import keep_probabilities, pruned_matrix
from .objectives import relative_eigenvalue_errors, slow_mode_error


def compare_rules(task, rules: dict) -> dict:
    """For each named rule: its scores (m,), keep probabilities (m,), the pruned network of the first
    draw (n, n) and the eigenvalues of every draw (samples, n). ``ValueError`` for a rule whose scores
    cannot be used (NaN, inf or none positive)."""
    from ...tasks import pack_rules
    s = task.state
    names = list(rules)
    scores = task.sim.scores(task, pack_rules([rules[k] for k in names]))
    out = {}
    for k, name in enumerate(names):
        try:
            p = keep_probabilities(scores[k], task.config.keep)
        except ValueError as exc:
            raise ValueError(f"rule '{rules[name].text()}' on {task.data_source or task.name}: {exc}") from None
        eig = np.array([np.linalg.eigvalsh(pruned_matrix(s.rows, s.cols, s.w, s.margin, p, u))
                        for u in s.uniforms])
        out[name] = {"scores": scores[k], "p": p, "B": pruned_matrix(s.rows, s.cols, s.w, s.margin, p, s.uniforms[0]),
                     "eigenvalues": eig, "slow_error": float(np.median(slow_mode_error(s.eigenvalues, eig)))}
    return out


def plot_spectra(path: Path, eigenvalues: np.ndarray, pruned: dict, title: str) -> None:
    """Eigenvalues of the original and of each pruned network (first draw): all of them, the slowest
    10 % enlarged, and each mode's relative error against its original eigenvalue."""
    fig = Figure(figsize=(15, 4.4), layout="constrained")
    ax1, ax2, ax3 = fig.subplots(1, 3)
    n = eigenvalues.shape[0]
    k = max(1, int(round(0.1 * n)))
    idx = np.arange(n)
    ax1.plot(idx, eigenvalues, color="k", lw=2, label="original")
    ax2.plot(idx[-k:], eigenvalues[-k:], "o-", color="k", lw=2, ms=3, label="original")
    for (label, eig), color in zip(pruned.items(), ("C3", "C0", "C2")):
        ax1.plot(idx, eig[0], color=color, lw=1, label=label)
        ax2.plot(idx[-k:], eig[0, -k:], "o-", color=color, lw=1, ms=2, label=label)
        rel = np.abs(relative_eigenvalue_errors(eigenvalues, eig[0]))
        ax3.semilogy(eigenvalues, rel, ".", ms=3, color=color, label=label)
    ax1.axvspan(n - k - 0.5, n - 0.5, color="0.9", zorder=0)
    ax3.axvspan(eigenvalues[-k], 0, color="0.9", zorder=0, label="slowest 10 %")
    ax1.set(xlabel="mode (ascending)", ylabel="eigenvalue", title="spectrum before and after pruning")
    ax2.set(xlabel="mode (ascending)", ylabel="eigenvalue", title="the slowest 10 % (shaded on the left)")
    ax3.set(xlabel="original eigenvalue", ylabel="|relative error|", title="error per mode")
    ax1.legend(fontsize=7)
    ax2.legend(fontsize=7)
    ax3.legend(fontsize=7, loc="lower left")
    fig.suptitle(title, fontsize=9)
    with atomic_file(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=100)


def write_pruned(task, rule, out: Path) -> str:
    """Write ``out`` (NPZ: the pruned network of the first draw and facts) and ``out`` with suffix
    .png (the spectra); return a one-line summary."""
    from . import CONTROL_RULE, PUBLISHED_RULE
    from scipy.stats import spearmanr
    figure = out.with_suffix(".png")
    if figure.exists() and not out.exists():  # out exists only when --force let it through
        raise ValueError(f"{figure}: a file already exists there (the figure of --out {out}; pass --force "
                         "to replace both)")
    rules = {"rule": rule, "published": task.parse(PUBLISHED_RULE), "control |w|": task.parse(CONTROL_RULE)}
    labels = {"rule": f"rule {rule.text()}", "published": f"published {PUBLISHED_RULE}",
              "control |w|": f"control {CONTROL_RULE}"}
    res = compare_rules(task, rules)
    s = task.state
    mine = res["rule"]
    rho = float(spearmanr(mine["scores"], res["published"]["scores"])[0])
    kept = float(np.mean([np.mean(u < mine["p"]) for u in s.uniforms]))
    meta = {"rule": rule.text(), "task": task.source, "network": task.data_source or "generated",
            "seed": task.seed, "keep": task.config.keep, "kept": kept, "spearman_published": rho,
            "slow_mode_median_error": {k: v["slow_error"] for k, v in res.items()},
            "overrides": list(task.overrides), "versions": versions()}
    savez_atomic(out, A=mine["B"], A_original=s.A, p=mine["p"], rows=s.rows, cols=s.cols,
                 eigenvalues_original=s.eigenvalues, eigenvalues=mine["eigenvalues"],
                 meta=np.array(json.dumps(meta)))
    errors = ", ".join(f"{k} {v['slow_error']:.3g}" for k, v in res.items())
    plot_spectra(figure, s.eigenvalues, {f"{labels[k]} ({v['slow_error']:.3g})": v["eigenvalues"]
                                         for k, v in res.items()},
                 f"{s.n} neurons, {100 * kept:.0f}% of {s.rows.shape[0]} synapse pairs kept; "
                 f"median |rel. error| of the slowest 10% of eigenvalues in brackets\nrule: {rule.text()}")
    return (f"wrote {out} and {figure}: {s.n} neurons, kept {100 * kept:.1f}% of {s.rows.shape[0]} synapse pairs "
            f"under {rule.text()}; median relative error of the slowest 10% of eigenvalues over "
            f"{s.uniforms.shape[0]} draws: {errors}; Spearman with the published scores {rho:.4f}")
