"""`rulesearch fit --family taylor` (default settings) over output activations, learning rates and
input ranges (issue 15, done-when 4, the fit half): data from the independent NumPy generator of
benchmarks/activity_cases.py (20 inputs, 5 outputs, 8 trials x 200 steps), noise-free.

    python benchmarks/fit_sweep.py [--seeds 2] [--noise 0]

A case is recovered when the selected terms are exactly the generating rule's monomials and every
coefficient is within 1 %. Rules whose weights leave the bound (|w| > 100) at a setting are skipped
and counted.
"""
from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
from pathlib import Path

import numpy as np
import sympy

sys.path.insert(0, str(Path(__file__).parent))
from activity_cases import generate_rule  # noqa: E402

from rulesearch.grammar import find_grammar, load_grammar  # noqa: E402
from rulesearch.results import read_csv  # noqa: E402
from rulesearch.rules import parse_rule, symbol  # noqa: E402
from rulesearch.runs import RunSpec, fit_run  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RULES = {"x*y - y**2*w": lambda x, y, w: x * y - y * y * w,
         "-x*y - 0.1*w": lambda x, y, w: -x * y - 0.1 * w,
         "(x - 0.5)*(y - 0.5)": lambda x, y, w: (x - 0.5) * (y - 0.5)}


def truth_terms(text: str) -> dict:
    g = load_grammar(find_grammar("hebbian"))
    poly = sympy.Poly(sympy.expand(parse_rule(text, g).to_sympy()[0]), *(symbol(n) for n in "xyw"))
    return {"theta_" + "_".join(f"{v}{p}" for v, p in zip("xyw", m)): float(c)
            for m, c in zip(poly.monoms(), poly.coeffs())}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--noise", type=float, default=0.0)
    a = p.parse_args()
    done = recovered = skipped = 0
    with tempfile.TemporaryDirectory() as tmp:
        for (text, f), act, eta, inputs, seed in itertools.product(
                RULES.items(), ("linear", "sigmoid", "tanh"), (0.01, 0.03, 0.1), ((0.0, 1.0), (-1.0, 1.0)),
                range(a.seeds)):
            try:
                arrays = generate_rule(text, f, act, eta, inputs, a.noise, seed)
            except FloatingPointError:
                skipped += 1
                print(f"{text:20s} {act:7s} eta {eta:<4} x in {inputs}: seed {seed}: weights leave the bound, skipped")
                continue
            path = Path(tmp) / "d.npz"
            np.savez(path, **arrays)
            sets = (f"network.activation={act}", f"network.eta={eta}", "network.n_in=20", "network.n_out=5",
                    'fit.family="taylor"')
            _, info, out = fit_run(RunSpec(str(ROOT / "tasks" / "fit-activity.toml"), sets, str(path), 0),
                                   Path(tmp) / f"fit-{done}", force=True)
            rows = {r["term"]: r for r in read_csv(out / "coefficients.csv")}
            truth = truth_terms(text)
            selected = {t for t, r in rows.items() if float(r["value"]) != 0.0}
            err = max(abs(float(rows[t]["value"]) - v) / abs(v) for t, v in truth.items())
            ok = selected == set(truth) and err <= 0.01
            done += 1
            recovered += ok
            print(f"{text:20s} {act:7s} eta {eta:<4} x in {inputs}: seed {seed}: {'recovered' if ok else 'MISSED'} "
                  f"({info['rule']}; largest error {100 * err:.2g} %, {info['elapsed_seconds']:.1f} s)", flush=True)
    print(f"recovered {recovered}/{done} fits ({100 * recovered / max(done, 1):.0f} %); {skipped} settings skipped "
          "(the generating rule's weights leave the bound)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
