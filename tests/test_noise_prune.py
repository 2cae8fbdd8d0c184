"""Noise-driven pruning: the covariance noise reveals, the keep probabilities, the unbiased
rescaling, rules that give unusable scores, the simulate command and every bad input."""
import json

import numpy as np
import pytest

from conftest import ROOT
from rulesearch.cli import main
from rulesearch.errors import DataError, TaskError
from rulesearch.sims.noise_prune import PUBLISHED_RULE, load_matrix
from rulesearch.sims.noise_prune.kernel import (keep_probabilities, prune_population, pruned_matrix,
                                                sampled_covariance)
from rulesearch.sims.noise_prune.network import NetworkSpec, clustered_network, exact_covariance
from rulesearch.tasks import WORST_LOSS, load_task

TASK = ROOT / "tasks" / "noise-prune.toml"
SMALL = ("network.n=60",)


def _network(n, seed):
    return clustered_network(NetworkSpec(n, (1000.0, 200.0, 800.0), 0.6, 2.5), np.random.default_rng(seed))


def test_default_network_is_the_published_construction():
    A = _network(300, 1)
    lam = np.linalg.eigvalsh(A)
    off = A - np.diag(np.diag(A))
    assert np.array_equal(A, A.T) and np.all(np.diag(A) < 0)
    np.testing.assert_allclose(-np.diag(A), np.abs(off).sum(axis=1))  # diagonally dominant, tight
    assert np.linalg.eigvalsh(off)[-1] == pytest.approx(1 / 1.1)
    assert -1.6 < lam[0] < -1.0 and -0.1 < lam[-1] < -0.01
    assert 0.1 < np.mean(off[off != 0] < 0) < 0.2  # N(1, 1) within clusters: ~16% negative


def test_sampled_covariance_converges_to_the_lyapunov_solution():
    A = _network(30, 3)
    exact = exact_covariance(A, 0.5)
    from scipy.linalg import solve_continuous_lyapunov
    np.testing.assert_allclose(exact, solve_continuous_lyapunov(A, -0.25 * np.eye(30)), rtol=1e-8, atol=1e-12)
    tau = 1 / abs(np.linalg.eigvalsh(A)[-1])
    errors = [np.linalg.norm(sampled_covariance(A, 0.5, 0.02, T, 10 * tau, seed=7) - exact) / np.linalg.norm(exact)
              for T in (100.0, 1000.0, 10000.0, 40000.0)]
    # the error falls as sqrt(tau / T) (slowest time constant tau ~ 22): 0.6 at T = 100, ~0.05 at 40000
    assert errors[0] > errors[1] > errors[2] > errors[3]
    assert errors[3] < 0.07 and errors[0] / errors[3] > 8


def test_sampled_covariance_through_the_task_is_seeded():
    over = SMALL + ('noise.covariance="sampled"', "noise.sample_time=2000.0", "noise.dt=0.05")
    a, b, c = load_task(TASK, over, seed=1), load_task(TASK, over, seed=1), load_task(TASK, over, seed=2)
    assert np.array_equal(a.state.C, b.state.C) and not np.array_equal(a.state.C, c.state.C)
    exact = load_task(TASK, SMALL, seed=1).state.C
    assert np.linalg.norm(a.state.C - exact) / np.linalg.norm(exact) < 0.35


def test_the_published_rule_keeps_the_expected_fraction():
    for keep in (0.05, 0.2, 0.6):
        task = load_task(TASK, SMALL + (f"pruning.keep={keep}", "pruning.samples=200"), seed=4)
        res = task.simulate([task.parse(PUBLISHED_RULE)])
        m = task.state.rows.shape[0]
        assert res.expected_kept[0] == pytest.approx(keep, rel=1e-9)
        # 200 independent draws: the mean kept fraction is within 5 standard errors of keep
        assert abs(res.kept[0].mean() - keep) < 5 * np.sqrt(keep / (m * 200))


def test_keep_probabilities_cap_at_one_and_refuse_unusable_scores():
    scores = np.array([100.0, 1.0, 1.0, 1.0, 0.0, -3.0])
    p = keep_probabilities(scores, 0.5)  # 3 of 6: the big one capped at 1, two more shared by three
    np.testing.assert_allclose(p, [1, 2 / 3, 2 / 3, 2 / 3, 0, 0])
    np.testing.assert_allclose(keep_probabilities(scores, 1.0), [1, 1, 1, 1, 0, 0])  # only 4 positive
    for bad in ([1.0, np.nan], [1.0, np.inf], [0.0, -1.0]):
        with pytest.raises(ValueError, match="nothing can be kept"):
            keep_probabilities(np.array(bad), 0.5)


