"""The VM against sympy's lambdify on random trees and random inputs."""
import numpy as np
import pytest
import sympy
from hypothesis import given, settings, strategies as st

from rulesearch.primitives import PRIMITIVES
from rulesearch.rules import Rule, parse_rule, symbol
from rulesearch.vm import evaluate, evaluate_tangents, pack, run_program_at

OPS = ["add", "sub", "mul", "div", "neg", "square", "cube", "tanh", "exp", "abs", "sign"]


def _grammar(g):
    from dataclasses import replace
    return replace(g, operators=tuple(OPS))


@st.composite
def prefix_trees(draw, depth=4):
    if depth == 0 or draw(st.integers(0, 3)) == 0:
        if draw(st.booleans()):
            return [("var", draw(st.sampled_from(["x", "y", "w"])))]
        return [("const", draw(st.floats(-2, 2, allow_nan=False, width=32)))]
    op = draw(st.sampled_from(OPS))
    out = [("op", op)]
    for _ in range(PRIMITIVES[op].arity):
        out += draw(prefix_trees(depth=depth - 1))
    return out


def _inputs(rng, n_batch=2, n_out=3, n_in=4):
    pre = rng.uniform(-2, 2, size=(1, n_batch, n_in))
    post = rng.uniform(-2, 2, size=(1, n_batch, n_out))
    syn = rng.uniform(-2, 2, size=(1, n_batch * n_out * n_in))
    return pre, post, syn, np.zeros((0, n_batch))


def _broadcast(pre, post, syn):
    b, n_in = pre.shape[1:]
    n_out = post.shape[2]
    xs = np.broadcast_to(pre[0][:, None, :], (b, n_out, n_in)).ravel()
    ys = np.broadcast_to(post[0][:, :, None], (b, n_out, n_in)).ravel()
    return {"x": xs, "y": ys, "w": syn[0]}


def _case(tree, seed):
    """The tree as a rule over the full grammar, its sympy meaning, random inputs and the inputs
    per synapse; None when sympy's meaning is not finite."""
    from conftest import ROOT
    from rulesearch.grammar import load_grammar
    rule = Rule((tuple(tree),), _grammar(load_grammar(ROOT / "grammars" / "hebbian-full.toml")))
    expr = rule.to_sympy()[0]
    if expr.has(sympy.zoo, sympy.nan, sympy.oo):
        return None
    pre, post, syn, trial = _inputs(np.random.default_rng(seed))
    return rule, expr, (pre, post, syn, trial), _broadcast(pre, post, syn)


def _exact(expr, env, shape):
    f = sympy.lambdify([symbol(n) for n in "xyw"], expr, modules="numpy")
    with np.errstate(all="ignore"):
        want = np.broadcast_to(np.asarray(f(env["x"], env["y"], env["w"]), float), shape)
    return want, np.isfinite(want) & (np.abs(want) < 1e8)


@settings(max_examples=150, deadline=None, derandomize=True)  # same examples in every CI run
@given(prefix_trees(), st.integers(0, 2**31))
def test_vm_matches_lambdify(tree, seed):
    case = _case(tree, seed)
    if case is None:
        return
    rule, expr, inputs, env = case
    got = evaluate(pack(rule.programs()), *inputs)[0]
    want, ok = _exact(expr, env, got.shape)
    ok &= ~_near_guard(tree, env)  # protected operators differ from the exact meaning only near their guards
    np.testing.assert_allclose(got[ok], want[ok], rtol=1e-6, atol=1e-8)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(prefix_trees(), st.integers(0, 2**31))
