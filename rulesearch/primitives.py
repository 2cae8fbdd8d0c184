"""The operator and variable tables shared by the grammar, the parser, sympy and the VM.

Adding an operator is one row in ``PRIMITIVES`` plus one branch in ``vm._apply``.
Adding a variable a synapse can see is one row in ``VARIABLES`` plus the
simulator filling its slot.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import sympy

# Protected semantics. Kept as named constants so that the VM, the NumPy
# reference in the tests and the docs agree on one number.
DIV_EPS = 1e-10  # |denominator| below this: protected division returns 0
EXP_MAX = 30.0  # exp argument is clipped here so that exp never overflows

# Variable kinds: where a value lives in a network. The VM broadcasts a
# presynaptic value along rows, a postsynaptic one along columns.
PRE, POST, SYN, TRIAL = 0, 1, 2, 3
KINDS = {PRE: "pre", POST: "post", SYN: "synapse", TRIAL: "trial"}

# VM opcodes. Loads take their slot (or constant index) from the argument array.
OP_LOAD_PRE, OP_LOAD_POST, OP_LOAD_SYN, OP_LOAD_TRIAL, OP_CONST = 0, 1, 2, 3, 4
OP_ADD, OP_SUB, OP_MUL, OP_DIV = 10, 11, 12, 13
OP_NEG, OP_SQUARE, OP_CUBE, OP_TANH, OP_EXP, OP_ABS, OP_SIGN = 20, 21, 22, 23, 24, 25, 26
LOAD_OPCODES = {PRE: OP_LOAD_PRE, POST: OP_LOAD_POST, SYN: OP_LOAD_SYN, TRIAL: OP_LOAD_TRIAL}
# Superinstructions, emitted by rules.compile_expr for common instruction runs (one pass over
# the synapses instead of two to four). The variable operand is encoded as kind * 16 + slot.
OP_MUL_VAR = 30  # top = var * top                  (from: load var, mul)
OP_MUL_CONST = 31  # top = consts[arg] * top        (from: const, mul)
OP_AXPB = 32  # top = consts[arg >> 6] + var * top  (from: load var, mul, const, add; Horner steps)


@dataclass(frozen=True)
class Variable:
    """A quantity a synapse can see; ``slot`` indexes the simulator's array of that kind."""

    name: str
    kind: int
    slot: int
    meaning: str
    latex: str = ""  # a pathway's own LaTeX symbol (e.g. y_k for a lateral input); "": the grammar's


VARIABLES: dict[str, Variable] = {
    v.name: v
    for v in (
        Variable("x", PRE, 0, "presynaptic activity"),
        Variable("y", POST, 0, "postsynaptic activity"),
        Variable("w", SYN, 0, "synaptic weight"),
        Variable("r", TRIAL, 0, "reward"),
        Variable("rbar", TRIAL, 1, "expected reward"),
        # spiking networks (slots after the rate network's, so one catalogue serves all)
        Variable("x_pre", PRE, 1, "presynaptic spike trace (+1 per spike, decays with tau_pre)"),
        Variable("x_post", POST, 1, "postsynaptic spike trace (+1 per spike, decays with tau_post)"),
        Variable("v", POST, 2, "postsynaptic membrane potential, (V - E_L) / (V_th - E_L)"),
        # noise-probed networks
        Variable("c_pre", PRE, 2, "noise-driven variance of the presynaptic neuron"),
        Variable("c_post", POST, 3, "noise-driven variance of the postsynaptic neuron"),
        Variable("c", SYN, 1, "noise-driven covariance of the two neurons"),
    )
}


def _sympy_protected_div(a, b):
    return a / b


@dataclass(frozen=True)
class Primitive:
    """An operator: ``sympy_fn`` gives its exact (unprotected) mathematical meaning."""

    name: str
    arity: int
    opcode: int
    sympy_fn: Callable
    description: str


PRIMITIVES: dict[str, Primitive] = {
    p.name: p
    for p in (
        Primitive("add", 2, OP_ADD, lambda a, b: a + b, "a + b"),
        Primitive("sub", 2, OP_SUB, lambda a, b: a - b, "a - b"),
        Primitive("mul", 2, OP_MUL, lambda a, b: a * b, "a * b"),
        Primitive("div", 2, OP_DIV, _sympy_protected_div, f"a / b, 0 where |b| < {DIV_EPS:g}"),
        Primitive("neg", 1, OP_NEG, lambda a: -a, "-a"),
        Primitive("square", 1, OP_SQUARE, lambda a: a**2, "a**2"),
        Primitive("cube", 1, OP_CUBE, lambda a: a**3, "a**3"),
        Primitive("tanh", 1, OP_TANH, sympy.tanh, "tanh(a)"),
        Primitive("exp", 1, OP_EXP, sympy.exp, f"exp(min(a, {EXP_MAX:g}))"),
        Primitive("abs", 1, OP_ABS, sympy.Abs, "|a|"),
        Primitive("sign", 1, OP_SIGN, sympy.sign, "sign(a): -1, 0 or 1"),
    )
}

# Operators every grammar gets unless it lists its own.
DEFAULT_OPERATORS = ("add", "sub", "mul", "div", "neg", "square")