def test_rescaling_is_unbiased_over_many_draws():
    """E[pruned A] = A entry by entry, diagonal included (4000 draws, |z| < 5 everywhere)."""
    A = _network(24, 5)
    C = exact_covariance(A, 1.0)
    rows, cols = np.nonzero(np.triu(A, 1))
    w = A[rows, cols]
    score = np.abs(w) * (C[rows, rows] + C[cols, cols] - 2 * np.sign(w) * C[rows, cols])
    p = keep_probabilities(score, 0.2)
    margin = np.diag(A) + np.abs(A - np.diag(np.diag(A))).sum(axis=1)
    rng = np.random.default_rng(11)
    draws = np.array([pruned_matrix(rows, cols, w, margin, p, rng.random(len(w))) for _ in range(4000)])
    mean, se = draws.mean(axis=0), draws.std(axis=0) / np.sqrt(len(draws))
    z = np.abs(mean - A) / np.where(se > 0, se, 1.0)
    assert z.max() < 5, z.max()
    assert np.all(np.abs(mean - A)[se == 0] < 1e-12)  # entries never pruned: exact
    # and each draw is symmetric, sparse at about the fraction kept, and diagonally dominant
    B = draws[0]
    assert np.array_equal(B, B.T) and np.all(np.diag(B) <= -np.abs(B - np.diag(np.diag(B))).sum(axis=1) + 1e-12)


def test_bad_scores_get_the_worst_loss_never_a_crash():
    task = load_task(TASK, SMALL, seed=1)
    rules = [task.parse(t) for t in ("-abs(w)", "w - w", "w", PUBLISHED_RULE, "abs(w)")]
    losses = task.evaluate(rules)
    assert losses[0] == WORST_LOSS and losses[1] == WORST_LOSS  # nothing positive to keep
    assert WORST_LOSS > losses[2] > losses[4] > losses[3]  # "w" never keeps an inhibitory synapse
    s = task.state
    scores = np.ones((3, s.rows.shape[0]))
    scores[1, 5], scores[2, 0] = np.nan, np.inf
    res = prune_population(scores, s.rows, s.cols, s.w, s.margin, 0.2, s.uniforms)
    assert res.blown.tolist() == [False, True, True]


def test_published_rule_beats_the_weight_control():
    task = load_task(TASK, (), seed=1)
    published, control = task.evaluate([task.parse(PUBLISHED_RULE), task.parse("abs(w)")])
    assert published < 0.4 * control


def test_simulate_prunes_a_given_network_and_draws_the_spectra(tmp_path):
    np.savez(tmp_path / "net.npz", A=_network(80, 9))
    out = tmp_path / "pruned.npz"
    assert main(["simulate", str(TASK), "--rule", PUBLISHED_RULE, "--data", str(tmp_path / "net.npz"),
                 "--out", str(out)]) == 0
    with np.load(out, allow_pickle=False) as f:
        B, A = f["A"], f["A_original"]
        meta = json.loads(str(f["meta"]))
    assert A.shape == B.shape == (80, 80) and np.array_equal(B, B.T)
    off_a, off_b = np.count_nonzero(np.triu(A, 1)), np.count_nonzero(np.triu(B, 1))
    assert 0.1 < off_b / off_a < 0.3
    assert meta["spearman_published"] == pytest.approx(1.0) and meta["network"].endswith("net.npz")
    assert (tmp_path / "pruned.png").stat().st_size > 10_000
    # a pruned network is itself a valid network to prune again
    assert load_matrix(out).A.shape == (80, 80)


def _bad_task(tmp_path, old, new):
    text = TASK.read_text()
    assert old in text
    path = tmp_path / "task.toml"
    path.write_text(text.replace(old, new, 1))
    return path


