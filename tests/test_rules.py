import numpy as np
import pytest
import sympy
from hypothesis import given, settings, strategies as st

from rulesearch.errors import GrammarError
from rulesearch.rules import (compile_expr, parse_rule, rule_from_sympy,
                              snap_candidates, snap_constants, symbol)

x, y, w = (symbol(n) for n in "xyw")


@pytest.mark.parametrize("text, expected", [
    ("x*y - y**2*w", x * y - y**2 * w),
    ("y*(x - y*w)", y * (x - y * w)),
    ("-x + 0.5", -x + 0.5),
    ("x/(y + 2)", x / (y + 2)),
    ("square(x) - w**3", x**2 - w**3),
    ("x**-1", 1 / x),
    ("+x - -y", x + y),
])
def test_parse_meaning(full, text, expected):
    rule = parse_rule(text, full)
    assert sympy.simplify(rule.to_sympy()[0] - expected) == 0


@pytest.mark.parametrize("text", ["x*y - y**2*w", "y*(x - y*w)", "x/(w**2 + 0.5)", "-(x - w)*y + 0.25"])
def test_text_round_trip(full, text):
    rule = parse_rule(text, full)
    again = parse_rule(rule.text(), full)
    assert sympy.simplify(again.to_sympy()[0] - rule.to_sympy()[0]) == 0
    # and through sympy -> tree
    back = rule_from_sympy(rule.to_sympy(), full)
    assert sympy.simplify(back.to_sympy()[0] - rule.to_sympy()[0]) == 0


@pytest.mark.parametrize("text, message", [
    ("x*z", "unknown name 'z'"),
    ("x % y", "unsupported operator '%'"),
    ("x**y", "exponent 'y' must be an integer literal"),
    ("x**0.5", "must be a non-zero integer"),
    ("sin(x)", "unknown function 'sin'"),
    ("tanh(x)", r"operator 'tanh' \(tanh\) is not allowed"),
    ("x / y", r"operator '/' \(div\) is not allowed"),
    ("__import__('os')", "unknown function '__import__'"),
    ("x.real", "unsupported syntax"),
    ("x*(y", "not a valid expression"),
    ("", "empty expression"),
    ("x if y else w", "unsupported syntax"),
    ("'x'", "unsupported literal"),
    ("x < y", "unsupported syntax"),
])
def test_parse_refusals(hebbian, text, message):
    with pytest.raises(GrammarError, match=message):
        parse_rule(text, hebbian)


def test_refusal_names_grammar(hebbian):
    with pytest.raises(GrammarError, match="grammar 'hebbian'.*terminals x, y, w"):
        parse_rule("q", hebbian)


def test_latex_uses_grammar_symbols(hebbian):
    tex = parse_rule("x*y - y**2*w", hebbian).latex()
    assert tex.startswith(r"\Delta w_{ij} = ")
    assert "x_j" in tex and "y_i" in tex and "w_{ij}" in tex


def test_canonical_form_is_stable(hebbian):
    a = parse_rule("y*(x - y*w)", hebbian).canonical()
    b = parse_rule("x*y - w*y*y", hebbian).canonical()
    assert a.text() == b.text()
    assert a.complexity == 8  # sub(mul(x, y), mul(w, square(y)))


def test_compile_stack_depth_and_superinstructions(hebbian):
    from rulesearch.primitives import OP_AXPB, OP_MUL_CONST, OP_MUL_VAR
    prog = compile_expr(parse_rule("x*y - y**2*w", hebbian).exprs[0])
    # y**2*w is compiled as w*y**2 (a lone variable first, exact): y, square, [w, mul -> MUL_VAR],
    # y, [x, mul -> MUL_VAR], sub: 8 instructions fused to 6
    assert len(prog.code) == 6 and prog.depth >= 2 and list(prog.code).count(OP_MUL_VAR) == 2
    # a Horner step c + x * (...) is one instruction; 0.5 * (...) another
    prog = compile_expr(parse_rule("0.3 + x*(0.2 + y*w)", hebbian).exprs[0])
    assert list(prog.code).count(OP_AXPB) == 2 and len(prog.code) == 3
    assert OP_MUL_CONST in compile_expr(parse_rule("0.5*(x + y)", hebbian).exprs[0]).code


def test_snap_candidates():
    assert snap_candidates(0.498)[:2] == [0.0, 0.5]
    assert 1 / 3 in snap_candidates(0.3334)


def test_snap_constants_keeps_loss(hebbian):
    rule = parse_rule("0.5013*x*y - 0.2497*w", hebbian)

    def loss(rules):  # distance of the coefficients from (0.5, 0.25), as a stand-in objective
        return np.array([abs(r.constants()[0] - 0.5) + abs(r.constants()[1] - 0.25) + 1.0
                         for r in rules])
    snapped = snap_constants(rule, loss, tol=0.01)
    assert snapped.constants() == [0.5, 0.25]


def test_negation_without_neg_operator(hebbian):
    rule = parse_rule("-(x*y)", hebbian)
    assert rule.exprs[0][:2] == (("op", "mul"), ("const", -1.0))
    assert sympy.simplify(rule.to_sympy()[0] + x * y) == 0


def test_with_constants_keeps_structure(hebbian):
    rule = parse_rule("0.3*x + 0.7*w", hebbian)
    assert rule.with_constants([1.0, 2.0]).constants() == [1.0, 2.0]
    assert rule.with_constants([1.0, 2.0]).complexity == rule.complexity


# ---------------------------------------------------------------- property: parse(text(r)) == r

