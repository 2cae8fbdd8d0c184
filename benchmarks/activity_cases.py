"""Activity data from a small NumPy generator independent of rulesearch's simulator (the cases of
issue 15): 20 inputs uniform in [0, 1], 5 outputs, 8 trials of 200 steps, eta 0.05, initial weights
uniform in [0, 0.2]; y = act(W x) recorded before each update W += eta * f(x_j, y_i, W_ij).

    python benchmarks/activity_cases.py OUT.npz {hebb_centred|decay_sigmoid} [--noise 0.1] [--seed 0]
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np

CASES = {  # name: (rule text, activation, f)
    "hebb_centred": ("(x - 0.5)*(y - 0.5)", "tanh", lambda x, y, w: (x - 0.5) * (y - 0.5)),
    "decay_sigmoid": ("-x*y - 0.1*w", "sigmoid", lambda x, y, w: -x * y - 0.1 * w),
}
ACT = {"tanh": np.tanh, "sigmoid": lambda s: 1.0 / (1.0 + np.exp(-s)), "linear": lambda s: s}


def generate(case: str, noise: float = 0.0, seed: int = 0, trials: int = 8, steps: int = 200, n_in: int = 20,
             n_out: int = 5, eta: float = 0.05) -> dict:
    """Arrays x (trials, steps, n_in), y (trials, steps, n_out), w0 (trials, n_out, n_in) and meta (JSON).
    noise: Gaussian measurement noise, std in units of the noise-free activity's std."""
    text, activation, f = CASES[case]
    return generate_rule(text, f, activation, eta, (0.0, 1.0), noise, seed, trials, steps, n_in, n_out)


def generate_rule(text: str, f, activation: str, eta: float, inputs: tuple[float, float] = (0.0, 1.0),
                  noise: float = 0.0, seed: int = 0, trials: int = 8, steps: int = 200, n_in: int = 20,
                  n_out: int = 5) -> dict:
    """Like ``generate`` for any rule f(x, y, w) (NumPy), output activation and input range
    (inputs uniform in ``inputs``); y is NaN-free or the function raises FloatingPointError."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(*inputs, (trials, steps, n_in))
    w0 = rng.uniform(0.0, 0.2, (trials, n_out, n_in))
    w = w0.copy()
    y = np.empty((trials, steps, n_out))
    with np.errstate(all="raise"):
        for t in range(steps):
            y[:, t] = ACT[activation](np.einsum("bij,bj->bi", w, x[:, t]))
            w = w + eta * f(x[:, t, None, :], y[:, t, :, None], w)
    if not np.all(np.isfinite(y)) or np.abs(w).max() > 100:
        raise FloatingPointError(f"{text} leaves the weights' bound")
    if noise > 0:
        y = y + rng.normal(0.0, noise * y.std(), y.shape)
    meta = {"rule": text, "activation": activation, "eta": eta, "noise": noise, "seed": seed,
            "inputs": list(inputs), "generator": "benchmarks/activity_cases.py"}
    return {"x": x, "y": y, "w0": w0, "meta": np.array(json.dumps(meta))}


def overrides(case: str, eta: float = 0.05) -> list[str]:
    """The --set options that describe these data to tasks/fit-activity.toml."""
    return [f"network.activation={CASES[case][1]}", f"network.eta={eta}", "network.n_in=20", "network.n_out=5"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out")
    p.add_argument("case", choices=sorted(CASES))
    p.add_argument("--noise", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    np.savez(a.out, **generate(a.case, a.noise, a.seed))
    print(f"wrote {a.out}: {CASES[a.case][0]} ({CASES[a.case][1]} outputs), noise {a.noise}; fit with --set "
          + " --set ".join(overrides(a.case)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