def test_single_synapse_vm_matches_the_array_vm(tree, seed):
    """run_program_at (one synapse at a time, as spiking simulators call it) gives run_program's
    values, synapse by synapse, on the same fused programs."""
    case = _case(tree, seed)
    if case is None:
        return
    rule, _, (pre, post, syn, trial), _ = case
    packed = pack(rule.programs())
    want = evaluate(packed, pre, post, syn, trial)[0]
    stack = np.empty(packed.depth)
    n_batch, n_in, n_out = pre.shape[1], pre.shape[2], post.shape[2]
    got = np.array([run_program_at(packed.code, packed.arg, packed.consts, 0, len(packed.code), 0,
                                   pre[:, b, j].copy(), post[:, b, i].copy(), syn[:, (b * n_out + i) * n_in + j].copy(),
                                   trial[:, b].copy(), stack)
                    for b in range(n_batch) for i in range(n_out) for j in range(n_in)])
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-300)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(prefix_trees(), st.integers(0, 2**31))
def test_vm_derivatives_match_sympy(tree, seed):
    """Forward-mode derivatives in x, y, w (used by the choice model's weight filter) against
    sympy.diff of the same tree; the value against ``run_program``'s."""
    case = _case(tree, seed)
    if case is None:
        return
    rule, expr, inputs, env = case
    packed = pack(rule.programs())
    value, grad = evaluate_tangents(packed, *inputs)
    np.testing.assert_array_equal(value[0], evaluate(packed, *inputs)[0])
    for d, name in enumerate("xyw"):
        # sign's derivative is 0 away from 0 (sympy: DiracDelta, which numbers cannot hold)
        deriv = sympy.diff(expr, symbol(name)).replace(sympy.DiracDelta, lambda *a: sympy.Integer(0))
        want, ok = _exact(deriv, env, value[0].shape)
        ok &= ~_near_guard(tree, env)
        np.testing.assert_allclose(grad[0, d][ok], want[ok], rtol=1e-6, atol=1e-8, err_msg=name)


def _near_guard(tree, env):
    """Synapses where a protected div had a tiny denominator or exp was clipped."""
    flags = np.zeros_like(env["x"], bool)
    vals = []
    for kind, value in reversed(tree):  # postfix evaluation of exact values
        if kind == "var":
            vals.append(env[value].astype(float))
        elif kind == "const":
            vals.append(np.full_like(env["x"], value))
        else:
            arity = PRIMITIVES[value].arity
            args = [vals.pop() for _ in range(arity)]
            with np.errstate(all="ignore"):
                if value == "div":
                    flags |= np.abs(args[1]) < 1e-6
                    res = args[0] / args[1]
                elif value == "exp":
                    flags |= args[0] > 25
                    res = np.exp(args[0])
                else:
                    fn = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "neg": np.negative,
                          "square": np.square, "cube": lambda a: a**3, "tanh": np.tanh, "abs": np.abs,
                          "sign": np.sign}[value]
                    res = fn(*args)
            flags |= ~np.isfinite(res)
            vals.append(res)
    return flags


def test_population_rows_are_independent(full, rng):
    rules = [parse_rule(t, full) for t in ["x*y", "x - w", "y*(x - y*w)", "0.5"]]
    pre, post, syn, trial = _inputs(rng)
    together = evaluate(pack([p for r in rules for p in r.programs()]), pre, post, syn, trial)
    for i, r in enumerate(rules):
        alone = evaluate(pack(r.programs()), pre, post, syn, trial)[0]
        np.testing.assert_array_equal(together[i], alone)


def test_protected_division_returns_zero(full, rng):
    rule = parse_rule("x/(w - w)", full)
    pre, post, syn, trial = _inputs(rng)
    assert np.all(evaluate(pack(rule.programs()), pre, post, syn, trial) == 0.0)


def test_shape_errors(full, rng):
    pre, post, syn, trial = _inputs(rng)
    with pytest.raises(ValueError, match="inconsistent shapes"):
        evaluate(pack(parse_rule("x", full).programs()), pre, post, syn[:, :5], trial)


@st.composite
def reward_trees(draw, depth=4):
    """Trees over every kind of variable (pre, post, synapse, trial) and every binary operator."""
    if depth == 0 or draw(st.integers(0, 3)) == 0:
        if draw(st.integers(0, 4)):
            return [("var", draw(st.sampled_from(["x", "y", "w", "r", "rbar"])))]
        return [("const", draw(st.floats(-2, 2, allow_nan=False, width=32)))]
    op = draw(st.sampled_from(OPS))
    out = [("op", op)]
    for _ in range(PRIMITIVES[op].arity):
        out += draw(reward_trees(depth=depth - 1))
    return out


def _reward_case(tree, seed, shape):
    """A tree over the reward grammar, packed, and random pre (1, B, n_in), post (1, B, n_out), synapse
    (1, B*n_out*n_in) and trial (2, B) variables for shape (B, n_out, n_in)."""
    from conftest import ROOT
    from rulesearch.grammar import load_grammar
    rule = Rule((tuple(tree),), _grammar(load_grammar(ROOT / "grammars" / "reward.toml")))
    n_batch, n_out, n_in = shape
    rng = np.random.default_rng(seed)
    return (pack(rule.programs()), rng.uniform(-2, 2, size=(1, n_batch, n_in)),
            rng.uniform(-2, 2, size=(1, n_batch, n_out)), rng.uniform(-2, 2, size=(1, n_batch * n_out * n_in)),
            rng.uniform(-2, 2, size=(2, n_batch)))