@st.composite
def expressions(draw, depth=3):
    leaf = st.one_of(st.sampled_from(["x", "y", "w"]),
                     st.floats(-3, 3, allow_nan=False).map(lambda v: f"{v:.3f}"))
    if depth == 0:
        return draw(leaf)
    choice = draw(st.integers(0, 3))
    if choice == 0:
        return draw(leaf)
    a, b = draw(expressions(depth=depth - 1)), draw(expressions(depth=depth - 1))
    if choice == 1:
        return f"({a}) {draw(st.sampled_from(['+', '-', '*']))} ({b})"
    if choice == 2:
        return f"square({a})"
    return f"-({a})"


@settings(max_examples=60, deadline=None, derandomize=True)
@given(expressions())
def test_property_text_round_trip(text):
    from rulesearch.grammar import load_grammar
    from conftest import ROOT
    g = load_grammar(ROOT / "grammars" / "hebbian-full.toml")
    rule = parse_rule(text, g)
    again = parse_rule(rule.text(), g)
    # text() keeps 6 significant digits, so coefficients agree to about 1e-6 relative
    a = sympy.Poly(sympy.expand(rule.to_sympy()[0]), x, y, w).as_dict()
    b = sympy.Poly(sympy.expand(again.to_sympy()[0]), x, y, w).as_dict()
    for m in set(a) | set(b):
        ca, cb = float(a.get(m, 0)), float(b.get(m, 0))
        assert abs(ca - cb) <= 1e-5 * max(1.0, abs(ca)), (m, ca, cb)


@pytest.mark.parametrize("text, expected", [
    ("y*(x - w*y) + 0", "y*(x - w*y)"),
    ("1*(x*y) - 0*w", "x*y"),
    ("(x - x)*w + y", "y"),
    ("2*3 + x", "6 + x"),
    ("x/1", "x"),
])
def test_simplify_identities(full, text, expected):
    from rulesearch.rules import simplify_identities
    got = simplify_identities(parse_rule(text, full).exprs[0])
    assert got == parse_rule(expected, full).exprs[0]


# ---------------------------------------------------------------- pathways

def _space(hebbian):
    from rulesearch.rules import Pathway, RuleSpace
    return RuleSpace((Pathway("ff", hebbian, r"\Delta W_{ij}"), Pathway("lat", hebbian, r"\Delta M_{ik}")))


def test_pathways_parse_in_any_order_and_round_trip(hebbian):
    space = _space(hebbian)
    rule = parse_rule("lat: -x*y; ff: x*y - y**2*w", space)
    assert [sympy.expand(e) for e in rule.to_sympy()] == [x * y - y**2 * w, -x * y]
    assert rule.text() == "ff: -w*y**2 + x*y; lat: -x*y"
    again = parse_rule(rule.text(), space)
    assert again.space == space and [sympy.expand(e) for e in again.to_sympy()] == [x * y - y**2 * w, -x * y]
    assert rule.latex() == r"\Delta W_{ij} = - w_{ij} y_i^{2} + x_j y_i; \Delta M_{ik} = - x_j y_i"
    assert rule.complexity == len(rule.exprs[0]) + len(rule.exprs[1])


@pytest.mark.parametrize("text, message", [
    ("x*y - y**2*w; -x*y", "names no pathway"),
    ("ff: x*y", "no expression for pathway lat"),
    ("ff: x*y; lat: -x*y; rec: w", "unknown pathway 'rec'"),
    ("ff: x*y; ff: w; lat: w", "pathway 'ff' is given twice"),
    ("ff: x*y; lat: x*q", "pathway 'lat': rule 'x\\*q': unknown name 'q'"),
    ("ff: x*y; lat: ", "empty expression"),
])
def test_pathway_refusals(hebbian, text, message):
    with pytest.raises(GrammarError, match=message):
        parse_rule(text, _space(hebbian))


def test_one_pathway_refuses_several_expressions(hebbian):
    with pytest.raises(GrammarError, match="one plastic pathway"):
        parse_rule("x*y; -w", hebbian)


def test_slot_encoding_is_checked(hebbian):
    from rulesearch.primitives import PRE, Variable
    from rulesearch.rules import Pathway
    wide = Pathway("w", hebbian, variables=(Variable("x", PRE, 16, "a 17th presynaptic variable"),))
    with pytest.raises(ValueError, match="variable 'x': kind 0, slot 16 cannot be encoded"):
        compile_expr(parse_rule("x*y", hebbian).exprs[0], wide)


def test_compiled_programs_are_remembered_by_shape_with_their_own_constants(hebbian):
    from rulesearch.rules import _compile_cached, as_space
    g = hebbian
    pathway = as_space(g).pathways[0]
    for text in ("0.3*x*y - 0.7*w*y + 0.1", "x*y - 0.25*w", "0.5*(x - 0.2)*(y + 0.9)", "x*y"):
        for scale in (1.0, -2.5):  # the same shape again, other constants
            rule = parse_rule(text, g)
            expr = rule.with_constants([scale * v for v in rule.constants()]).exprs[0]
            got, want = _compile_cached(expr, pathway), compile_expr(expr, pathway)
            assert np.array_equal(got.code, want.code) and np.array_equal(got.arg, want.arg)
            assert np.array_equal(got.consts, want.consts) and got.depth == want.depth


def test_remembered_programs_keep_the_sign_of_a_zero_constant(hebbian):
    # 0.0 == -0.0 as dictionary keys, but x / -0.0 is -inf: each keeps its own constant
    from rulesearch.rules import _compile_cached, as_space
    pathway = as_space(hebbian).pathways[0]
    rule = parse_rule("x*y - 0.5*w", hebbian)
    for first, second in ((0.0, -0.0), (-0.0, 0.0)):
        a, b = (rule.with_constants([v]).exprs[0] for v in (first, second))
        _compile_cached(a, pathway)
        got = _compile_cached(b, pathway).consts
        assert got[0] == 0.0 and np.signbit(got[0]) == np.signbit(second)
