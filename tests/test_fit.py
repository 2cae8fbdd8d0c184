"""Rule families on the VM against independent references, CMA-ES fits, held-out scores."""
import json
import re

import numpy as np
import pytest

from conftest import ROOT
from naive import mlp_numpy
from rulesearch.cli import main
from rulesearch.data import save_activity
from rulesearch.families import MLPFamily, TaylorFamily
from rulesearch.fit import FamilyFit, r_squared, split_trials, state_from_json
from rulesearch.sims.rate import simulate_activity
from rulesearch.tasks import load_task, pack_rules
from rulesearch.vm import evaluate, pack

FIT = str(ROOT / "tasks" / "fit-activity.toml")
SMALL = ("inputs.trials=4", "inputs.steps=150")


def _variables(rng, n_batch=2, n_out=3, n_in=4):
    pre = rng.uniform(-2, 2, size=(1, n_batch, n_in))
    post = rng.uniform(-2, 2, size=(1, n_batch, n_out))
    syn = rng.uniform(-2, 2, size=(1, n_batch * n_out * n_in))
    # the same values per synapse, in the VM's (batch, out, in) order, for NumPy
    x = np.broadcast_to(pre[0][:, None, :], (n_batch, n_out, n_in)).ravel()
    y = np.broadcast_to(post[0][:, :, None], (n_batch, n_out, n_in)).ravel()
    return (pre, post, syn, np.zeros((0, n_batch))), {"x": x, "y": y, "w": syn[0]}


def test_taylor_template_equals_readable_rule_with_mask(hebbian, rng):
    fam = TaylorFamily(hebbian, ("x", "y", "w"), 2, exclude=("theta_x0_y0_w0", "theta_x2_y2_w2"))
    assert fam.n_params == 25 and "theta_x0_y0_w0" not in fam.names
    params = rng.normal(size=(4, fam.n_params))
    args, values = _variables(rng)
    got = evaluate(fam.pack(params), *args)
    want = evaluate(pack([fam.rule(p).programs()[0] for p in params]), *args)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    # and against NumPy, monomial by monomial
    ref = sum(params[0][k] * np.prod([values[v] ** p for v, p in zip(fam.variables, e)], axis=0)
              for k, e in enumerate(fam.terms))
    np.testing.assert_allclose(got[0], ref, rtol=1e-10)


@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "linear"])
def test_mlp_matches_numpy(hebbian, rng, activation):
    fam = MLPFamily(hebbian, ("w", "x", "y"), (5, 3), activation)
    assert fam.n_params == (3 * 5 + 5) + (5 * 3 + 3) + (3 + 1) == len(fam.names)
    params = rng.normal(size=(3, fam.n_params))
    args, values = _variables(rng)
    got = evaluate(fam.pack(params), *args)
    for p, g in zip(params, got):
        ref = mlp_numpy(fam, p, np.stack([values[v] for v in ("w", "x", "y")]))
        np.testing.assert_allclose(g, ref, rtol=1e-9, atol=1e-12)
    # the single-tree form (what sympy and the distiller see) is the same function
    rule_out = evaluate(pack([fam.rule(params[0]).programs()[0]]), *args)
    np.testing.assert_allclose(rule_out[0], got[0], rtol=1e-12)


def test_family_refusals(hebbian):
    with pytest.raises(ValueError, match="excluded term 'theta_q1' is not a term"):
        TaylorFamily(hebbian, ("x", "y"), exclude=("theta_q1",))
    with pytest.raises(ValueError, match="Invalid activation 'relu' for the MLP family"):
        MLPFamily(hebbian, ("x",), (4,), "relu")
    with pytest.raises(ValueError, match="expected 9 parameters per candidate, got 2"):
        TaylorFamily(hebbian, ("x", "y")).pack(np.zeros((1, 2)))


def test_r_squared_hand_cases():
    true = np.array([[1.0, 10.0], [2.0, 20.0], [3.0, 30.0]])
    assert r_squared(true, true) == 1.0
    # predicting each column's mean explains nothing, even though the columns differ by 10x
    assert r_squared(np.array([[2.0, 20.0]] * 3), true) == pytest.approx(0.0)
    # SS_res = 1 (one entry off by 1); SS_tot = (1+0+1) + (100+0+100) = 202
    off = true.copy()
    off[0, 0] += 1
    assert r_squared(off, true) == pytest.approx(1 - 1 / 202)
    # unrecorded (NaN) entries of the truth are skipped
    gap = true.copy()
    gap[1, 1] = np.nan
    assert r_squared(true, gap) == 1.0
    assert r_squared(np.full_like(true, np.inf), true) == -np.inf


