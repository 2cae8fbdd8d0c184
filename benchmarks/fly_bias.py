"""Why the fly Taylor fits were low: the one-term maximum-likelihood estimate of x*(r - rbar) under
three likelihoods, on flies from rulesearch's sampler and from an independent NumPy generator.

    python benchmarks/fly_bias.py [--seeds 1 2 3 4 5 6 7 8] [--out results/fly-bias] [--set network.eta=1 ...]

Per seed, 18 flies from x*(r - rbar) (tasks/fly-choice.toml's protocol: 2 odours at 0.75 plus input
noise of variance 0.015, 10 tanh units, 3 blocks of 80 trials, eta 0.1, readout 1; --set changes the
task's settings, e.g. network.eta and protocol.readout, for both generators and all fits; --forget C
generates x*(r - rbar) - C*w and fits both coefficients). The coefficient c of
c*x*(r - rbar) is fitted by Newton steps on the exact gradient and Fisher information of:
  exact    the flies' recorded inputs and initial weights (the generating model, nothing unknown);
  filter   the task's default likelihood (odour means, the weight filter tracking the drift that
           the unrecorded input noise drives; filter_sensitivity.py);
  nofilter the deterministic model of the mean inputs (input noise only averaged out of P(accept)).
The independent generator (``generate`` below) shares no code with rulesearch: it writes the
arrays of the NPZ choice schema, which rulesearch loads as a user's file. Writes bias.csv.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from rulesearch.choices import load_choices
from rulesearch.results import write_csv
from rulesearch.sims.choice import simulate_choices
from rulesearch.sims.choice.filter_sensitivity import filtered_likelihood
from rulesearch.sims.choice.sensitivity import taylor_likelihood
from rulesearch.tasks import load_task, with_data

TASK = str(Path(__file__).resolve().parent.parent / "tasks" / "fly-choice.toml")
TERM = np.array([[1, 0, 0, 1]])  # x * (r - rbar)


def generate(seed: int, pattern_of: np.ndarray, animals=18, n_out=10, eta=0.1, mean=0.75, var=0.015, init=0.01,
             blocks=((0.2, 0.8), (0.9, 0.1), (0.2, 0.8)), per_block=80, window=10, readout=1.0, forget=0.0) -> dict:
    """Flies under x*(r - rbar) - forget*w, plain NumPy: the README's protocol. pattern_of (2, n_in)
    0/1: the inputs each odour drives; readout: the gain of every unit onto the logit. Returns the
    NPZ schema's arrays (with inputs and w0)."""
    rng = np.random.default_rng([seed, 7])
    n_in = pattern_of.shape[1]
    rows = {"animal": [], "odour": [], "decision": [], "reward": [], "inputs": []}
    w0 = init * rng.standard_normal((animals, n_out, n_in))
    for a in range(animals):
        W, available, history = w0[a].copy(), np.zeros(2), []
        for p_reward in blocks:
            for _ in range(per_block):
                available = np.maximum(available, rng.random(2) < np.asarray(p_reward))
                rbar = sum(history[-window:]) / window
                while True:
                    o = int(rng.random() < 0.5)
                    x = mean * pattern_of[o] + np.sqrt(var) * rng.standard_normal(n_in)
                    accept = rng.random() < 1.0 / (1.0 + np.exp(-readout * np.tanh(W @ x).sum()))
                    r = available[o] if accept else 0.0
                    for key, v in zip(rows, (a, o, int(accept), r, x)):
                        rows[key].append(v)
                    if accept:
                        available[o] = 0.0
                        history.append(r)
                        W += eta * (x[None, :] * (r - rbar) - forget * W)
                        break
    return {k: np.array(v) for k, v in rows.items()} | {"w0": w0}


def newton(f, c) -> tuple[np.ndarray, np.ndarray]:
    """The MLE of the coefficients (start c, (P,)) and their standard errors (Fisher information).
    Fisher-scoring steps, halved while they raise the NLL or blow the weights up (at large learning
    rates and readout gains the NLL is far from quadratic)."""
    c = np.array(c, float)
    nll, g, H, _ = f(c)
    for _ in range(50):
        step = -np.linalg.solve(H, g)
        for _ in range(30):
            new = f(c + step)
            if (new[0] <= nll and not new[3]) or np.abs(step).max() < 1e-10:
                break
            step /= 2
        c += step
        nll, g, H, _ = new
        if np.abs(step).max() < 1e-8:
            break
    return c, np.sqrt(np.diag(np.linalg.inv(H)))


