"""Convert the published code's generated experiments (MetaLearnPlasticity, JAX) into rulesearch
choice data, and optionally time its own default fit on the same flies (issue 18).

Runs in the published code's own environment, not rulesearch's (it imports neither rulesearch nor
numba; only numpy and scipy to write the files):

    python3 -m venv /work/venv-mlp
    /work/venv-mlp/bin/pip install "jax==0.4.20" "jaxlib==0.4.20" "numpy<2" "scipy==1.11.4" \\
        "omegaconf==2.3.0" "optax==0.1.7" "chex==0.1.85" pandas scikit-learn
    git clone https://github.com/yashsmehta/MetaLearnPlasticity /path/to/MetaLearnPlasticity
    /work/venv-mlp/bin/python benchmarks/published_experiments.py --code /path/to/MetaLearnPlasticity \\
        --out flies-published [--flies 3] [--fly-id 1] [--activity] [--inputs] [--fit]

Newer jax, scipy (>= 1.13: no scipy.linalg.tril) or numpy 2 break the published code; optax 0.1.7
without the chex pin pulls in a newer jax.

What it does: the published trainer's own data path at its default configuration (run.py at
commit 69864ae: 3 training flies, 3 blocks of 80 trials, reward ratios (0.2, 0.8), (0.9, 0.1),
(0.2, 0.8), layer sizes [2, 10, 1], input mean 0.75, input_variance 0.05, generating rule
X1R1W0 = x*(r - rbar)), with ``--flies`` training flies (``num_train``); the PRNG keys are split
exactly as ``trainer.train`` splits them, so the flies are the ones its fit sees. Each fly is
written as a per-fly .mat file (X one-hot odour per encounter, Y decisions, R the reward of each
acceptance) plus, with ``--activity``, the model output it recorded per encounter (the neural mode's
``neural_recordings``: P(accept)) and, with ``--inputs``, its recorded input vectors. Beware: the
published generator records a *resampled* input (a second noise draw of the same odour), not the
input the model saw and learned from, so ``--inputs`` gives rulesearch inputs with errors in them;
without it rulesearch models the unrecorded noise itself (the weight filter). The odour of each
encounter is the one whose mean pattern is nearest to the recorded input.

Facts about the published model this relies on (its source): ``input_variance`` is used as a
standard deviation (``x @ sigmas`` with ``sigmas = input_variance * I``), so the input noise
variance is 0.05**2 = 0.0025; the learning rate is 1 / input_dim = 0.5; the fixed readout is
5 / hidden_dim = 0.5 per unit; initial weights 0.01 N(0, 1); plasticity acts at each acceptance on
the first layer with f(x, r - rbar, w), rbar the mean of the last 10 rewards (zeros before any).
Its evaluation flies (``num_eval``) are generated from the next keys of the same chain, so its
default evaluation flies 0 and 1 duplicate training flies 1 and 2: they are not converted.
tasks/fly-choice-published.toml holds these numbers.

``--fit`` then runs the published ``trainer.train`` at its defaults on the same flies (250 epochs
of Adam, lr 1e-3, L1 1e-2, the 18-term Taylor mask) with evaluation off, and records its wall time
and fitted coefficients in meta.json (``published_fit``).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy.io import savemat

# run.py's defaults at commit 69864ae (kept here: run.py builds them under __main__)
DEFAULTS = {
    "num_train": 3, "num_eval": 5, "num_epochs": 250, "trials_per_block": 80, "num_blocks": 3,
    "reward_ratios": ((0.2, 0.8), (0.9, 0.1), (0.2, 0.8)), "log_expdata": True, "log_interval": 25,
    "use_experimental_data": False, "flyid": 1, "fit_data": "behavior", "neural_recording_sparsity": 1.0,
    "measurement_noise_scale": 0.0, "layer_sizes": "[2, 10, 1]", "input_firing_mean": 0.75,
    "input_variance": 0.05, "l1_regularization": 1e-2, "generation_coeff_init": "X1R1W0",
    "generation_model": "volterra", "plasticity_coeff_init": "random", "plasticity_model": "volterra",
    "meta_mlp_layer_sizes": [3, 10, 1], "moving_avg_window": 10, "data_dir": "../data/", "log_dir": "logs/",
    "exp_name": "eval", "reward_term": "reward",
}


def config(flies: int, fly_id: int, log_dir: str, epochs: int | None = None):
    from omegaconf import OmegaConf
    coeff_mask = np.zeros((3, 3, 3))
    coeff_mask[:, :, 0] = 1  # the published default: w**0 and w**1 terms of x, (r - rbar) up to power 2
    coeff_mask[:, :, 1] = 1
    cfg = dict(DEFAULTS, num_train=flies, flyid=fly_id, log_dir=log_dir, trainable_coeffs=int(coeff_mask.sum()),
               coeff_mask=coeff_mask.tolist())
    if epochs is not None:
        cfg["num_epochs"] = epochs
    return OmegaConf.create(cfg)


def write_fly(path: Path, odour, decision, reward, activity=None, inputs=None) -> None:
    """One per-fly .mat file in rulesearch's schema, written to a temporary name and renamed."""
    X = np.zeros((len(odour), 2))
    X[np.arange(len(odour)), odour] = 1.0
    variables = {"X": X, "Y": decision.astype(float)[:, None], "R": reward.astype(float)[:, None]}
    if activity is not None:
        variables["activity"] = activity[:, None]
    if inputs is not None:
        variables["inputs"] = inputs
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        savemat(fh, variables)
    os.replace(tmp, path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--code", required=True, help="a checkout of MetaLearnPlasticity")
    ap.add_argument("--out", required=True, help="folder for the per-fly .mat files (created)")
    ap.add_argument("--flies", type=int, default=3, help="training flies (the published num_train; default 3)")
    ap.add_argument("--fly-id", type=int, default=1, help="the published flyid (seeds its keys; default 1)")
    ap.add_argument("--activity", action="store_true", help="also write the recorded output per encounter")
    ap.add_argument("--inputs", action="store_true", help="also write the (resampled) recorded input vectors")
    ap.add_argument("--fit", action="store_true", help="then time the published default fit on these flies")
    args = ap.parse_args()
    sys.path.insert(0, str(Path(args.code).resolve()))
    import jax
    from jax.random import split

    import plasticity.data_loader as data_loader
    import plasticity.inputs as pinputs
    import plasticity.model as model
    import plasticity.synapse as synapse
    from plasticity import utils

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=False)
    logs = tempfile.mkdtemp(prefix="mlp-logs-")
    cfg = utils.validate_config(config(args.flies, args.fly_id, logs))
    # the keys exactly as trainer.train splits them before it loads its data
    key = jax.random.PRNGKey(cfg.flyid)
    key, subkey = split(key)
    synapse.init_plasticity(subkey, cfg, mode="plasticity_model")
    model.initialize_params(key, cfg)
    key, subkey = split(key)
    t0 = time.time()
    xs, recordings, decisions, rewards, _ = data_loader.load_data(key, cfg)
    generated = time.time() - t0
    summary = []
    for exp in sorted(decisions, key=int):
        d = np.asarray(decisions[exp])  # (trials, longest) NaN-padded
        keep = ~np.isnan(d)
        decision = d[keep].astype(np.int64)
        x = np.asarray(xs[exp])[keep]  # (N, 2) the recorded (resampled) inputs
        mus, _ = pinputs.generate_input_parameters((cfg.flyid + 1) * (int(exp) + 1), cfg)
        mus = np.asarray(mus)
        odour = np.argmin(((x[:, None, :] - mus[None]) ** 2).sum(axis=2), axis=1)
        reward = np.asarray(rewards[exp], float)
        if reward.size != decision.sum():
            raise SystemExit(f"experiment {exp}: {reward.size} rewards for {decision.sum()} acceptances")
        activity = np.asarray(recordings[exp])[..., 0][keep] if args.activity else None
        write_fly(out / f"fly{int(exp) + 1:02d}.mat", odour, decision, reward, activity, x if args.inputs else None)
        summary.append({"experiment": int(exp), "encounters": int(keep.sum()), "acceptances": int(decision.sum()),
                        "rewards": int(reward.sum())})
        print(f"fly{int(exp) + 1:02d}: {summary[-1]}", flush=True)
    meta = {"source": "MetaLearnPlasticity (published code), trainer data path", "flies": args.flies,
            "fly_id": args.fly_id, "generation_seconds": round(generated, 1), "experiments": summary,
            "rule": "x*(r - rbar)", "recorded": (["activity"] if args.activity else []) +
            (["inputs (resampled, not the inputs the model saw)"] if args.inputs else []),
            "versions": {"jax": jax.__version__, "numpy": np.__version__}}
    if args.fit:
        from plasticity import trainer
        cfg = config(args.flies, args.fly_id, logs)
        cfg.num_eval = 0  # the fit only (the published evaluation re-generates flies)
        t0 = time.time()
        trainer.train(cfg)
        seconds = time.time() - t0
        import pandas as pd
        log = pd.read_csv(Path(logs) / "simdata" / cfg.exp_name / cfg.plasticity_model / f"exp_{cfg.flyid}.csv")
        last = log.iloc[-1]
        mask = np.array(config(args.flies, args.fly_id, logs).coeff_mask)
        coefficients = {f"A_{i}{j}{k}": float(last[f"A_{i}{j}{k}"]) for i, j, k in zip(*mask.nonzero())}
        meta["published_fit"] = {"seconds": round(seconds, 1), "epochs": int(last["epoch"]),
                                 "train_time_reported": float(last["train_time"]), "terms": int(mask.sum()),
                                 "coefficient_x_(r-rbar)": coefficients["A_110"], "coefficients": coefficients,
                                 "final_loss": float(last["loss"])}
        print(f"published fit: {meta['published_fit']['seconds']} s, A_110 (x*(r - rbar)) = {coefficients['A_110']:.4f}")
    tmp = out / "meta.json.tmp"
    tmp.write_text(json.dumps(meta, indent=2))
    os.replace(tmp, out / "meta.json")


if __name__ == "__main__":
    main()