@settings(max_examples=200, deadline=None, derandomize=True)
@given(reward_trees(), st.integers(0, 2**31), st.sampled_from([(1, 1, 7), (3, 2, 5), (2, 4, 1)]))
def test_row_vm_matches_the_per_synapse_vm(tree, seed, shape):
    """run_rows (values kept compact per class: per trial, per input, per output, per synapse) gives
    the values of run_program (every value laid out per synapse), for batches of several trials,
    one or several outputs and inputs, with trial variables (reward) too."""
    from rulesearch.vm import run_program
    packed, pre, post, syn, trial = _reward_case(tree, seed, shape)
    got = evaluate(packed, pre, post, syn, trial)[0]
    want = np.empty_like(got)
    run_program(packed.code, packed.arg, packed.consts, pre, post, syn, trial,
                np.empty((packed.depth, got.size)), want)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(reward_trees(), st.integers(0, 2**31), st.sampled_from([(1, 1, 7), (3, 2, 5), (2, 4, 1)]))
def test_fused_update_plan_matches_the_per_synapse_vm(tree, seed, shape):
    """A plan that ends with the weight update (vm.compile_plan with a target row: the last operator and
    the multiplications that produce its operands fused into one pass) writes u + eta * rule, the rule's
    values from run_program, into the other weight row, with the weights among the operands too."""
    from rulesearch.vm import compile_plan, run_plan, run_program
    packed, pre, post, syn, trial = _reward_case(tree, seed, shape)
    n_batch, n_out, n_in = shape
    n = n_batch * n_out * n_in
    want = np.empty(n)
    run_program(packed.code, packed.arg, packed.consts, pre, post, syn, trial, np.empty((packed.depth, n)), want)
    # rows: x, y, w, r, rbar, the stack, the new weights
    rows = np.array([0, 1, 2, 3, 5])
    mem = np.full((5 + packed.depth + 1, n), np.nan)  # NaN: a row read before it is written shows
    x_in = pre[0].ravel().copy()  # row 0 is read where it is (a simulator's inputs): mem's row 0 stays NaN
    mem[1, :n_batch * n_out] = post[0].ravel()
    mem[2] = syn[0]
    mem[3, :n_batch], mem[4, :n_batch] = trial[0], trial[1]
    w_row = mem.shape[0] - 1
    plan, imm, _ = compile_plan(packed.code, packed.arg, packed.consts, rows, w_row, 2)
    eta = 0.125
    z = np.random.default_rng(seed).uniform(-1, 1, n_batch * n_in)  # the next step's inputs
    dots = np.full(n_batch * n_out, np.nan)
    squares = run_plan(plan.ctypes.data, imm.ctypes.data, plan.shape[0], mem.ctypes.data, mem.shape[1],
                       x_in.ctypes.data, n_batch, n_out, n_in, eta, z.ctypes.data, dots.ctypes.data)
    new = syn[0] + eta * want
    np.testing.assert_allclose(mem[w_row], new, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(mem[2], syn[0])  # the old weights untouched
    # the same pass: the next step's W z per output, and the sum of the new weights' squares
    w_new = mem[w_row].reshape(n_batch, n_out, n_in)
    np.testing.assert_allclose(dots, np.einsum("boj,bj->bo", w_new, z.reshape(n_batch, n_in)).ravel(),
                               rtol=1e-12, atol=1e-12)
    assert squares == pytest.approx(float(np.sum(mem[w_row] ** 2)), rel=1e-12, abs=1e-300)


def test_plans_fold_the_products_into_the_update():
    """Oja's rule becomes two plan entries: y*y, then w_new = w + eta * (x * y - w * (y*y)) in one pass."""
    from rulesearch.grammar import find_grammar, load_grammar
    from rulesearch.vm import K_UNARY, K_UPDATE, P_KIND, compile_plan
    rule = parse_rule("x*y - square(y)*w", load_grammar(find_grammar("hebbian")))
    packed = pack(rule.programs())
    plan, _, _ = compile_plan(packed.code, packed.arg, packed.consts, np.array([0, 1, 2, -1, 3]), 5, 2)
    assert list(plan[:, P_KIND]) == [K_UNARY, K_UPDATE]
