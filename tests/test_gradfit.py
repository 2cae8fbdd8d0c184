"""Exact-gradient Taylor fits (gradfit.py, sims/rate/sensitivity.py): derivatives against finite
differences, exact refits on noise-free data, interval coverage, identifiability."""
import json

import numpy as np
import pytest

from conftest import ROOT
from rulesearch.cli import main
from rulesearch.data import ActivityData
from rulesearch.fit import make_family, split_trials
from rulesearch.gradfit import gradient_fitter
from rulesearch.sims.rate.sensitivity import taylor_residuals
from rulesearch.tasks import load_task

FIT = str(ROOT / "tasks" / "fit-activity.toml")
ACT = {"linear": lambda s: s, "sigmoid": lambda s: 1 / (1 + np.exp(-s)), "tanh": np.tanh}


def numpy_activity(f, activation, x, w0, eta, noise=0.0, rng=None):
    """The rate network in plain NumPy (independent of the Numba kernels): y (trials, steps, n_out)."""
    w = w0.copy()
    y = np.empty((x.shape[0], x.shape[1], w0.shape[1]))
    for t in range(x.shape[1]):
        y[:, t] = ACT[activation](np.einsum("bij,bj->bi", w, x[:, t]))
        w = w + eta * f(x[:, t, None, :], y[:, t, :, None], w)
    if noise:
        y = y + rng.normal(0.0, noise * y.std(), y.shape)
    return y


def _task(rng, f, activation, trials=6, steps=150, n_in=10, n_out=3, eta=0.05, noise=0.0, x=None, extra=()):
    x = rng.uniform(0, 1, (trials, steps, n_in)) if x is None else x
    w0 = rng.uniform(0, 0.2, (trials, n_out, n_in))
    y = numpy_activity(f, activation, x, w0, eta, noise, rng)
    data = ActivityData(x, y, w0, {})
    sets = (f"network.activation={activation}", f"network.eta={eta}", f"network.n_in={n_in}",
            f"network.n_out={n_out}", 'fit.family="taylor"') + tuple(extra)
    return load_task(FIT, sets, data=data, seed=0)


@pytest.mark.parametrize("activation", ["linear", "sigmoid", "tanh"])
def test_jacobian_equals_finite_differences_on_random_rules(rng, activation):
    trials, steps, n_in, n_out = 3, 40, 5, 2
    x = rng.uniform(-1, 1, (trials, steps, n_in))
    w0 = rng.normal(0, 0.3, (trials, n_out, n_in))
    target = rng.normal(0, 1, (trials, steps, n_out))
    target[1, ::3, 0] = np.nan  # unrecorded entries drop out of r and J
    n_rec = int(np.isfinite(target).sum())
    checked = 0
    while checked < 3:
        exps = rng.integers(0, 4, (6, 3))
        theta = rng.normal(0, 0.5, 6)
        r, J, blown = taylor_residuals(theta, exps, x, w0, target, 0.05, activation, 1e3)
        if blown:  # random cubic rules can leave the bound; draw another
            continue
        checked += 1
        assert r.shape == (n_rec,) and J.shape == (n_rec, 6)
        h = 1e-6
        for p in range(6):
            e = np.zeros(6)
            e[p] = h
            up = taylor_residuals(theta + e, exps, x, w0, target, 0.05, activation, 1e3)[0]
            down = taylor_residuals(theta - e, exps, x, w0, target, 0.05, activation, 1e3)[0]
            np.testing.assert_allclose(J[:, p], (up - down) / (2 * h), rtol=1e-5, atol=1e-7)
    # residuals against the NumPy network: zero at the generating rule
    y = numpy_activity(lambda x, y, w: x * y - y * y * w, activation, x, w0, 0.05)
    exps = np.array([[1, 1, 0], [0, 2, 1]])
    r, _, _ = taylor_residuals(np.array([1.0, -1.0]), exps, x, w0, y, 0.05, activation, 1e3)
    assert np.abs(r).max() < 1e-12
    # a rule that leaves the weight bound is reported as blown
    assert taylor_residuals(np.array([50.0, 0.0]), exps, x, w0, y, 0.5, activation, 10.0)[2]


