"""Spiking throughput, side by side in one run: a population of 64 rules on the 1000-afferent
neuron of tasks/istdp.toml, simulated by rulesearch (one call, all cores) and by Brian2 (its
default code-generation target, the same 64 rules one after another on one network restored
between runs), on the same input spikes. Prints simulated seconds per wall-clock second and the
ratio, and the time of one 10 s trial under one rule on one core.

    python benchmarks/bench_lif_brian2.py [--seconds 2] [--rules 64]
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def rules(n: int) -> list[str]:
    """n Vogels-like rules: pre: x_post - a; post: b * x_pre."""
    offsets = np.linspace(0.1, 0.3, n)
    gains = np.linspace(0.5, 1.5, n)[::-1]
    return [f"pre: x_post - {o:.4f}; post: {g:.4f}*x_pre" for o, g in zip(offsets, gains)]


def brian2_population(task, texts) -> tuple[float, float, np.ndarray]:
    """(wall seconds of the first rule, incl. code generation, wall seconds of the rest, spike counts)."""
    import brian2 as b2
    from rulesearch.sims.lif.brian2_twin import vogels_network
    c, s = task.config, task.state
    net, inh, monitor = vogels_network(b2, task)
    net.store()
    duration = s.n_steps * c.dt_ms * b2.ms
    counts, first, rest = [], 0.0, 0.0
    for k, text in enumerate(texts):
        # (locals named a or b would clash with the synapses' a and b in Brian2's namespace lookup)
        offset = float(text.split("- ")[1].split(";")[0])
        gain = float(text.split("post: ")[1].split("*")[0])
        net.restore()
        inh.a, inh.b = offset, gain
        t0 = time.perf_counter()
        net.run(duration)
        dt = time.perf_counter() - t0
        if k == 0:
            first = dt
        else:
            rest += dt
        counts.append(monitor.num_spikes)
    return first, rest, np.array(counts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=2.0, help="simulated seconds per rule (default 2)")
    ap.add_argument("--rules", type=int, default=64)
    args = ap.parse_args()
    import brian2
    import numba
    from rulesearch.tasks import load_task
    task = load_task(ROOT / "tasks" / "istdp.toml", (f"inputs.trial_s={args.seconds}", "inputs.score_s=0.1",
                                                       "inputs.drives=[1.0]"))
    texts = rules(args.rules)
    population = [task.parse(t) for t in texts]
    task.simulate(population[:2])  # compile (or load the cache) outside the timing
    t0 = time.perf_counter()
    ours = task.simulate(population)
    ours_s = time.perf_counter() - t0
    simulated = args.rules * args.seconds

    one = load_task(ROOT / "tasks" / "istdp.toml", ("inputs.trial_s=10", "inputs.score_s=1", "inputs.drives=[1.0]"))
    numba.set_num_threads(1)
    one.simulate([one.parse(texts[0])])
    t0 = time.perf_counter()
    one.simulate([one.parse(texts[0])])
    single = time.perf_counter() - t0
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)

    first, rest, counts = brian2_population(task, texts)
    theirs_s = first + rest
    agree = np.array_equal(counts, ours.spikes_total[:, 0, 0])
    print(f"{args.rules} rules x {args.seconds:g} s of the 1000-afferent LIF neuron, {os.cpu_count()} cores")
    print(f"  rulesearch (one call, {numba.config.NUMBA_NUM_THREADS} threads): {ours_s:.3f} s wall, "
          f"{simulated / ours_s:.0f} simulated s per wall s")
    print(f"  Brian2 {brian2.__version__} ({brian2.prefs.codegen.target} target, rules one after another): "
          f"{theirs_s:.2f} s wall (first rule {first:.2f} s incl. code generation), "
          f"{simulated / theirs_s:.1f} simulated s per wall s; without the first rule "
          f"{(simulated - args.seconds) / max(rest, 1e-9):.1f}")
    print(f"  ratio: rulesearch {theirs_s / ours_s:.0f}x Brian2 (without Brian2's first rule: "
          f"{rest / (ours_s * (args.rules - 1) / args.rules):.0f}x)")
    print(f"  output spike counts identical for all {args.rules} rules: {agree}")
    print(f"  one 10 s trial under one rule on one core: {single:.3f} s")


if __name__ == "__main__":
    main()
