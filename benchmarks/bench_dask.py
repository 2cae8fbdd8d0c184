"""Dask evaluator: speed-up of 2 worker processes over 1, and overhead per generation (issue 14).

    python benchmarks/bench_dask.py [--repeats 5] [--population 1000]

Times one population evaluation (what a generation costs) with the local evaluator (1 and 2
threads) and with a LocalCluster of 1 and 2 worker processes (1 thread each), in one run:
  expensive: tasks/pca-network.toml (3 outputs + lateral weights, 4 trials x 3000 steps);
  cheap: tasks/oja.toml with 60 rules (1 neuron, 4 trials x 1500 steps).
Rules are random GP trees (seeded), the same for every evaluator; losses are checked equal.
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from rulesearch.evaluators import DaskEvaluator, LocalEvaluator
from rulesearch.gp import Search
from rulesearch.tasks import load_task, pack_rules

TASKS = Path(__file__).resolve().parent.parent / "tasks"


def population(task, n: int, seed: int = 0):
    search = Search(task, seed=seed)
    search.rng.seed(seed)
    from rulesearch.gp import _own_random
    with _own_random(search.rng):
        return pack_rules([search.lang.rule(search._new_individual()) for _ in range(n)])


def timed(evaluator, packed, repeats: int) -> tuple[float, np.ndarray]:
    evaluator(packed)  # warm (compiled, task in place)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = evaluator(packed)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result.losses


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--population", type=int, default=1000)
    args = ap.parse_args()
    cases = {"expensive (pca-network)": (load_task(TASKS / "pca-network.toml", seed=1), args.population),
             "cheap (oja)": (load_task(TASKS / "oja.toml", seed=1), 60)}
    for name, (task, n) in cases.items():
        packed = population(task, n)
        row = {}
        reference = None
        for label, make in (("local 1 thread", lambda: LocalEvaluator(task, 1)),
                            ("local 2 threads", lambda: LocalEvaluator(task, 2)),
                            ("dask 1 worker", lambda: DaskEvaluator(task, workers=1)),
                            ("dask 2 workers", lambda: DaskEvaluator(task, workers=2))):
            ev = make()
            try:
                row[label], losses = timed(ev, packed, args.repeats)
            finally:
                ev.close()
            if reference is None:
                reference = losses
            assert np.array_equal(losses, reference), f"{label}: losses differ from the local evaluator's"
        print(f"{name}: {n} rules per evaluation (median of {args.repeats})")
        for label, t in row.items():
            print(f"  {label:16s} {1000 * t:9.1f} ms")
        print(f"  dask speed-up, 2 workers over 1:  {row['dask 1 worker'] / row['dask 2 workers']:.2f}x")
        print(f"  local speed-up, 2 threads over 1: {row['local 1 thread'] / row['local 2 threads']:.2f}x")
        print(f"  dask 2 workers / local 2 threads: {row['dask 2 workers'] / row['local 2 threads']:.2f}x "
              f"(overhead {1000 * (row['dask 2 workers'] - row['local 2 threads']):+.1f} ms per generation)")


if __name__ == "__main__":
    main()
