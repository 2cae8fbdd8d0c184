"""Rule VM throughput, side by side in one run (ratios, not absolute times, are the point).

Oja's rule on one linear neuron with 100 inputs for 1000 steps, through
  (a) the rule VM inside the rate simulator (one thread),
  (b) a hand-written Numba kernel with the rule hard-coded (one thread),
  (c) DEAP's gp.compile of the same tree, called with NumPy arrays at every step,
and population evaluation of the Oja task on 1 thread against 2 threads.

    python benchmarks/bench_vm.py [--repeats 7] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numba
import numpy as np
from deap import gp
from numba import njit

from rulesearch.grammar import find_grammar, load_grammar
from rulesearch.rules import parse_rule
from rulesearch.sims import rate
from rulesearch.tasks import load_task, pack_rules
from rulesearch.vm import FASTMATH

N_IN, STEPS, ETA = 100, 1000, 0.005


@njit(cache=True, fastmath=FASTMATH)
def oja_hand_written(x, w0, eta):
    """The same simulation as the VM path with dw = x*y - y*y*w written out."""
    steps, n_in = x.shape
    w = w0.copy()
    for t in range(steps):
        y = 0.0
        for j in range(n_in):
            y += w[j] * x[t, j]
        for j in range(n_in):
            w[j] += eta * (x[t, j] * y - y * y * w[j])
    return w


def deap_numpy(tree_text: str, x, w0, eta):
    pset = gp.PrimitiveSet("MAIN", 3)
    pset.renameArguments(ARG0="x", ARG1="y", ARG2="w")
    for name, fn in (("add", np.add), ("sub", np.subtract), ("mul", np.multiply), ("square", np.square)):
        pset.addPrimitive(fn, 2 if name != "square" else 1, name=name)
    f = gp.compile(gp.PrimitiveTree.from_string(tree_text, pset), pset)
    w = w0.copy()
    for t in range(x.shape[0]):
        y = w @ x[t]
        w = w + eta * f(x[t], y, w)
    return w


def best_time(fn, repeats: int, inner: int, clock=time.thread_time) -> float:
    """Best of ``repeats`` of ``inner`` calls, per call. The single-thread paths are timed by this
    thread's CPU time, which other processes on a shared machine barely disturb; the thread
    comparison needs wall time (``clock=time.perf_counter``)."""
    best = float("inf")
    for _ in range(repeats):
        t0 = clock()
        for _ in range(inner):
            fn()
        best = min(best, (clock() - t0) / inner)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    x = rng.normal(size=(1, STEPS, N_IN))
    w0 = rng.normal(0, 0.1, size=(1, 1, N_IN))
    grammar = load_grammar(find_grammar("hebbian"))
    rule = parse_rule("x*y - square(y)*w", grammar)
    packed = pack_rules([rule])
    updates = STEPS * N_IN

    numba.set_num_threads(1)
    run_vm = lambda: rate.simulate(packed, x, w0, ETA, "linear", 1e6)  # noqa: E731
    run_hand = lambda: oja_hand_written(x[0], w0[0, 0], ETA)  # noqa: E731
    run_deap = lambda: deap_numpy("sub(mul(x, y), mul(square(y), w))", x[0], w0[0, 0], ETA)  # noqa: E731
    w_vm, w_hand, w_deap = run_vm().w_final[0, 0, 0], run_hand(), run_deap()
    assert np.allclose(w_vm, w_hand) and np.allclose(w_vm, w_deap), "the three paths disagree"

    t_vm = best_time(run_vm, args.repeats, 50)
    t_hand = best_time(run_hand, args.repeats, 50)
    t_deap = best_time(run_deap, max(2, args.repeats // 3), 2)

    # Population evaluation: the Oja task, 400 rules (copies of four rules), 1 vs 2 threads.
    task = load_task(Path(__file__).resolve().parent.parent / "tasks" / "oja.toml", seed=1)
    texts = ["x*y - square(y)*w", "y*(x - y*w)", "x - w*y", "0.5*(x*y - square(y)*w)"]
    population = pack_rules([task.parse(t) for t in texts] * 100)
    task.evaluate_packed(population)
    times = {}
    for threads in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
        numba.set_num_threads(threads)
        times[threads] = best_time(lambda: task.evaluate_packed(population), max(3, args.repeats // 2), 1,
                                   time.perf_counter)
    pop_updates = 400 * task.config.trials * task.config.steps * task.config.n_in

    figures = {
        "vm_updates_per_s": updates / t_vm,
        "hand_written_updates_per_s": updates / t_hand,
        "deap_numpy_updates_per_s": updates / t_deap,
        "vm_over_hand_written": t_hand / t_vm,
        "vm_over_deap_numpy": t_deap / t_vm,
        "population_1_thread_updates_per_s": pop_updates / times[1],
        "population_2_threads_updates_per_s": pop_updates / times[max(times)],
        "population_speedup_2_threads": times[1] / times[max(times)],
    }
    print(f"Oja's rule, 1 neuron x {N_IN} inputs, {STEPS} steps (synapse updates per second of CPU time, 1 thread)")
    print(f"  (a) rule VM             {figures['vm_updates_per_s']:12.3e}")
    print(f"  (b) hand-written Numba  {figures['hand_written_updates_per_s']:12.3e}")
    print(f"  (c) DEAP compile+NumPy  {figures['deap_numpy_updates_per_s']:12.3e}")
    print(f"  VM / hand-written = {figures['vm_over_hand_written']:.2f}   (target >= 0.5, aim 0.67)")
    print(f"  VM / DEAP+NumPy   = {figures['vm_over_deap_numpy']:.0f}x  (target >= 50x)")
    print(f"Population of 400 rules on tasks/oja.toml ({pop_updates:.2e} synapse updates, wall time)")
    print(f"  1 thread  {figures['population_1_thread_updates_per_s']:.3e} /s")
    print(f"  {max(times)} threads {figures['population_2_threads_updates_per_s']:.3e} /s")
    print(f"  speed-up  {figures['population_speedup_2_threads']:.2f}x   (target >= 1.8x on 2 cores, quiet machine)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(figures, fh, indent=2)


if __name__ == "__main__":
    main()