def _fit(task):
    train, _ = split_trials(task, task.fit.holdout)
    fitter = gradient_fitter(train, make_family(task))
    assert fitter is not None
    return fitter.run(), fitter.report, make_family(task)


@pytest.mark.parametrize("truth, f, activation", [
    ({"theta_x1_y1_w0": 1.0, "theta_x1_y0_w0": -0.5, "theta_x0_y1_w0": -0.5, "theta_x0_y0_w0": 0.25},
     lambda x, y, w: (x - 0.5) * (y - 0.5), "tanh"),
    ({"theta_x1_y1_w0": -1.0, "theta_x0_y0_w1": -0.1}, lambda x, y, w: -x * y - 0.1 * w, "sigmoid")])
def test_refit_is_exact_on_noise_free_data(rng, truth, f, activation):
    result, report, family = _fit(_task(rng, f, activation))
    got = dict(zip(family.names, result.params))
    for name, value in truth.items():
        assert got[name] == pytest.approx(value, abs=1e-7)
    assert all(v == 0.0 for k, v in got.items() if k not in truth)  # exactly 0, not small
    se = dict(zip(family.names, report["std_error"]))
    for name, value in truth.items():  # the intervals cover the truth
        assert abs(got[name] - value) <= 1.96 * se[name]
    # the full fit (every term) is kept alongside
    assert len(report["params_full"]) == 27 and sum(report["selected"]) == len(truth)


def test_interval_coverage_on_noisy_data(rng):
    """Noise 0.1 x activity std, 16 data sets: the selected terms are the generating ones, the 95 %
    intervals cover the generating coefficients about 95 % of the time, and their width matches the
    spread of the estimates. (Inputs of both signs and tanh outputs: with inputs in [0, 1] or sigmoid
    outputs, at this size -0.4*x*w or -0.4*y*w and -0.2*w are hard to tell apart.)"""
    truth = {"theta_x1_y1_w0": 1.0, "theta_x0_y0_w1": -0.2}
    hits, values, errors = 0, [], []
    for seed in range(16):
        r = np.random.default_rng(seed)
        x = r.uniform(-1, 1, (4, 120, 8))
        task = _task(r, lambda x, y, w: x * y - 0.2 * w, "tanh", trials=4, steps=120, n_in=8, n_out=3,
                     noise=0.1, x=x, extra=("fit.max_power=1",))
        result, report, family = _fit(task)
        got = dict(zip(family.names, result.params))
        se = dict(zip(family.names, report["std_error"]))
        assert set(k for k, v in got.items() if v != 0) == set(truth)
        for name, value in truth.items():
            hits += abs(got[name] - value) <= 1.96 * se[name]
        values.append(got["theta_x1_y1_w0"])
        errors.append(se["theta_x1_y1_w0"])
    assert hits >= 27  # of 32; P(fewer | 95 % coverage) < 0.5 %
    assert 0.6 < np.std(values, ddof=1) / np.mean(errors) < 1.6


def test_identifiability_names_collinear_terms(rng):
    """Every input always 1: x*m and m act identically for every monomial m, so the four directions
    m - x*m are not determined, and the report says so in terms of the monomials."""
    x = np.ones((4, 100, 6))
    task = _task(rng, lambda x, y, w: x * y - 0.5 * w, "sigmoid", trials=4, steps=100, n_in=6, x=x,
                 extra=("fit.max_power=1",))
    result, report, family = _fit(task)
    flat = report["identifiability"]["not_determined"]
    assert len(flat) == 4
    pairs = sorted(tuple(sorted(f["terms"])) for f in flat)
    assert pairs == [("theta_x0_y0_w0", "theta_x1_y0_w0"), ("theta_x0_y0_w1", "theta_x1_y0_w1"),
                     ("theta_x0_y1_w0", "theta_x1_y1_w0"), ("theta_x0_y1_w1", "theta_x1_y1_w1")]
    for f in flat:
        assert abs(abs(f["weights"][0]) - abs(f["weights"][1])) < 1e-6 and f["weights"][0] * f["weights"][1] < 0
        assert "cancel" in f["reason"]
    # the data still say what the rule does: x*y and -0.5*w, or their aliases y and -0.5*x*w
    got = dict(zip(family.names, result.params))
    assert got["theta_x1_y1_w0"] + got["theta_x0_y1_w0"] == pytest.approx(1.0, abs=1e-6)
    assert got["theta_x0_y0_w1"] + got["theta_x1_y0_w1"] == pytest.approx(-0.5, abs=1e-6)