@pytest.mark.parametrize("old, new, message", [
    ("keep = 0.2", "keep = 0.0", "field 'pruning.keep' is 0.0: expected a fraction in \\(0, 1\\]"),
    ("keep = 0.2", "keep = 1.5", "field 'pruning.keep' is 1.5: expected at most 1.0"),
    ("samples = 8", "samples = 0", "field 'pruning.samples' is 0: expected at least 1"),
    ("samples = 8", "sample = 8", "field 'pruning.sample' is not a known field"),
    ("trajectory_weight = 0.0", "trajectory_weight = -1", "field 'pruning.trajectory_weight' is -1.0: expected at "
                                                          "least 0.0"),
    ("trajectory_time = 50.0", "trajectory_time = 0", "field 'pruning.trajectory_time' is 0.0: expected a "
                                                      "positive time"),
    ('covariance = "exact"', 'covariance = "approx"', "field 'noise.covariance' is 'approx': expected one of "
                                                      "exact, sampled"),
    ("sigma = 1.0", "sigma = 0.0", "field 'noise.sigma' is 0.0: expected a positive noise std"),
    ("dt = 0.02", "dt = -0.1", "field 'noise.dt' is -0.1: expected a positive time"),
    ("sample_time = 2000.0", "sample_time = 0", "field 'noise.sample_time' is 0.0: expected a positive time"),
    ("n = 300", "n = 8", "field 'network.clusters' is \\[1000.0, 200.0, 800.0\\]: a cluster would have fewer than 2"),
    ("clusters = [1000, 200, 800]", "clusters = []", "field 'network.clusters' is \\[\\]: expected 1..150"),
    ("density = 0.6", "density = 1.5", "field 'network.density' is 1.5: expected at most 1.0"),
    ("long_range = 2.5", "long_range = -1", "field 'network.long_range' is -1.0: expected at least 0.0"),
    ("[noise]", "[inputs]\nsteps = 3\n[noise]", "section \\[inputs\\] is not used by the 'noise_prune' simulator"),
    ('grammar = "pruning"', 'grammar = "hebbian"', "grammar 'hebbian' uses x, y, which the 'noise_prune' "
                                                   "simulator does not provide on pathway 'keep'"),
])
def test_task_errors(tmp_path, old, new, message):
    path = _bad_task(tmp_path, old, new)
    with pytest.raises(TaskError, match=message) as info:
        load_task(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_sampled_step_too_large_for_the_network(tmp_path):
    with pytest.raises(TaskError, match="field 'noise.dt' is 2: expected less than"):
        load_task(TASK, SMALL + ('noise.covariance="sampled"', "noise.dt=2.0"))


def _matrix(rng, n=6):
    a = rng.normal(size=(n, n))
    a = (a + a.T) / 2
    np.fill_diagonal(a, 0)
    return a - np.diag(np.abs(a).sum(axis=1) + 0.1)


@pytest.mark.parametrize("arrays, message", [
    (lambda r: {"B": _matrix(r)}, "array 'A' is missing: expected float \\(n, n\\)"),
    (lambda r: {"A": _matrix(r)[:, :5]}, "array 'A' has shape \\(6, 5\\): expected a square matrix"),
    (lambda r: {"A": np.ones(4)}, "array 'A' has shape \\(4,\\): expected a square matrix"),
    (lambda r: {"A": -np.ones((1, 1))}, "expected at least 2 neurons"),
    (lambda r: {"A": _matrix(r) + np.triu(np.full((6, 6), 0.3), 1)}, "array 'A' is not symmetric"),
    (lambda r: {"A": _matrix(r) + np.diag([0, 0, 50.0, 0, 0, 0])}, "array 'A' has a non-negative diagonal "
                                                                    "\\(A\\[2,2\\] = "),
    (lambda r: {"A": np.array([[-1.0, 3.0], [3.0, -1.0]])}, "array 'A' is unstable \\(largest eigenvalue 2"),
    (lambda r: {"A": -np.eye(3)}, "array 'A' has no off-diagonal weights"),
    (lambda r: {"A": np.where(_matrix(r) > 0.5, np.nan, _matrix(r))}, "array 'A' has NaN or inf"),
    (lambda r: {"A": _matrix(r).astype(str)}, "array 'A' has dtype <U"),
    (lambda r: {"A": np.array([None] * 4, dtype=object).reshape(2, 2)}, "array 'A' holds Python objects"),
])
def test_data_errors(tmp_path, rng, arrays, message):
    path = tmp_path / "net.npz"
    np.savez(path, **arrays(rng))
    with pytest.raises(DataError, match=message) as info:
        load_task(TASK, SMALL, data=path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_data_not_npz(tmp_path):
    (tmp_path / "net.npz").write_text("hello")
    with pytest.raises(DataError, match="not an NPZ file \\(expected arrays A\\)"):
        load_task(TASK, SMALL, data=tmp_path / "net.npz")


@pytest.mark.parametrize("make, culprit", [
    (lambda t: ["simulate", str(TASK), "--rule", PUBLISHED_RULE, "--data", str(t / "missing.npz"),
                "--out", str(t / "o.npz")], "missing.npz: file not found"),
    (lambda t: (np.savez(t / "n.npz", A=np.ones((3, 4))),
                ["simulate", str(TASK), "--rule", PUBLISHED_RULE, "--data", str(t / "n.npz"),
                 "--out", str(t / "o.npz")])[1], "array 'A' has shape (3, 4)"),
    (lambda t: ["simulate", str(TASK), "--rule=-abs(w)", "--out", str(t / "o.npz"), "--set", "network.n=40"],
     "nothing can be kept"),
    (lambda t: ["simulate", str(TASK), "--rule", "x*y", "--out", str(t / "o.npz")], "x"),
    (lambda t: ["simulate", str(TASK), "--rule", PUBLISHED_RULE, "--out", str(t / "o.npz"), "--noise", "0.1"],
     "--noise"),
    (lambda t: ["evolve", str(TASK), "--set", "pruning.keep=2", "--out", str(t / "run")], "pruning.keep"),
    (lambda t: ["simulate", str(ROOT / "tasks" / "oja.toml"), "--rule", "x*y", "--data", str(t / "n.npz"),
                "--out", str(t / "o.npz")], "does not use --data"),
    (lambda t: ((t / "o.png").write_text("mine"),
                ["simulate", str(TASK), "--rule", PUBLISHED_RULE, "--out", str(t / "o.npz"),
                 "--set", "network.n=40"])[1], "o.png: a file already exists"),
])
def test_cli_bad_input_is_one_line_with_exit_code_2(tmp_path, capsys, make, culprit):
    args = make(tmp_path)
    before = {p: p.read_bytes() for p in tmp_path.iterdir()}
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and culprit in err, err
    assert {p: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_evolve_runs_on_the_pruning_grammar_and_a_given_network(tmp_path):
    np.savez(tmp_path / "net.npz", A=_network(40, 8))
    out = tmp_path / "run"
    assert main(["evolve", str(TASK), "--population", "12", "--generations", "1", "--seed", "2", "--out", str(out),
                 "--data", str(tmp_path / "net.npz"), "--set", "pruning.samples=2"]) == 0
    info = json.loads((out / "run.json").read_text())
    assert info["data"].endswith("net.npz") and info["neurons"] == 40
    assert "Abs(" not in (out / "pareto.csv").read_text()


def test_trajectory_error_term():
    """Optional: the pruned network run on the original's noise; nothing pruned -> no error; the
    kernel's error against plain NumPy; the published rule closer than the control."""
    from rulesearch.sims.noise_prune.kernel import noise_trajectory
    over = SMALL + ("pruning.trajectory_weight=1.0", "pruning.trajectory_time=20.0", "noise.dt=0.05",
                    "pruning.samples=2")
    task = load_task(TASK, over, seed=3)
    rules = [task.parse(t) for t in (PUBLISHED_RULE, "abs(w)")]
    res = task.simulate(rules, record=True)
    noise, dt, sigma, ref = task.state.trajectories
    for i in range(2):
        for s in range(2):
            x = noise_trajectory(res.matrices[i, s], noise, dt, sigma)
            expected = np.sqrt(np.sum((x - ref) ** 2) / np.sum(ref**2))
            assert res.trajectory_error[i, s] == pytest.approx(expected, rel=1e-9)
    assert res.trajectory_error[0].mean() < res.trajectory_error[1].mean()
    eig_only = load_task(TASK, SMALL + ("pruning.samples=2",), seed=3).evaluate(rules)
    np.testing.assert_allclose(task.evaluate(rules), eig_only + res.trajectory_error.mean(axis=1), rtol=1e-9)
    full = load_task(TASK, over + ("pruning.keep=1.0",), seed=3).simulate(rules[:1])
    assert full.trajectory_error.max() < 1e-12


def test_rule_text_with_abs_reads_back():
    """pareto.csv's expression is read back by --rule: |a| is written abs(a), not sympy's Abs(a)."""
    task = load_task(TASK, ("network.n=20",))
    for text in ("abs(c_pre*w)", PUBLISHED_RULE, "abs(w*(-c + 0.666667*c_post + w))"):
        rule = task.parse(text)
        assert "Abs" not in rule.text() and task.parse(rule.text()).to_sympy() == rule.to_sympy()
