"""Time `rulesearch evolve tasks/oja.toml` per seed, cold and warm, and check that it finds Oja's rule.

Cold: the first run compiles every Numba kernel into an empty cache directory (NUMBA_CACHE_DIR),
as the README's first command does on a fresh install. Warm: seeds 0..10 with that cache filled.
Each run is a separate process timed from the outside (wall time, start-up included), next to the
search time the run records in run.json.

    python benchmarks/bench_evolve.py [--seeds 0-10] [--task tasks/oja.toml] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import sympy

from rulesearch.grammar import find_grammar, load_grammar
from rulesearch.rules import parse_rule, symbol

ROOT = Path(__file__).resolve().parent.parent


def is_oja(expression: str) -> bool:
    """Oja's rule up to a positive factor."""
    rule = parse_rule(expression, load_grammar(find_grammar("hebbian")))
    x, y, w = (symbol(n) for n in "xyw")
    ratio = sympy.simplify(rule.to_sympy()[0] / (x * y - y**2 * w))
    return bool(ratio.is_number and float(ratio) > 0)


def run(task: str, seed: int, out: Path, cache: str) -> dict:
    env = dict(os.environ, NUMBA_CACHE_DIR=cache)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "rulesearch.cli", "evolve", task, "--seed", str(seed),
                           "--out", str(out)], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"seed {seed} failed:\n{done.stderr}")
    record = json.loads((out / "run.json").read_text())
    return {"seed": seed, "wall_s": wall, "search_s": record["search_seconds_total"],
            "selected": record["selected"], "oja": is_oja(record["selected"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0-10", help="first-last (inclusive)")
    parser.add_argument("--task", default=str(ROOT / "tasks" / "oja.toml"))
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    first, last = (int(v) for v in args.seeds.split("-"))
    with tempfile.TemporaryDirectory() as tmp:
        cache = str(Path(tmp) / "numba-cache")
        cold = run(args.task, first, Path(tmp) / "cold", cache)
        print(f"cold (empty Numba cache), seed {first}: wall {cold['wall_s']:.1f} s, search {cold['search_s']:.1f} s, "
              f"selected {cold['selected']}")
        warm = []
        for seed in range(first, last + 1):
            r = run(args.task, seed, Path(tmp) / f"seed{seed}", cache)
            warm.append(r)
            print(f"warm seed {seed:2d}: wall {r['wall_s']:5.1f} s  search {r['search_s']:5.1f} s  "
                  f"oja={r['oja']!s:5s}  {r['selected']}")
    found = sum(r["oja"] for r in warm)
    figures = {"cold": cold, "warm": warm, "found": found, "runs": len(warm),
               "median_wall_s": statistics.median(r["wall_s"] for r in warm),
               "median_search_s": statistics.median(r["search_s"] for r in warm)}
    print(f"Oja's rule found in {found}/{len(warm)} seeds; median wall {figures['median_wall_s']:.1f} s "
          f"(target <= 10 s), median search {figures['median_search_s']:.1f} s; cold first run "
          f"{cold['wall_s']:.1f} s (target <= 25 s)")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
