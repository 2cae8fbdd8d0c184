"""``rulesearch simulate`` for spiking tasks: spike trains and weight trajectories (NPZ) and a figure.

NPZ schema (one entry per trial b of the task's drives):

- ``drives`` (trials,): input-rate multiplier of each trial
- ``dt_ms`` (): the time step; ``record_every_ms`` (): sampling period of ``w``
- ``output_spike_times_s`` (n_out_spikes,), ``output_spike_trial`` (n_out_spikes,): the neuron's spikes
- ``input_spike_times_s`` (n_in_spikes,), ``input_spike_afferent`` (n_in_spikes,), ``input_spike_trial``
  (n_in_spikes,): every afferent's spikes
- ``exc`` (n_aff,) bool, ``channel`` (n_aff,) int: the afferents
- ``tuning`` (channels,): the excitatory weight of each channel
- ``w`` (trials, n_samples, n_aff): weights every ``record_every_ms`` from t = 0; ``t_w_s`` (n_samples,)
- ``rate_hz`` (trials,): output rate over the scoring window; ``balance`` (trials,): the
  inhibitory/excitatory tuning correlation at the end
- ``meta``: JSON (rule, task, seed, overrides, versions)
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from ...results import atomic_file, savez_atomic
from .objectives import balance, output_rates

RECORD_EVERY_MS = 100.0


def write_recording(sim, task, rule, out: Path) -> str:
    """Simulate ``rule`` on the task's trials; write ``out`` (NPZ) and ``out`` with suffix .png."""
    from ...results import versions
    from ...tasks import pack_rules
    out = Path(out)
    if out.suffix != ".npz":
        raise ValueError(f"--out {out}: a spiking task writes an .npz file (and a .png next to it)")
    c, s = task.config, task.state
    result = sim.simulate(task, pack_rules([rule]), record=True, record_every_ms=RECORD_EVERY_MS)
    if result.blown[0]:
        raise ValueError(f"rule '{rule.text()}' makes weights non-finite on task '{task.name}': no data written")
    dt_s = c.dt_ms * 1e-3
    spikes = result.spike_steps[0]  # (trials, cap)
    trial_of = np.nonzero(spikes >= 0)[0]
    in_step = np.concatenate([np.repeat(np.arange(s.n_steps), np.diff(p)) for p in s.spk_ptr])
    in_trial = np.concatenate([np.full(p[-1] - p[0], b) for b, p in enumerate(s.spk_ptr)])
    in_aff = np.concatenate([s.spk_aff[p[0]:p[-1]] for p in s.spk_ptr])
    w = result.w_trace[0][:, :, 0]  # (trials, n_samples, n_aff)
    rates, corr = output_rates(task, result)[0], balance(task, result)[0]
    meta = {"rule": rule.text(), "task": task.source, "seed": task.seed, "overrides": list(task.overrides),
            **sim.describe(c), "versions": versions()}
    savez_atomic(out, drives=np.array(s.drives), dt_ms=np.array(c.dt_ms), record_every_ms=np.array(RECORD_EVERY_MS),
                 output_spike_times_s=spikes[spikes >= 0] * dt_s, output_spike_trial=trial_of,
                 input_spike_times_s=in_step * dt_s, input_spike_afferent=in_aff, input_spike_trial=in_trial,
                 exc=s.exc, channel=s.channel, tuning=s.tuning, w=w.astype(np.float32),
                 t_w_s=np.arange(w.shape[1]) * RECORD_EVERY_MS * 1e-3, rate_hz=rates, balance=corr,
                 meta=np.array(json.dumps(meta)))
    figure = out.with_suffix(".png")
    plot_recording(figure, task, rule.text(), spikes, w, rates, corr)
    summary = ", ".join(f"drive {d:g}: {r:.2f} Hz, corr {k:.2f}" for d, r, k in zip(s.drives, rates, corr))
    return f"wrote {out} and {figure}: rule {rule.text()}; {summary}"


def plot_recording(path: Path, task, rule: str, spikes: np.ndarray, w: np.ndarray, rates, corr) -> None:
    """Output rate over time (1 s bins) per trial; excitatory and inhibitory weight per channel at the
    start and the end of each trial."""
    c, s = task.config, task.state
    fig = Figure(figsize=(11, 4), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    bins = np.arange(0, s.n_steps * c.dt_ms * 1e-3 + 1e-9, 1.0)
    for b, drive in enumerate(s.drives):
        t = spikes[b][spikes[b] >= 0] * c.dt_ms * 1e-3
        counts, _ = np.histogram(t, bins)
        ax1.plot(bins[:-1] + 0.5, counts / 1.0, drawstyle="steps-mid", lw=1.2,
                 label=f"drive {drive:g}: {rates[b]:.2f} Hz in the scored window")
    ax1.axhline(c.target_rate_hz, color="0.3", ls="--", lw=1, label=f"target {c.target_rate_hz:g} Hz")
    ax1.axvspan(s.score_from * c.dt_ms * 1e-3, s.n_steps * c.dt_ms * 1e-3, color="0.9", zorder=0)
    ax1.set(xlabel="time (s)", ylabel="output rate (Hz, 1 s bins)", ylim=(0, None),
            title="output rate (scored window shaded)")
    ax1.legend(fontsize=7)
    k = np.arange(len(s.tuning)) + 1
    inh = ~s.exc
    ax2.plot(k, s.tuning * c.g_exc_ns, "o-", color="C3", label="excitatory (fixed)")
    for b, drive in enumerate(s.drives):
        prof = lambda ws: np.array([ws[inh & (s.channel == j)].mean() for j in range(len(s.tuning))])  # noqa: E731
        if b == 0:
            ax2.plot(k, prof(w[b, 0]) * c.g_inh_ns, "s:", color="0.5", label="inhibitory, start")
        ax2.plot(k, prof(w[b, -1]) * c.g_inh_ns, "s-", color=f"C{b}", alpha=0.8,
                 label=f"inhibitory, end (drive {drive:g}, corr {corr[b]:.2f})")
    ax2.set(xlabel="input channel", ylabel="mean conductance step (nS)", title="weights per channel")
    ax2.legend(fontsize=7)
    fig.suptitle(f"{task.name}: {rule}", fontsize=9)
    with atomic_file(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=110)