def test_fit_cli_reports_selection_intervals_and_identifiability(tmp_path, rng, capsys):
    trials, steps, n_in, n_out = 6, 150, 10, 3
    x = rng.uniform(0, 1, (trials, steps, n_in))
    w0 = rng.uniform(0, 0.2, (trials, n_out, n_in))
    y = numpy_activity(lambda x, y, w: -x * y - 0.1 * w, "sigmoid", x, w0, 0.05)
    np.savez(tmp_path / "d.npz", x=x, y=y, w0=w0, meta=np.array(json.dumps({"rule": "-x*y - 0.1*w"})))
    sets = ["--set", "network.activation=sigmoid", "--set", "network.eta=0.05", "--set", f"network.n_in={n_in}",
            "--set", f"network.n_out={n_out}"]
    out = tmp_path / "fit"
    assert main(["fit", FIT, "--data", str(tmp_path / "d.npz"), "--out", str(out), "--family", "taylor"] + sets) == 0
    printed = capsys.readouterr().out
    assert "95 % interval" in printed and "not determined" in printed
    lines = (out / "coefficients.csv").read_text().splitlines()
    assert lines[0] == "term,monomial,value,selected,std_error,ci95_low,ci95_high"
    kept = {r.split(",")[0]: [float(v) for v in r.split(",")[2:]] for r in lines[1:] if r.split(",")[3] == "1"}
    assert set(kept) == {"theta_x1_y1_w0", "theta_x0_y0_w1"}
    for name, value in (("theta_x1_y1_w0", -1.0), ("theta_x0_y0_w1", -0.1)):
        assert kept[name][3] <= value <= kept[name][4]
    assert len((out / "coefficients_full.csv").read_text().splitlines()) == 28
    info = json.loads((out / "run.json").read_text())
    assert info["optimizer"] == "lm" and info["heldout"]["weight_r2"] > 0.9999
    assert info["rule"] == "-0.1*w - x*y" or info["rule"].replace(" ", "") in ("-x*y-0.1*w", "-0.1*w-x*y")
    assert main(["latex", str(out)]) == 0
    assert capsys.readouterr().out.count("+") + 0 == 0  # two negative terms, nothing else
    assert main(["show", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "not determined" in shown and "theta_x1_y1_w0" in shown
    # an MLP can be fitted by LM too (here one iteration per start), and shown; by default ("auto") it
    # is fitted by CMA-ES, since its loss is not convex
    assert main(["fit", FIT, "--data", str(tmp_path / "d.npz"), "--out", str(tmp_path / "mlp1"), "--family", "mlp",
                 "--generations", "1", "--set", "fit.optimizer=lm"] + sets) == 0
    assert json.loads((tmp_path / "mlp1" / "run.json").read_text())["starts"] == 4
    assert main(["fit", FIT, "--data", str(tmp_path / "d.npz"), "--out", str(tmp_path / "mlp0"), "--family", "mlp",
                 "--generations", "1"] + sets) == 0
    assert json.loads((tmp_path / "mlp0" / "run.json").read_text())["optimizer"] == "cmaes"
    assert main(["show", str(tmp_path / "mlp1")]) == 0 and "mlp fit" in capsys.readouterr().out
    # CMA-ES stays available; 'lm' where there are no gradients (an MLP of two hidden layers) is one
    # line naming the field
    assert main(["fit", FIT, "--data", str(tmp_path / "d.npz"), "--out", str(tmp_path / "mlp"), "--family", "mlp",
                 "--set", "fit.hidden=[4, 4]", "--set", "fit.optimizer=lm"] + sets) == 2  # two hidden layers
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "fit.optimizer" in err and "cmaes" in err


@pytest.mark.parametrize("case", ["no filter", "filter", "recorded inputs and w0", "activity"])
def test_choice_likelihood_derivatives_match_the_kernel_and_finite_differences(case):
    """Fly choices: the NLL equals the project's kernel's and its gradient equals central
    differences, for a random 54-term Taylor rule over x, y, w, r - rbar; without the weight
    filter, through it (the task's default: weights, covariance and input noise differentiated),
    and with recorded inputs and initial weights (nothing left to filter: no input noise); and the
    activity objective's residuals (the recorded output, 30 % of encounters, with noise)."""
    from rulesearch.sims.choice import simulate_choices
    sets = ("protocol.animals=4", "protocol.trials_per_block=15", "fit.l1=0")
    sets += {"no filter": ("protocol.weight_filter=false",), "filter": (),
             "recorded inputs and w0": ("protocol.record_inputs=true",),
             "activity": ()}[case]  # its task's family: the published 18 terms
    path = ROOT / "tasks" / ("fly-choice-activity.toml" if case == "activity" else "fly-choice.toml")
    task0 = load_task(path, sets, require_data=False, seed=3)
    data = simulate_choices(task0, task0.parse("x*(r - rbar) - 0.05*w"), seed=3,
                            activity_noise=0.1 if case == "activity" else None, observed=0.3)
    task = load_task(path, sets, data=data, seed=3)
    family = make_family(task)
    model, _ = task.sim.derivatives(task, family)
    rng = np.random.default_rng(0)
    theta = rng.normal(0, 0.1, family.n_params)
    reward_term = [k for k, e in enumerate(family.terms)
                   if dict(zip(family.variables, e)) == {v: int(v in ("x", "r - rbar")) for v in family.variables}]
    theta[reward_term] = 1.0
    everything = np.arange(family.n_params)
    d = model(theta, everything)
    assert not d.blown
    assert d.loss == pytest.approx(task.evaluate_packed(family.pack(theta[None])).losses[0], rel=1e-10)
    for p in rng.choice(family.n_params, 6, replace=False):
        e = np.zeros(family.n_params)
        e[p] = 1e-6
        fd = (model(theta + e, everything).cost - model(theta - e, everything).cost) / 2e-6
        assert d.grad[p] == pytest.approx(fd, rel=1e-5, abs=1e-6 * max(1.0, abs(d.grad).max()))
    assert np.all(np.linalg.eigvalsh(d.gn) > -1e-9 * np.abs(d.gn).max())  # Fisher information / J^T J: PSD
    if case == "filter":  # the filter changes the likelihood: a test that would notice the wrong model
        unfiltered = task.sim.simulate(task, family.pack(theta[None]), filtered=False)
        assert abs(unfiltered.nll.sum() - d.cost) > 1e-3 * d.cost


@pytest.mark.parametrize("hidden_activation", ["tanh", "sigmoid"])
def test_mlp_jacobian_matches_the_kernel_and_finite_differences(rng, hidden_activation):
    """One-hidden-layer MLP rules: residuals equal the project's simulator's loss, the Jacobian
    equals central differences."""
    from rulesearch.families import MLPFamily
    from rulesearch.sims.rate.sensitivity import mlp_residuals
    task = _task(rng, lambda x, y, w: x * y - 0.2 * w, "tanh", trials=3, steps=60, n_in=5, n_out=2)
    family = MLPFamily(task.grammar, ("x", "y", "w"), (4,), hidden_activation)
    theta = family.initial(rng) + rng.normal(0, 0.2, family.n_params)
    s = task.state
    args = (np.array([0, 1, 2]), 4, hidden_activation, s.x, s.w0, s.target, 0.05, "tanh", 100.0)
    r, J, blown = mlp_residuals(theta, *args)
    assert not blown
    assert np.mean(r ** 2) == pytest.approx(task.evaluate_packed(family.pack(theta[None])).losses[0], rel=1e-10)
    for p in range(family.n_params):
        e = np.zeros(family.n_params)
        e[p] = 1e-6
        fd = (mlp_residuals(theta + e, *args)[0] - mlp_residuals(theta - e, *args)[0]) / 2e-6
        np.testing.assert_allclose(J[:, p], fd, rtol=1e-5, atol=1e-8)