def _data_task(tmp_path, rule="x*y - y**2*w", overrides=SMALL, noise=0.0):
    task = load_task(FIT, overrides, require_data=False, seed=1)
    data = simulate_activity(task, task.parse(rule), noise=noise)
    path = tmp_path / "d.npz"
    save_activity(path, data)
    return load_task(FIT, overrides, data=path, seed=1), path


def test_split_trials_holds_out_the_last_trials(tmp_path):
    task, _ = _data_task(tmp_path)
    train, test = split_trials(task, 0.25)
    assert train.state.x.shape[0] == 3 and test.state.x.shape[0] == 1
    np.testing.assert_array_equal(test.state.x[0], task.state.x[3])
    np.testing.assert_array_equal(test.state.target[0], task.state.target[3])
    assert split_trials(task, 0.0)[1] is None
    generated = load_task(FIT, SMALL, require_data=False)
    assert split_trials(generated, 0.25)[1] is None


def test_cmaes_is_seeded_and_resume_equals_uninterrupted(tmp_path):
    task, _ = _data_task(tmp_path)
    train, _ = split_trials(task, task.fit.holdout)
    fam = TaylorFamily(task.grammar, ("x", "y", "w"))
    full = FamilyFit(train, fam, seed=4, generations=12).run()
    again = FamilyFit(train, fam, seed=4, generations=12).run()
    np.testing.assert_array_equal(full.params, again.params)
    other = FamilyFit(train, fam, seed=5, generations=12).run()
    assert not np.array_equal(full.params, other.params)

    saved = []
    FamilyFit(train, fam, seed=4, generations=5).run(checkpoint=saved.append)
    state = state_from_json(json.loads(json.dumps(saved[-1])))  # through JSON, as on disk
    assert state.generation == 5
    resumed = FamilyFit(train, fam, seed=4, generations=12).run(state)
    np.testing.assert_array_equal(resumed.params, full.params)
    assert resumed.history == full.history and resumed.evaluations == full.evaluations


def test_taylor_fit_recovers_oja_and_scores_heldout(tmp_path, capsys):
    _, data = _data_task(tmp_path)
    out = tmp_path / "fit"
    assert main(["fit", FIT, "--data", str(data), "--out", str(out), "--seed", "1",
                 "--generations", "500"] + [a for o in SMALL for a in ("--set", o)]) == 0
    rows = {r.split(",")[0]: float(r.split(",")[2]) for r in (out / "coefficients.csv").read_text().splitlines()[1:]}
    assert len(rows) == 27
    assert rows["theta_x1_y1_w0"] == pytest.approx(1.0, rel=0.05)
    assert rows["theta_x0_y2_w1"] == pytest.approx(-1.0, rel=0.05)
    others = [abs(v) for k, v in rows.items() if k not in ("theta_x1_y1_w0", "theta_x0_y2_w1")]
    assert max(others) < 0.05
    info = json.loads((out / "run.json").read_text())
    assert info["kind"] == "fit" and info["fitted_trials"] == 3 and info["heldout_trials"] == 1
    assert info["heldout"]["weight_r2"] > 0.99 and info["heldout"]["activity_r2"] > 0.99
    assert (out / "fit.png").stat().st_size > 1000
    printed = capsys.readouterr().out
    assert "theta_x1_y1_w0" in printed and "weight R^2" in printed

    assert main(["latex", str(out)]) == 0
    # the two selected terms, e.g. "- 0.9999 w_{ij} y_i^{2} + 0.9995 x_j y_i" (coefficients of exactly
    # 1, as the LM refit gives on noise-free data, are not printed)
    assert re.fullmatch(r"\\Delta w_\{ij\} = - (?:[01]\.\d+ )?w_\{ij\} y_i\^\{2\} \+ (?:[01]\.\d+ )?x_j y_i",
                        capsys.readouterr().out.strip())
    assert main(["latex", str(out), "--table"]) == 0
    assert r"\texttt{theta\_x1\_y1\_w0} & $x_j y_i$ & 1" in capsys.readouterr().out
    assert main(["show", str(out)]) == 0
    assert "taylor fit" in capsys.readouterr().out

    # a fit folder is resumed as a fit, never as an evolve run
    assert main(["evolve", FIT, "--resume", str(out)]) == 2
    assert "holds a 'fit' run, not a 'evolve' run" in capsys.readouterr().err


