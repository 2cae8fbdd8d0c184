"""One simulation of the default recurrent E/I network (tasks/ei-network.toml: 400 E + 100 I LIF
neurons, four plastic pathways under doublet rules, Poisson drive) on one core, by rulesearch and
by Brian2 simulating the same network (same connectivity, weights, neuron, step order, rules)
for the same simulated time. Prints both wall times, the ratio, and both networks' rates.

Brian2 draws its own Poisson drive (PoissonInput), so spike trains differ; rates agree within
the drive's noise.

    NUMBA_NUM_THREADS=1 python benchmarks/bench_network_brian2.py [--seconds 6] [--target numpy]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
# a rule per pathway: (alpha, beta, gamma, kappa); pre: alpha + kappa*x_post, post: beta + gamma*x_pre
RULES = {"ee": (-0.1, 0.0, 0.2, 0.1), "ei": (0.0, 0.0, 0.1, 0.0), "ie": (-0.2, 0.0, 1.0, 1.0),
         "ii": (0.0, -0.05, 0.1, 0.0)}


def rule_text() -> str:
    return "; ".join(f"{p}.pre: {a} + {k}*x_post; {p}.post: {b} + {g}*x_pre" for p, (a, b, g, k) in RULES.items())


def brian2_network(task, drive_hz: float, target: str, seed: int = 0) -> tuple[float, float, float, float, np.ndarray]:
    """(wall seconds incl. code generation, wall seconds of the run alone, E rate, I rate in the
    task's scoring window (Hz), mean final weight per pathway (4,))."""
    import brian2 as b2
    c, s = task.config, task.state
    b2.prefs.codegen.target = target
    b2.start_scope()
    b2.seed(seed)
    ms, mV, nS, pF, Hz = b2.ms, b2.mV, b2.nS, b2.pF, b2.Hz
    b2.defaultclock.dt = c.dt_ms * ms
    ns = dict(C=c.capacitance_pf * pF, gl=c.g_leak_ns * nS, el=c.e_leak_mv * mV, ee=c.e_exc_mv * mV,
              ei=c.e_inh_mv * mV, vt=c.v_threshold_mv * mV, vr=c.v_reset_mv * mV, taue=c.tau_exc_ms * ms,
              taui=c.tau_inh_ms * ms, eta=c.eta, wmax=c.w_max, taupre=c.tau_pre_ms * ms, taupost=c.tau_post_ms * ms)
    t0 = time.perf_counter()
    neurons = b2.NeuronGroup(c.n, """dv/dt = (gl*(el - v) + ge*(ee - v) + gi*(ei - v)) / C : volt (unless refractory)
                                     dge/dt = -ge / taue : siemens
                                     dgi/dt = -gi / taui : siemens""",
                             threshold="v > vt", reset="v = vr", refractory=c.refractory_ms * ms,
                             method="exponential_euler", namespace=ns)
    neurons.v = c.e_leak_mv * mV
    drive = b2.PoissonInput(neurons, "ge", N=c.n_ext, rate=drive_hz * Hz, weight=c.ext_weight * c.g_unit_ns * nS)
    groups = {"e": neurons[:c.n_exc], "i": neurons[c.n_exc:]}
    synapses = []
    for k, p in enumerate(("ee", "ei", "ie", "ii")):
        a, b_, g, kap = RULES[p]
        on = s.syn_path == k
        unit = c.g_unit()[k]
        target_var = "ge" if p[0] == "e" else "gi"
        syn = b2.Synapses(groups[p[0]], groups[p[1]], """w : 1
                          dapre/dt = -apre / taupre : 1 (event-driven)
                          dapost/dt = -apost / taupost : 1 (event-driven)""",
                          on_pre=f"""apre += 1
                                     w = clip(w + eta * ({a} + {kap} * apost), 0, wmax)
                                     {target_var}_post += w * {unit} * nS""",
                          on_post=f"""apost += 1
                                      w = clip(w + eta * ({b_} + {g} * apre), 0, wmax)""", namespace=ns)
        off_pre = 0 if p[0] == "e" else c.n_exc
        off_post = 0 if p[1] == "e" else c.n_exc
        syn.connect(i=s.syn_pre[on] - off_pre, j=s.syn_post[on] - off_post)
        syn.w = s.w0[on]
        synapses.append(syn)
    monitor = b2.SpikeMonitor(neurons)
    net = b2.Network(neurons, drive, *synapses, monitor)
    duration = s.n_steps * c.dt_ms * ms
    net.run(1 * c.dt_ms * ms)  # code generation and compilation
    t1 = time.perf_counter()
    net.run(duration - c.dt_ms * ms)
    t2 = time.perf_counter()
    # rates over the scoring window, as rulesearch's metrics (plasticity changes them over the run)
    scored = np.asarray(monitor.t / ms) >= s.score_from * c.dt_ms - 1e-9
    counts = np.bincount(np.asarray(monitor.i)[scored], minlength=c.n)
    secs = (s.n_steps - s.score_from) * c.dt_ms * 1e-3
    weights = np.array([float(np.mean(syn.w[:])) for syn in synapses])
    return t2 - t0, t2 - t1, counts[:c.n_exc].mean() / secs, counts[c.n_exc:].mean() / secs, weights


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=None, help="simulated seconds (default: the task's 6 s)")
    ap.add_argument("--drive", type=float, default=10.0, help="external rate per input (Hz)")
    ap.add_argument("--target", default="numpy", help="Brian2 code-generation target (numpy, cython)")
    ap.add_argument("--repeats", type=int, default=3, help="input seeds per simulator (rates vary between them)")
    args = ap.parse_args()
    import brian2
    import numba
    from rulesearch.sims.lif_network import network_metrics
    from rulesearch.tasks import load_task, pack_rules
    over = () if args.seconds is None else (f"inputs.plasticity_s={max(args.seconds - 1, 0)}", "inputs.score_s=1")
    task = load_task(ROOT / "tasks" / "ei-network.toml", over)
    numba.set_num_threads(1)
    packed = pack_rules([task.parse(rule_text())])
    task.sim.simulate(task, packed, drive_rate_hz=args.drive)  # compile (or load the cache) outside the timing
    times, ours = [], []
    for seed in range(args.repeats):
        t0 = time.perf_counter()
        res = task.sim.simulate(task, packed, drive_rate_hz=args.drive, seeds=seed)
        times.append(time.perf_counter() - t0)
        m = network_metrics(task, res)
        ours.append([m["rate_e"][0], m["rate_i"][0]] + [m[f"w_{p}"][0] for p in RULES])
    theirs, b2_times = [], []
    for seed in range(args.repeats):
        total, run, re_, ri, w = brian2_network(task, args.drive, args.target, seed)
        b2_times.append((total, run))
        theirs.append([re_, ri, *w])
    ours, theirs = np.array(ours), np.array(theirs)
    secs = task.state.n_steps * task.config.dt_ms * 1e-3
    score = (task.state.n_steps - task.state.score_from) * task.config.dt_ms * 1e-3
    ours_t = float(np.median(times))
    total, run = np.median(np.array(b2_times), axis=0)

    def row(x):
        mean, sd = x.mean(axis=0), x.std(axis=0)
        return (f"E {mean[0]:.1f} +- {sd[0]:.1f} Hz, I {mean[1]:.1f} +- {sd[1]:.1f} Hz; mean final weights "
                + ", ".join(f"{p} {mean[2 + k]:.3f}" for k, p in enumerate(RULES)))
    print(f"default network ({task.config.n_exc} E + {task.config.n_inh} I, {len(task.state.w0)} plastic synapses), "
          f"{secs:g} s simulated, one core; rates over the last {score:g} s, mean +- sd over {args.repeats} input seeds")
    print(f"  rulesearch: {ours_t:.3f} s (median of {args.repeats}); {row(ours)}")
    print(f"  Brian2 {brian2.__version__} ({args.target}): {run:.2f} s run ({total:.2f} s with code generation), "
          f"median of {args.repeats}; {row(theirs)}")
    print(f"  ratio: rulesearch {run / ours_t:.1f}x faster than Brian2's run ({total / ours_t:.1f}x incl. code "
          "generation)")


if __name__ == "__main__":
    main()
