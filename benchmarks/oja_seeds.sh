#!/usr/bin/env bash
# Runs `rulesearch evolve tasks/oja.toml` for seeds 1..10 and reports the selected rule, whether it
# is Oja's rule up to a positive factor, and the wall time of each run (cold Numba cache on the first).
set -euo pipefail
out=${1:-results/oja-seeds}
mkdir -p "$out"
for seed in 0 1 2 3 4 5 6 7 8 9 10; do
  start=$(date +%s.%N)
  rulesearch evolve tasks/oja.toml --seed "$seed" --out "$out/seed$seed" > "$out/seed$seed.log" 2>&1
  end=$(date +%s.%N)
  python - "$out/seed$seed" "$(echo "$end - $start" | bc)" <<'PY'
import csv, sys, sympy
from rulesearch import load_grammar, parse_rule
from rulesearch.grammar import find_grammar
from rulesearch.rules import symbol
row = next(r for r in csv.DictReader(open(sys.argv[1] + "/pareto.csv")) if r["selected"] == "1")
rule = parse_rule(row["expression"], load_grammar(find_grammar("hebbian")))
x, y, w = (symbol(n) for n in "xyw")
ratio = sympy.simplify(rule.to_sympy()[0] / (x*y - y**2*w))
oja = bool(ratio.is_number and float(ratio) > 0)
print(f"{sys.argv[1]:28s} wall {float(sys.argv[2]):5.1f} s  oja={oja!s:5s}  {row['expression']}")
PY
done
