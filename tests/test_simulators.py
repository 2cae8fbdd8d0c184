"""Every registered simulator against its plain NumPy twin (tests/naive.py), and the plug-in contract."""
import numpy as np
import pytest
from scipy.linalg import subspace_angles

from conftest import ROOT
from naive import (choice_nll_numpy, noise_prune_numpy, ou_covariance_numpy, simulate_lateral, simulate_lif,
                   simulate_lif_network, simulate_rate)
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


def _lif(rng, overrides, rules):
    """Spike steps exactly, weights to 1e-9, on the task's own input spikes."""
    task = load_task(ROOT / "tasks" / "istdp.toml", ("inputs.trial_s=1.0", "inputs.score_s=0.5",
                                                     "inputs.drives=[1.0, 1.5]") + overrides)
    rules = [task.parse(t) for t in rules]
    res = task.simulate(rules, record=True)
    c, s = task.config, task.state
    neuron = {k: getattr(c, k) for k in ("capacitance_pf", "g_leak_ns", "e_leak_mv", "e_exc_mv", "e_inh_mv",
                                         "v_threshold_mv", "v_reset_mv", "tau_exc_ms", "tau_inh_ms", "dt_ms",
                                         "g_exc_ns", "g_inh_ns")}
    neuron["refractory_steps"] = round(c.refractory_ms / c.dt_ms)
    n_path = len(c.plastic)
    for b in range(s.trials):
        steps = [s.spk_aff[s.spk_ptr[b, k]:s.spk_ptr[b, k + 1]] for k in range(s.n_steps)]
        for i, rule in enumerate(rules):
            w, spikes = simulate_lif(rule, steps, s.w0[b, 0], s.exc, s.path, neuron, [c.eta] * n_path, c.w_max,
                                     [c.tau_pre_ms] * n_path, [c.tau_post_ms] * n_path)
            got = res.spike_steps[i, b]
            np.testing.assert_array_equal(got[got >= 0], spikes)
            assert res.spikes_total[i, b, 0] == len(spikes) > 0
            np.testing.assert_allclose(res.w_final[i, b, 0], w, rtol=1e-9, atol=1e-12)


def _lif_network(rng, rules, overrides=()):
    """A network of 8 E + 2 I neurons for 0.3 s: every spike (step and neuron) exactly, weights to 1e-9."""
    task = load_task(ROOT / "tasks" / "ei-network.toml",
                     ("network.n_exc=8", "network.n_inh=2", "network.p_connect=0.5", "inputs.plasticity_s=0.2",
                      "inputs.score_s=0.1", "inputs.fano_bin_ms=50") + overrides, seed=4)
    c, s = task.config, task.state
    parsed = [task.parse(t) for t in rules for _ in range(2)]  # each rule at two drives, with two input seeds
    drives, seeds = np.tile([8.0, 12.0], len(rules)), np.tile([3, 11], len(rules))
    res = task.sim.simulate(task, pack_rules(parsed), record=True, drive_rate_hz=drives, seeds=seeds)
    neuron = {k: getattr(c, k) for k in ("capacitance_pf", "g_leak_ns", "e_leak_mv", "e_exc_mv", "e_inh_mv",
                                         "v_threshold_mv", "v_reset_mv", "tau_exc_ms", "tau_inh_ms", "dt_ms")}
    neuron["refractory_steps"] = round(c.refractory_ms / c.dt_ms)
    part_of = [2 * c.plastic.index(p) if p in c.plastic else -1 for p in ("ee", "ei", "ie", "ii")]
    for k, rule in enumerate(parsed):
        w, spikes = simulate_lif_network(rule, part_of, c.n_exc, c.n, s.syn_pre, s.syn_post, s.w0, neuron, c.g_unit(),
                                         c.ext_weight * c.g_unit_ns, drives[k] * c.n_ext * c.dt_ms * 1e-3, seeds[k],
                                         c.eta, c.w_max, [c.tau_pre_ms] * 4, [c.tau_post_ms] * 4, s.n_steps)
        got = res.spike_steps[k] >= 0
        assert len(spikes) > 20 and not res.exploded[k]
        np.testing.assert_array_equal(np.c_[res.spike_steps[k][got], res.spike_neurons[k][got]], np.array(spikes))
        np.testing.assert_allclose(res.w_final[k], w, rtol=1e-9, atol=1e-12)
        assert np.abs(w - s.w0).max() > 1e-3  # the rules did move the weights


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


NETWORK_RULES = ("ee.pre: 2*x_post - 0.5; ee.post: x_pre - w; ei.pre: x_post; ei.post: -0.5*x_pre; "
                 "ie.pre: x_post - 0.2; ie.post: x_pre; ii.pre: -x_post*w; ii.post: 0.3",
                 "ee.pre: 0; ee.post: 0; ei.pre: 0; ei.post: 0; ie.pre: 0; ie.post: 0; ii.pre: 0; ii.post: 0")
LIF_RULES = ("pre: x_post - 0.2; post: x_pre", "pre: 0.5*w*(x_post - 0.3); post: x_pre*w - 0.1", "pre: 0; post: 0")
NAIVE_CASES = {"rate": [_rate, lambda rng: _lateral(rng, False), lambda rng: _lateral(rng, True)],
               "choice": [_choice],
               "lif": [lambda rng: _lif(rng, (), LIF_RULES),
                       lambda rng: _lif(rng, ('network.plastic=["ee", "ie"]', "network.eta=0.5",
                                              'grammar="stdp-voltage"'),
                                    ("ee.pre: -0.05*x_post; ee.post: 0.01*x_pre*v; ie.pre: x_post - 0.2; "
                                     "ie.post: x_pre*(1 - w)",))],
               "lif_network": [lambda rng: _lif_network(rng, NETWORK_RULES[:1]),
                               lambda rng: _lif_network(rng, ("ie.pre: x_post*v - 0.2; ie.post: x_pre",),
                                                        ('network.plastic=["ie"]', 'grammar="stdp-voltage"',
                                                         "network.eta=0.2"))],
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
