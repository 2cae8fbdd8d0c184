"""Each Taylor term, built from its name, against the same rule written as an expression."""
import numpy as np
import pytest
import sympy

from conftest import ROOT
from rulesearch.families import TaylorFamily
from rulesearch.grammar import load_grammar
from rulesearch.rules import parse_rule
from rulesearch.vm import evaluate, pack


def test_term_names_and_count(hebbian):
    fam = TaylorFamily(hebbian, ("x", "y", "w"), 2)
    assert len(fam.terms) == 27 and len(set(fam.names)) == 27
    assert fam.term_name((1, 1, 0)) == "theta_x1_y1_w0"
    assert fam.monomial_text((0, 2, 1)) == "y**2*w"


def test_each_term_matches_its_expression(hebbian, rng):
    fam = TaylorFamily(hebbian, ("x", "y", "w"), 2)
    pre = rng.uniform(-2, 2, size=(1, 2, 3))
    post = rng.uniform(-2, 2, size=(1, 2, 4))
    syn = rng.uniform(-2, 2, size=(1, 2 * 4 * 3))
    trial = np.zeros((0, 2))
    rules, expected = [], []
    for k, exps in enumerate(fam.terms):
        coef = np.zeros(len(fam.terms))
        coef[k] = 1.5
        name = fam.term_name(exps)
        # parse the exponents back from the name, not from the tuple: catches index mix-ups
        powers = {part[0]: int(part[1:]) for part in name.split("_")[1:]}
        text = "1.5*" + "*".join(f"{v}**{p}" for v, p in powers.items() if p) if any(powers.values()) else "1.5"
        rule, ref = fam.rule(coef), parse_rule(text, hebbian)
        assert sympy.simplify(rule.to_sympy()[0] - ref.to_sympy()[0]) == 0, name
        rules.append(rule)
        expected.append(ref)
    got = evaluate(pack([r.programs()[0] for r in rules]), pre, post, syn, trial)
    want = evaluate(pack([r.programs()[0] for r in expected]), pre, post, syn, trial)
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_oja_from_coefficients(hebbian):
    fam = TaylorFamily(hebbian, ("x", "y", "w"), 2)
    coef = np.zeros(27)
    coef[fam.names.index("theta_x1_y1_w0")] = 1.0
    coef[fam.names.index("theta_x0_y2_w1")] = -1.0
    x, y, w = sympy.symbols("x y w", real=True)
    assert sympy.expand(fam.rule(coef).to_sympy()[0] - (x * y - y**2 * w)) == 0


def test_refusals(hebbian):
    with pytest.raises(ValueError, match=r"Invalid variable 'r': not a terminal of grammar 'hebbian' "
                                         r"\(valid: x, y, w, or an expression"):
        TaylorFamily(hebbian, ("x", "r"))
    with pytest.raises(ValueError, match=r"max_power \(1, 2\): expected 0..6, or one such number per variable \(3\)"):
        TaylorFamily(hebbian, ("x", "y", "w"), (1, 2))
    with pytest.raises(ValueError, match="expected 27 coefficients"):
        TaylorFamily(hebbian, ("x", "y", "w")).rule(np.zeros(5))


def test_expression_inputs_and_per_variable_powers(rng):
    """A Taylor input may be an expression (r - rbar is one input); powers may differ per input."""
    reward = load_grammar(ROOT / "grammars" / "reward.toml")
    fam = TaylorFamily(reward, ("x", "w", "r - rbar"), (1, 2, 2))
    assert fam.n_params == 2 * 3 * 3
    assert "theta_x1_w0_(r-rbar)1" in fam.names and "theta_x2_w0_(r-rbar)0" not in fam.names
    k = fam.names.index("theta_x1_w0_(r-rbar)1")
    assert fam.monomial_text(fam.terms[k]) == "x*(r - rbar)"  # as the rule line prints it
    coef = np.zeros(fam.n_params)
    coef[k] = 0.7
    r_, rbar = sympy.Symbol("r", real=True), sympy.Symbol("rbar", real=True)
    x = sympy.Symbol("x", real=True)
    assert sympy.expand(fam.rule(coef).to_sympy()[0] - 0.7 * x * (r_ - rbar)) == 0
    # the Horner template computes the same as the readable rule, with trial variables set
    params = rng.normal(size=(3, fam.n_params))
    pre, post = rng.uniform(-1, 1, (1, 4, 2)), rng.uniform(-1, 1, (1, 4, 3))
    syn, trial = rng.uniform(-1, 1, (1, 4 * 3 * 2)), rng.uniform(0, 1, (2, 4))
    got = evaluate(fam.pack(params), pre, post, syn, trial)
    want = evaluate(pack([fam.rule(p).programs()[0] for p in params]), pre, post, syn, trial)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
