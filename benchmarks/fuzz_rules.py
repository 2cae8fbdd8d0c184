"""Fuzz the rule parser, VM and LaTeX export with random and hostile strings (issue 17).

    python benchmarks/fuzz_rules.py [--n 100000] [--seed 0]

Prints how many strings were parsed and run, refused with one line, or crashed, and the slowest case.
"""
from __future__ import annotations

import argparse
import collections
from pathlib import Path

from rulesearch.fuzz import fuzz
from rulesearch.grammar import load_grammar

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    grammar = load_grammar(ROOT / "grammars" / "hebbian-full.toml")
    counts, slowest, crashes = collections.Counter(), (0.0, ""), []
    for text, outcome, seconds in fuzz(args.n, grammar, args.seed):
        counts[outcome.split(":")[0]] += 1
        slowest = max(slowest, (seconds, text[:60]))
        if outcome.startswith("crash"):
            crashes.append((text[:80], outcome))
    print(f"{args.n} strings: {dict(counts)}; slowest {slowest[0] * 1000:.1f} ms ({slowest[1]!r})")
    for text, outcome in crashes[:10]:
        print(f"  {outcome}: {text!r}")


if __name__ == "__main__":
    main()