def test_fit_bad_input_one_line(tmp_path, capsys):
    _, data = _data_task(tmp_path)
    assert main(["fit", FIT, "--data", str(data), "--set", "fit.variables=['x', 'q']"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "section [fit]: Invalid variable 'q'" in err and "x, y, w" in err
    assert main(["fit", FIT, "--data", str(data), "--set", "fit.exclude=['theta_x9']"]) == 2
    assert "excluded term 'theta_x9'" in capsys.readouterr().err
    assert main(["fit", FIT, "--data", str(data), "--set", "fit.hidden=[0]"]) == 2
    assert "field 'fit.hidden'" in capsys.readouterr().err


def test_fit_reads_data_from_any_program(tmp_path):
    """Data written with plain np.savez (no meta, float32): the fit runs; held-out scores are
    against the recording only (no true rule to compare with)."""
    task = load_task(FIT, SMALL, require_data=False, seed=3)
    data = simulate_activity(task, task.parse("x*y - 0.5*y**2*w - 0.2*w"))
    np.savez(tmp_path / "plain.npz", x=data.x.astype(np.float32), y=data.y.astype(np.float32),
             w0=data.w0.astype(np.float32))
    out = tmp_path / "fit"
    assert main(["fit", FIT, "--data", str(tmp_path / "plain.npz"), "--out", str(out), "--generations", "5"]
                + [a for o in SMALL for a in ("--set", o)]) == 0
    held = json.loads((out / "run.json").read_text())["heldout"]
    assert held["trials"] == 1 and np.isfinite(held["activity_r2_data"]) and "weight_r2" not in held


LATERAL = str(ROOT / "tasks" / "fit-activity-lateral.toml")


def test_two_pathway_taylor_fit_on_data_from_the_numpy_twin(tmp_path, rng, capsys):
    """Data of a lateral network written by tests/naive.py (np.linalg.solve, plain np.savez, non-zero
    initial lateral weights): the Taylor fit recovers both pathways' coefficients within 2 %."""
    from naive import simulate_lateral
    from rulesearch.rules import RuleSpace
    task = load_task(LATERAL, require_data=False)
    truth = task.parse("ff: x*y - y**2*w; lat: -0.5*x*y")
    cov = np.diag([3.0, 2.0, 1.0, 1.0, 1.0, 1.0])
    x = rng.multivariate_normal(np.zeros(6), cov, size=(4, 200))
    w0 = rng.normal(0, 0.3, size=(4, 3, 6))
    m0 = rng.normal(0, 0.1, size=(4, 3, 3)) * (1 - np.eye(3))
    _, _, y, blown = simulate_lateral(truth, x, w0, m0, 0.02, 0.02)
    assert not blown and isinstance(task.space, RuleSpace)
    np.savez(tmp_path / "twin.npz", x=x, y=y, w0=w0, m0=m0)
    out = tmp_path / "fit"
    assert main(["fit", LATERAL, "--data", str(tmp_path / "twin.npz"), "--out", str(out), "--seed", "2",
                 "--generations", "700"]) == 0
    rows = {r.split(",")[0]: float(r.split(",")[2]) for r in (out / "coefficients.csv").read_text().splitlines()[1:]}
    assert len(rows) == 24
    expected = {"ff.theta_x1_y1_w0": 1.0, "ff.theta_x0_y2_w1": -1.0, "lat.theta_x1_y1_w0": -0.5}
    for name, value in expected.items():
        assert rows[name] == pytest.approx(value, rel=0.02)
    assert max(abs(v) for k, v in rows.items() if k not in expected) < 0.02
    capsys.readouterr()
    assert main(["latex", str(out)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith(r"\Delta W_{ij} = ") and lines[1].startswith(r"\Delta M_{ik} = ")
    assert "y_k y_i" in lines[1]


def test_evolve_on_data_searches_the_fitted_trials_and_scores_the_heldout_ones(tmp_path, capsys):
    """evolve, like fit, never sees the held-out trials and reports them (with the data's true rule)."""
    _, data = _data_task(tmp_path)
    out = tmp_path / "evo"
    assert main(["evolve", FIT, "--data", str(data), "--out", str(out), "--seed", "1", "--population", "40",
                 "--generations", "2"] + [a for o in SMALL for a in ("--set", o)]) == 0
    info = json.loads((out / "run.json").read_text())
    assert info["fitted_trials"] == 3 and info["heldout_trials"] == 1
    held = info["heldout"]
    assert held["trials"] == 1 and held["blown"] is False and held["true_rule"] == "-w*y**2 + x*y"
    assert np.isfinite(held["loss"]) and np.isfinite(held["weight_r2"])
    assert "held-out (1 trials): loss" in capsys.readouterr().out


def test_a_heldout_blow_up_is_reported_as_such(tmp_path, capsys):
    from rulesearch.cli import _print_heldout
    from rulesearch.fit import heldout_scores
    task, _ = _data_task(tmp_path)
    _, test = split_trials(task, 0.25)
    held = heldout_scores(test, pack_rules([test.parse("x*y")]), "x*y - y**2*w")  # Hebbian alone blows up
    assert held["blown"] is True and held["loss"] is None
    assert "weight_r2" not in held and "activity_r2_data" not in held
    _print_heldout(held)
    printed = capsys.readouterr().out
    assert "weights blew up" in printed and "1e+10" not in printed and "R^2 " not in printed.split("no held-out")[0]
