"""Compare the selected rule of a run folder with a ground-truth rule, coefficient by coefficient.

    python benchmarks/coefficients.py RUN_DIR "x*y - 0.5*y**2*w" [--grammar hebbian]

Prints each monomial's true and found coefficient and the largest relative error; exit code 1 if
the two rules do not have the same monomials.
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import sympy

from rulesearch.grammar import find_grammar, load_grammar
from rulesearch.rules import parse_rule, symbol


def coefficients(expr, names):
    poly = sympy.Poly(sympy.expand(expr), *[symbol(n) for n in names])
    return {m: float(c) for m, c in zip(poly.monoms(), poly.coeffs())}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run")
    parser.add_argument("truth")
    parser.add_argument("--grammar", default="hebbian")
    args = parser.parse_args()
    grammar = load_grammar(find_grammar(args.grammar))
    row = next(r for r in csv.DictReader(open(Path(args.run) / "pareto.csv")) if r["selected"] == "1")
    found = coefficients(parse_rule(row["expression"], grammar).to_sympy()[0], grammar.names)
    truth = coefficients(parse_rule(args.truth, grammar).to_sympy()[0], grammar.names)
    print(f"selected: {row['expression']}   truth: {args.truth}")
    if set(found) != set(truth):
        print("different monomials")
        return 1
    worst = 0.0
    for m, c in truth.items():
        err = abs(found[m] - c) / abs(c)
        worst = max(worst, err)
        term = "*".join(f"{n}^{p}" if p > 1 else n for n, p in zip(grammar.names, m) if p) or "1"
        print(f"  {term:10s} true {c:+.4f}  found {found[m]:+.4f}  error {100 * err:.2f} %")
    print(f"largest coefficient error: {100 * worst:.2f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
