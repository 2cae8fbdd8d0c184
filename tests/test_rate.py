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


# Rules whose plans fuse the update differently (vm.compile_plan): products on both sides of the last
# operator (x*y - w*y**2), the weights as a product's factor, a constant factor, a division or a unary
# operator last (no fusion), a constant rule, a lone variable, a product of runs.
FUSION_RULES = ["x*y - square(y)*w", "w*y - x", "x*y + 0.3*w", "0.5*x*(y - w)", "(x - w)/(y + 3)",
                "tanh(x*y) - w", "0.2", "x", "x*w*y", "y*(x - y*w)", "square(x)*y - w"]


@pytest.mark.parametrize("activation", ["linear", "tanh"])
def test_fused_update_matches_numpy_reference(full, rng, activation):
    """The common path (not recorded, no lateral weights: plans that update the weights themselves,
    alternating between two rows) against the NumPy reference, several trials and outputs, with a
    target; and the same as the recorded path to the last bit."""
    x = rng.normal(size=(3, 40, 5))
    w0 = rng.normal(0, 0.3, size=(3, 2, 5))
    target = rng.normal(size=(3, 40, 2))
    target[1, :, 0] = np.nan
    rules = [parse_rule(t, full) for t in FUSION_RULES]
    packed = pack_rules(rules)
    fast = simulate(packed, x, w0, 0.05, activation, 1e3, target)
    recorded = simulate(packed, x, w0, 0.05, activation, 1e3, target, record=True)
    np.testing.assert_array_equal(fast.w_final, recorded.w_final)
    np.testing.assert_array_equal(fast.sse, recorded.sse)
    for i, rule in enumerate(rules):
        w_ref, _, sse, count, blown = simulate_rate(rule, x, w0, 0.05, activation, 1e3, target)
        assert not blown and not fast.blown[i], FUSION_RULES[i]
        np.testing.assert_allclose(fast.w_final[i], w_ref, rtol=1e-9, atol=1e-12, err_msg=FUSION_RULES[i])
        assert fast.sse[i].sum() == pytest.approx(sse, rel=1e-9)
        assert fast.count[i].sum() == count


def test_blow_up_is_flagged_at_the_same_step_on_both_paths(full, rng):
    """The blow-up check rides along with the next step's W x (vm: the sum of the weights' squares)
    and after the last step: the same flag and the same final weights as the recorded path, which
    stops at the same step, for rules that leave the bound early, late (at the last step) or never."""
    x = rng.uniform(0.5, 1.0, size=(2, 30, 3))
    w0 = np.full((2, 1, 3), 0.5)
    texts = ["x*y", "10*x*y", "x*y - y**2*w", "0.01*w", "w*w*w"]
    rules = [parse_rule(t, full) for t in texts]
    packed = pack_rules(rules)
    for bound in (2.0, 5.0, 1e3):
        fast = simulate(packed, x, w0, 0.05, "linear", bound)
        rec = simulate(packed, x, w0, 0.05, "linear", bound, record=True)
        np.testing.assert_array_equal(fast.blown, rec.blown)
        np.testing.assert_array_equal(fast.w_final, rec.w_final)
        for i, rule in enumerate(rules):
            assert fast.blown[i] == simulate_rate(rule, x, w0, 0.05, "linear", bound)[4], (texts[i], bound)
    # with eta 1, 0.2*w multiplies the weights by 1.2 a step: they pass this bound at the last step only,
    # whose check comes after the loop
    last = simulate(pack_rules([parse_rule("0.2*w", full)]), x, w0, 1.0, "linear", 0.5 * 1.2 ** 29 * 1.1)
    assert last.blown[0]


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
