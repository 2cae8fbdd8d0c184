"""Distilling a black-box rule: an MLP that encodes a known rule is explained by that rule."""
import json

import numpy as np
import pytest
from scipy.optimize import least_squares

from conftest import ROOT
from naive import mlp_numpy, rule_function
from rulesearch.cli import main
from rulesearch.data import save_activity
from rulesearch.distill import distill, pysr_missing_reason, sample_visited_states
from rulesearch.families import MLPFamily
from rulesearch.fit import split_trials
from rulesearch.sims.rate import simulate_activity
from rulesearch.tasks import load_task, pack_rules

FIT = str(ROOT / "tasks" / "fit-activity.toml")
SMALL = ("inputs.trials=4", "inputs.steps=150")
OJA = "x*y - y**2*w"


@pytest.fixture(scope="module")
def oja_mlp(tmp_path_factory):
    """Data from Oja's rule, and an MLP least-squares fitted to Oja's rule on the visited states.

    The MLP is a black box that encodes a known rule (fitted here directly, not through
    the simulator, so this test does not depend on the CMA-ES fit's quality).
    """
    path = tmp_path_factory.mktemp("oja") / "d.npz"
    task = load_task(FIT, SMALL, require_data=False, seed=2)
    save_activity(path, simulate_activity(task, task.parse(OJA)))
    task = load_task(FIT, SMALL, data=path, seed=2)
    train, _ = split_trials(task, task.fit.holdout)
    family = MLPFamily(task.grammar, ("x", "y", "w"), (10,), "tanh")
    truth = task.parse(OJA)
    X = sample_visited_states(train, pack_rules([truth]), ("x", "y", "w"), 1000, np.random.default_rng(0))
    target = X[:, 0] * X[:, 1] - X[:, 1] ** 2 * X[:, 2]
    p0 = family.initial(np.random.default_rng(0)) + 0.1

    def jacobian(p):  # d output / d (W0 row-major, b0, v, c) of v . tanh(W0 u + b0) + c
        W, b, v = p[:30].reshape(10, 3), p[30:40], p[40:50]
        h = np.tanh(X @ W.T + b)  # (n, 10)
        g = (1 - h**2) * v
        return np.hstack([(g[:, :, None] * X[:, None, :]).reshape(len(X), 30), g, h, np.ones((len(X), 1))])
    fit = least_squares(lambda p: mlp_numpy(family, p, X.T) - target, p0, jac=jacobian, method="lm")
    assert np.sqrt(np.mean(fit.fun ** 2)) < 0.05 * target.std()  # the black box does encode Oja
    return train, family, fit.x, path


@pytest.mark.parametrize("backend", ["operon", "gp"])
def test_distill_recovers_the_encoded_rule(oja_mlp, backend):
    train, family, params, _ = oja_mlp
    result = distill(train, family, params, backend, max_size=20, n_samples=1500, seed=0)
    sel = result.selected
    x, y, w = (np.random.default_rng(1).normal(size=500) for _ in range(3))
    f, names = rule_function(sel.rule)
    np.testing.assert_allclose(f(x, y, w), x * y - y**2 * w, atol=0.05 * np.abs(x * y - y**2 * w).max())
    # re-simulated task loss of the formula next to the MLP's: no worse than 1.5x
    assert sel.loss <= 1.5 * result.blackbox_loss + 1e-9
    assert result.regression_mse[sel.expression] < 0.05


def test_distill_command_writes_a_front_latex_reads(oja_mlp, tmp_path, capsys):
    train, family, params, data = oja_mlp
    fit_dir = tmp_path / "fit"
    # a real (short) MLP fit folder; then swap in the encoded parameters
    assert main(["fit", FIT, "--family", "mlp", "--data", str(data), "--generations", "2", "--seed", "2",
                 "--out", str(fit_dir)] + [a for o in SMALL for a in ("--set", o)]) == 0
    stored = json.loads((fit_dir / "params.json").read_text())
    stored["params"] = params.tolist()
    (fit_dir / "params.json").write_text(json.dumps(stored))
    assert main(["distill", str(fit_dir), "--backend", "gp", "--max-size", "15"]) == 0
    out = fit_dir / "distill-gp"
    info = json.loads((out / "run.json").read_text())
    assert info["kind"] == "distill" and info["backend"] == "gp" and info["loss_ratio"] <= 1.5
    header = (out / "pareto.csv").read_text().splitlines()[0]
    assert header == "complexity,loss,expression,latex,selected,regression_mse"
    assert (out / "front.png").stat().st_size > 1000
    capsys.readouterr()
    assert main(["latex", str(out)]) == 0
    assert "x_j y_i" in capsys.readouterr().out
    assert main(["show", str(out)]) == 0


