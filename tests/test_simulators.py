"""Every registered simulator against its plain NumPy twin (tests/naive.py), and the plug-in contract."""
import numpy as np
import pytest
from scipy.linalg import subspace_angles

from conftest import ROOT
from naive import choice_nll_numpy, noise_prune_numpy, ou_covariance_numpy, simulate_lateral, simulate_rate
from rulesearch.sims import SIMULATORS
from rulesearch.sims.choice import simulate_choices
from rulesearch.sims.rate.objectives import pca_subspace_parts
from rulesearch.tasks import load_task, pack_rules, with_data

PCA = ROOT / "tasks" / "pca-network.toml"
SHORT_PCA = ("inputs.steps=200", "inputs.trials=2")


def _rate(rng):
    task = load_task(ROOT / "tasks" / "oja.toml", ("inputs.steps=80", "inputs.trials=3", "network.n_out=1"))
    rules = [task.parse(t) for t in ("x*y - y**2*w", "0.1*x - w*y", "x*y*(x - w)")]
    res = task.simulate(rules, record=True)
    for i, rule in enumerate(rules):
        w, y, _, _, blown = simulate_rate(rule, task.state.x, task.state.w0, task.etas[0])
        assert not blown and not res.blown[i]
        np.testing.assert_allclose(res.w_final[i], w, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(res.y[i], y, rtol=1e-9, atol=1e-12)


def _lateral(rng, hierarchical):
    overrides = SHORT_PCA + (f'network.lateral="{"hierarchical" if hierarchical else "symmetric"}"',)
    task = load_task(PCA, overrides)
    m0 = rng.normal(0, 0.2, size=(2, 3, 3))  # non-zero initial lateral weights, given as data
    from rulesearch.data import ActivityData
    data = ActivityData(task.state.x, np.full(task.state.x.shape[:2] + (3,), np.nan), task.state.w0, {}, m0=m0)
    data.y[:, :, 0] = 0.0  # a recording so the data loads; its error is not compared here
    task = with_data(task, data)
    rules = [task.parse(t) for t in ("ff: x*y - y**2*w; lat: -x*y", "ff: 0.5*x - w*y; lat: w*x - 0.3*y",
                                     "ff: x*y - w; lat: -x*y*w")]
    res = task.simulate(rules, record=True)
    for i, rule in enumerate(rules):
        W, M, y, blown = simulate_lateral(rule, task.state.x, task.state.w0, m0, task.etas[0], task.etas[1],
                                          hierarchical)
        assert blown == res.blown[i]
        if not blown:
            np.testing.assert_allclose(res.w_final[i], W, rtol=1e-8, atol=1e-11)
            np.testing.assert_allclose(res.m_final[i], M, rtol=1e-8, atol=1e-11)
            np.testing.assert_allclose(res.y[i], y, rtol=1e-8, atol=1e-11)
    assert not res.blown[0]


def _choice(rng):
    task = load_task(ROOT / "tasks" / "fly-choice.toml",
                     ("protocol.trials_per_block=15", "protocol.heldout_every=0", "protocol.weight_filter=false",
                      "protocol.odour_variance=0.0"), require_data=False, seed=2)
    task = with_data(task, simulate_choices(task, task.parse("x*(r - rbar)"), animals=3, seed=2))
    rules = [task.parse(t) for t in ("x*(r - rbar)", "x*r - 0.1*w*y")]
    res = task.simulate(rules)
    c = task.config
    for i, rule in enumerate(rules):
        nll = sum(choice_nll_numpy(rule, *task.state.data.per_animal(a), task.state.patterns, task.state.w0[a],
                                   c.readout, task.etas[0], c.protocol.reward_window, 0.0)[0] for a in range(3))
        assert res.nll[i].sum() == pytest.approx(nll, rel=1e-9)


def _noise_prune(rng):
    """Pruned spectra of several rules (one with negative scores, one blown) on a small network
    with a sampled covariance, against the NumPy twin; the sampled covariance itself too."""
    from rulesearch.sims.noise_prune import kernel
    task = load_task(ROOT / "tasks" / "noise-prune.toml", ("network.n=40", 'noise.covariance="sampled"',
                                                           "noise.sample_time=50.0", "noise.dt=0.05",
                                                           "pruning.samples=3"), seed=2)
    s = task.state
    rules = [task.parse(t) for t in ("abs(w)*(c_pre + c_post - 2*sign(w)*c)", "abs(w)", "w*c_post + 0.1",
                                     "square(w)*c_pre*c_post", "-abs(w)")]
    res = task.simulate(rules)
    for i, rule in enumerate(rules):
        twin = noise_prune_numpy(rule, s.A, s.C, task.config.keep, s.uniforms)
        assert res.blown[i] == (twin is None)
        if twin is not None:
            np.testing.assert_allclose(res.expected_kept[i], twin[0].mean(), rtol=1e-9)
            np.testing.assert_allclose(res.eigenvalues[i], twin[1], rtol=1e-8, atol=1e-10)
    assert res.blown.tolist() == [False, False, False, False, True]
    C = kernel.sampled_covariance(s.A, 0.7, 0.05, 30.0, 5.0, seed=4)
    burn, steps = kernel.noise_run_steps(s.A, 0.05, 30.0, 5.0)
    np.testing.assert_allclose(C, ou_covariance_numpy(s.A, 0.7, 0.05, burn, steps, 4, kernel.CHUNK_STEPS),
                               rtol=1e-9, atol=1e-12)


NAIVE_CASES = {"rate": [_rate, lambda rng: _lateral(rng, False), lambda rng: _lateral(rng, True)],
               "choice": [_choice],
               "noise_prune": [_noise_prune]}


@pytest.mark.parametrize("name", sorted(SIMULATORS))
def test_simulator_matches_its_numpy_twin(name, rng):
    assert name in NAIVE_CASES, f"simulator '{name}' has no NumPy twin in tests/naive.py"
    for case in NAIVE_CASES[name]:
        case(rng)


@pytest.mark.parametrize("name", sorted(SIMULATORS))
def test_plugin_declares_what_the_rest_asks(name):
    sim = SIMULATORS[name]
    assert sim.name == name and sim.objectives and sim.data_help
    for obj in sim.objectives.values():
        assert callable(obj.fn)


def test_pca_subspace_parts_against_scipy_principal_angles(rng):
    n, k = 8, 3
    pcs, _ = np.linalg.qr(rng.normal(size=(n, n)))
    cov = pcs @ np.diag([6, 4, 2.5, 1, 1, 1, 1, 1]) @ pcs.T
    W = rng.normal(size=(5, k, n))
    parts = pca_subspace_parts(W, None, pcs, cov, hierarchical=False)
    for b in range(5):
        angles = subspace_angles(W[b].T, pcs[:, :k])
        assert parts["subspace"][b] == pytest.approx(np.mean(np.sin(angles) ** 2), rel=1e-9)
        assert parts["norm"][b] == pytest.approx(np.mean((np.linalg.norm(W[b], axis=1) - 1) ** 2))
        C = W[b] @ cov @ W[b].T
        rho = C / np.sqrt(np.outer(np.diag(C), np.diag(C)))
        assert parts["decorrelation"][b] == pytest.approx((np.sum(rho**2) - k) / (k * (k - 1)), rel=1e-9)
    exact = pca_subspace_parts(pcs[:, :k].T[None], np.zeros((1, k, k)), pcs, cov, hierarchical=True)
    assert all(float(v[0]) == pytest.approx(0.0, abs=1e-12) for v in exact.values())
    swapped = pca_subspace_parts(pcs[:, [1, 0, 2]].T[None], None, pcs, cov, hierarchical=True)
    assert swapped["subspace"][0] == pytest.approx(2 / 3)  # rows 0 and 1 on the wrong axes


@pytest.mark.parametrize("lateral", ["symmetric", "hierarchical"])
def test_known_answers_reach_the_pca_subspace_optimum_and_each_rule_alone_does_not(lateral):
    """Foldiak (symmetric M) and Rubner-Tavan (hierarchical M): Oja's rule on W with anti-Hebbian M."""
    task = load_task(PCA, (f'network.lateral="{lateral}"',), seed=1)
    both, oja_only, anti_only = task.evaluate([task.parse(t) for t in (
        "ff: x*y - y**2*w; lat: -x*y", "ff: x*y - y**2*w; lat: 0", "ff: 0; lat: -x*y")])
    assert both < 0.02
    assert oja_only > 0.3 and anti_only > 0.3


def test_population_must_have_one_program_per_pathway():
    task = load_task(PCA, SHORT_PCA)
    single = load_task(ROOT / "tasks" / "oja.toml")
    with pytest.raises(ValueError, match="2 plastic pathway"):
        task.evaluate_packed(pack_rules([single.parse("x*y")]))
