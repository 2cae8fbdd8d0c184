"""The sbi proposal backend of `rulesearch families` (neural posterior estimation). Needs the optional
`sbi` extra (PyTorch): skipped without it; the one-line refusal without it is tested in
test_lif_network.py."""
import numpy as np
import pytest

sbi = pytest.importorskip("sbi")
torch = pytest.importorskip("torch")

from rulesearch.family_sbi import propose_sbi  # noqa: E402

LOW, HIGH = np.array([0.4, 5.0]), np.array([0.6, np.inf])  # a two-sided and a one-sided range


def _simulate(theta, rng):
    """Two metrics of a 3-parameter toy model: a noisy sum and a scaled parameter."""
    return np.stack([theta[:, 0] + theta[:, 1] + 0.02 * rng.standard_normal(len(theta)), 10 * theta[:, 2]], axis=1)


def _passes(metrics):
    return (metrics[:, 0] >= LOW[0]) & (metrics[:, 0] <= HIGH[0]) & (metrics[:, 1] >= LOW[1])


def test_proposals_concentrate_where_the_constraints_hold_and_are_seeded():
    rng = np.random.default_rng(0)
    theta = rng.random((600, 3))
    metrics = _simulate(theta, rng)
    metrics[:30] = np.nan  # exploded networks: not measured, left out of training
    prior_fraction = _passes(_simulate(rng.random((4000, 3)), rng)).mean()
    before = torch.random.get_rng_state()
    proposed = propose_sbi(theta, metrics, LOW, HIGH, 300, np.random.default_rng(1))
    assert torch.equal(before, torch.random.get_rng_state())  # torch's global generator untouched
    assert proposed.shape == (300, 3) and np.all((proposed >= 0) & (proposed <= 1))
    fraction = _passes(_simulate(proposed, rng)).mean()
    assert prior_fraction < 0.1 and fraction > 0.4, (prior_fraction, fraction)
    again = propose_sbi(theta, metrics, LOW, HIGH, 300, np.random.default_rng(1))
    assert np.array_equal(proposed, again)


def test_too_few_measured_simulations_fall_back_to_the_prior():
    rng = np.random.default_rng(2)
    theta = rng.random((50, 3))
    metrics = np.full((50, 2), np.nan)
    out = propose_sbi(theta, metrics, LOW, HIGH, 40, np.random.default_rng(3))
    assert np.array_equal(out, np.random.default_rng(3).random((40, 3)))


def test_a_two_round_families_run_with_the_sbi_backend(tmp_path):
    """The backend end to end on the miniature network of test_family_filter: round 1 is proposed by
    the trained posterior and simulated like any round (about 3 minutes with a cold Numba cache)."""
    from conftest import ROOT
    from rulesearch.family_filter import ROUNDS_FILE, SIMULATIONS_FILE, FamilySpec, families_run
    from rulesearch.results import read_csv
    from test_family_filter import MINI
    spec = FamilySpec(str(ROOT / "tasks" / "ei-network.toml"),
                      MINI + ("families.backend='sbi'", "families.simulations=40"), seed=5, workers=1)
    info, out = families_run(spec, tmp_path / "run")
    assert info["backend"] == "sbi"
    rounds = read_csv(out / ROUNDS_FILE)
    assert [int(r["simulations"]) for r in rounds] == [40, 40]
    sims = read_csv(out / SIMULATIONS_FILE)
    assert len({(r["round"], r["index"]) for r in sims}) == 80