def estimates(task, terms: np.ndarray, start: np.ndarray) -> dict:
    s, c = task.state, task.config
    a = s.choices
    tv = (a.r - a.rbar)[:, :, None]
    out = {}
    if s.recorded_inputs:
        out["exact"] = newton(lambda t: taylor_likelihood(t, terms, tv, a, s.w0, c.readout, 0.0,
                                                          task.etas[0], c.weight_bound), start)
        return out
    out["filter"] = newton(lambda t: filtered_likelihood(t, terms, tv, a, s.w0, c.readout,
                                                         c.protocol.odour_variance, c.init_std ** 2, task.etas[0],
                                                         c.weight_bound), start)
    out["nofilter"] = newton(lambda t: taylor_likelihood(t, terms, tv, a, s.w0, c.readout,
                                                         c.protocol.odour_variance, task.etas[0], c.weight_bound),
                             start)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5, 6, 7, 8])
    ap.add_argument("--out", default="results/fly-bias")
    ap.add_argument("--set", nargs="*", default=[], help="task settings KEY=VALUE (e.g. network.eta=1 protocol.readout=2)")
    ap.add_argument("--forget", type=float, default=0.0,
                    help="generate x*(r - rbar) - FORGET*w and fit both coefficients (column 'KIND_w': the w term's)")
    args = ap.parse_args()
    terms = TERM if args.forget == 0 else np.vstack([TERM, [[0, 0, 1, 0]]])
    start = np.array([0.8] + ([-0.8 * args.forget] if args.forget else []))
    rule = "x*(r - rbar)" if args.forget == 0 else f"x*(r - rbar) - {args.forget:g}*w"
    rows = []
    tmp = Path(tempfile.mkdtemp())
    for seed in args.seeds:
        for source in ("rulesearch", "numpy"):
            base = load_task(TASK, args.set, seed=seed, require_data=False)
            if source == "rulesearch":
                recorded = load_task(TASK, args.set + ["protocol.record_inputs=true"], seed=seed, require_data=False)
                data = simulate_choices(recorded, recorded.parse(rule), seed=seed)
                np.savez(tmp / "d.npz", animal=data.animal, odour=data.odour, decision=data.decision,
                         reward=data.reward, inputs=data.inputs, w0=data.w0)
            else:  # the task's odour patterns, so that the fit without recorded inputs sees the same odours
                arrays = generate(seed, (base.state.patterns > 0).astype(float), eta=base.etas[0],
                                  readout=base.config.protocol.readout, forget=args.forget)
                np.savez(tmp / "d.npz", **arrays)
            full = dict(np.load(tmp / "d.npz", allow_pickle=False))
            row = {"seed": seed, "generator": source}
            row.update(estimates(with_data(base, load_choices(tmp / "d.npz")), terms, start))
            np.savez(tmp / "d.npz", **{k: full[k] for k in ("animal", "odour", "decision", "reward")})
            row.update(estimates(with_data(base, load_choices(tmp / "d.npz")), terms, start))
            kinds = ("exact", "filter", "nofilter")
            rows.append({"seed": seed, "generator": source,
                         **{f"{k}": round(float(row[k][0][0]), 4) for k in kinds},
                         **{f"{k}_se": round(float(row[k][1][0]), 4) for k in kinds},
                         **({f"{k}_w": round(float(row[k][0][1]), 4) for k in kinds} if args.forget else {}),
                         **({f"{k}_w_se": round(float(row[k][1][1]), 4) for k in kinds} if args.forget else {})})
            print(rows[-1], flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "bias.csv", tuple(rows[0]), [list(r.values()) for r in rows])
    for source in ("rulesearch", "numpy"):
        sel = [r for r in rows if r["generator"] == source]
        print(source, {k: f"mean {np.mean([r[k] for r in sel]):.4f} (range {min(r[k] for r in sel):.3f}-"
                          f"{max(r[k] for r in sel):.3f})" for k in rows[0] if k not in ("seed", "generator")})


if __name__ == "__main__":
    main()
