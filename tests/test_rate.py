"""The Numba rate simulator against the plain NumPy reference."""
import numpy as np
import pytest

from rulesearch.rules import parse_rule
from rulesearch.sims.rate import ACTIVATIONS, simulate
from rulesearch.tasks import pack_rules
from naive import simulate_rate

RULES = ["x*y - y**2*w", "x*y - 0.5*y**2*w", "0.1*x - w*y", "(x - w)/(y + 3)"]


@pytest.mark.parametrize("activation", list(ACTIVATIONS))
def test_matches_numpy_reference(full, rng, activation):
    x = rng.normal(size=(3, 60, 4))
    w0 = rng.normal(0, 0.3, size=(3, 2, 4))
    target = rng.normal(size=(3, 60, 2))
    target[:, :, 1] = np.nan
    rules = [parse_rule(t, full) for t in RULES]
    res = simulate(pack_rules(rules), x, w0, 0.05, activation, 1e3, target, record=True)
    for i, rule in enumerate(rules):
        w_ref, y_ref, sse, count, blown = simulate_rate(rule, x, w0, 0.05, activation, 1e3, target)
        assert not blown and not res.blown[i]
        np.testing.assert_allclose(res.w_final[i], w_ref, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(res.y[i], y_ref, rtol=1e-9, atol=1e-12)
        assert res.sse[i].sum() == pytest.approx(sse, rel=1e-9)
        assert res.count[i].sum() == count == 3 * 60


def test_blow_up_is_flagged_not_raised(full, rng):
    x = rng.normal(size=(2, 500, 3))
    w0 = rng.normal(0, 0.3, size=(2, 1, 3))
    rules = [parse_rule(t, full) for t in ["x*y", "x*y - y**2*w", "w/(w - w + 1e-30)", "square(square(w))*10"]]
    res = simulate(pack_rules(rules), x, w0, 0.05, "linear", 100.0)
    assert list(res.blown) == [True, False, False, True]
    assert np.all(np.isfinite(res.w_final[1]))


def test_bad_shapes_raise(full):
    packed = pack_rules([parse_rule("x", full)])
    with pytest.raises(ValueError, match="must be"):
        simulate(packed, np.zeros((2, 5, 3)), np.zeros((3, 1, 3)), 0.1)
    with pytest.raises(ValueError, match="Invalid activation 'relu'. Valid options: linear, sigmoid, tanh"):
        simulate(packed, np.zeros((2, 5, 3)), np.zeros((2, 1, 3)), 0.1, "relu")