@pytest.mark.skipif(pysr_missing_reason() is None, reason="PySR and Julia are available here")
def test_pysr_without_julia_is_one_clear_line(oja_mlp, tmp_path, capsys):
    _, _, _, data = oja_mlp
    fit_dir = tmp_path / "fit"
    assert main(["fit", FIT, "--family", "mlp", "--data", str(data), "--generations", "1",
                 "--out", str(fit_dir)] + [a for o in SMALL for a in ("--set", o)]) == 0
    capsys.readouterr()
    assert main(["distill", str(fit_dir), "--backend", "pysr"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--backend pysr:" in err and "operon" in err and "gp" in err
    assert not (fit_dir / "distill-pysr").exists()


@pytest.mark.skipif(pysr_missing_reason() is not None, reason=f"PySR cannot run here: {pysr_missing_reason()}")
def test_pysr_backend_runs(oja_mlp):
    train, family, params, _ = oja_mlp
    result = distill(train, family, params, "pysr", max_size=15, n_samples=500, seed=0)
    assert result.front


def test_distill_explains_each_pathway_of_a_two_pathway_rule(tmp_path):
    """A Taylor fit of the PCA network set to Oja's rule on W and anti-Hebbian M (by hand, not
    fitted): distillation explains each pathway separately and joins them."""
    from rulesearch.families import PathwayFamilies, TaylorFamily
    task = load_task(ROOT / "tasks" / "pca-network.toml", ("inputs.steps=600", "inputs.trials=2"), seed=1)
    fams = tuple(TaylorFamily(p.grammar, ("x", "y", "w"), (1, 2, 1)) for p in task.space.pathways)
    family = PathwayFamilies(fams, task.space)
    params = np.zeros(family.n_params)
    params[family.names.index("ff.theta_x1_y1_w0")] = 1.0
    params[family.names.index("ff.theta_x0_y2_w1")] = -1.0
    params[family.names.index("lat.theta_x1_y1_w0")] = -0.5
    # refit=False: this black box is set by hand, not fitted to the task, and the task's PCA loss at
    # a finite learning rate is lowest a little away from Oja's constants, where a refit would move them
    result = distill(task, family, params, "operon", max_size=15, n_samples=800, seed=0, refit=False)
    sel = result.selected
    assert sel.rule.space.names == ("ff", "lat")
    x, y, w = (np.random.default_rng(k).normal(size=300) for k in range(3))
    f_ff, _ = rule_function(sel.rule, 0)
    f_lat, _ = rule_function(sel.rule, 1)
    np.testing.assert_allclose(f_ff(x, y, w), x * y - y**2 * w, atol=1e-3)
    np.testing.assert_allclose(f_lat(x, y, w), -0.5 * x * y, atol=1e-3)
    assert sel.loss <= result.blackbox_loss * 1.01 + 1e-9


def test_distill_refits_constants_on_the_task(tmp_path, monkeypatch):
    """A backend proposes the generating rule x*y - 0.37*y**2*w with constants 20 % off (as a
    regression on an imperfect black box's samples would): by default distill refits them on the
    task loss to within 1 %; with refit=False only snapping moves them, and not to 0.37."""
    import rulesearch.distill as d
    from rulesearch.families import TaylorFamily
    task = load_task(FIT, SMALL, require_data=False, seed=2)
    save_activity(tmp_path / "d.npz", simulate_activity(task, task.parse("x*y - 0.37*y**2*w")))
    train, _ = split_trials(load_task(FIT, SMALL, data=tmp_path / "d.npz", seed=2), 0.25)
    family = TaylorFamily(train.grammar, ("x", "y", "w"), 2)
    params = np.zeros(family.n_params)
    params[family.names.index("theta_x1_y1_w0")], params[family.names.index("theta_x0_y2_w1")] = 1.0, -0.37
    monkeypatch.setitem(d.BACKENDS, "stub", lambda problem: d._parse_candidates(["0.8*x*y - 0.296*y**2*w"],
                                                                                 problem))
    found = []
    for refit in (True, False):
        result = distill(train, family, params, "stub", max_size=20, n_samples=300, seed=0, refit=refit)
        f, _ = rule_function(result.selected.rule)
        found.append((f(1.0, 1.0, 0.0), -f(0.0, 1.0, 1.0)))  # (coefficient of x*y, of y**2*w)
    np.testing.assert_allclose(found[0], (1.0, 0.37), rtol=0.01)
    assert abs(found[1][1] - 0.37) > 0.01 * 0.37
