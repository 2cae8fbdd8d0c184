"""The rule VM: one compiled interpreter for postfix programs over all synapses at once.

Variables reach the VM as arrays the simulator fills each step, for a batch
of B independent networks (the trials of one evaluation) at once::

    pre   (n_pre_vars, B, n_in)            e.g. x_j
    post  (n_post_vars, B, n_out)          e.g. y_i
    syn   (n_syn_vars, B * n_out * n_in)   e.g. w_ij, row-major (b, i, j)
    trial (n_trial_vars, B)                e.g. r, rbar

Each instruction runs over every synapse before the next one starts, so the
cost of interpretation is paid per instruction, not per synapse.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from numba import njit, prange

from .primitives import (
    DIV_EPS,
    EXP_MAX,
    OP_ABS,
    OP_ADD,
    OP_AXPB,
    OP_CONST,
    OP_CUBE,
    OP_EXP,
    OP_LOAD_POST,
    OP_LOAD_PRE,
    OP_LOAD_SYN,
    OP_LOAD_TRIAL,
    OP_MUL,
    OP_MUL_CONST,
    OP_MUL_VAR,
    OP_NEG,
    OP_SIGN,
    OP_SQUARE,
    OP_SUB,
    OP_TANH,
    POST,
    PRE,
    SYN,
)

# Reassociation lets LLVM vectorise the loops; NaN and inf keep their IEEE meaning
# (no 'nnan'/'ninf'), which blow-up detection relies on.
FASTMATH = {"reassoc", "contract", "arcp", "nsz"}


@dataclass(frozen=True)
class Program:
    """A postfix program for ``vm.run_program``: opcodes, arguments, constants, stack depth."""

    code: np.ndarray  # int64 (n_instr,)
    arg: np.ndarray  # int64 (n_instr,): variable slot or constant index
    consts: np.ndarray  # float64 (n_consts,)
    depth: int


@dataclass(frozen=True)
class PackedPrograms:
    """Programs concatenated into flat arrays; program k is ``code[code_start[k]:code_start[k+1]]``."""

    code: np.ndarray  # int64 (total_instr,)
    arg: np.ndarray  # int64 (total_instr,)
    consts: np.ndarray  # float64 (total_consts,)
    code_start: np.ndarray  # int64 (n_programs + 1,)
    const_start: np.ndarray  # int64 (n_programs + 1,)
    depth: int
    parts: int = 1  # programs per individual (its pathways, in the rule space's order)
    # per-individual simulation parameters a fitted family varies with its rule (e.g. the trace time
    # constants of a spiking doublet rule), (n_individuals, k); None: the task's own values
    extras: np.ndarray | None = None

    @property
    def n_programs(self) -> int:
        return len(self.code_start) - 1

    @property
    def n_individuals(self) -> int:
        return self.n_programs // self.parts


def pack(programs: Sequence[Program], parts: int = 1) -> PackedPrograms:
    """Concatenate programs (for a population: individual-major, pathway-minor; ``parts``
    programs per individual)."""
    if not programs:
        raise ValueError("pack() needs at least one program")
    if len(programs) % parts:
        raise ValueError(f"{len(programs)} programs do not split into individuals of {parts} pathways")
    code_start = np.zeros(len(programs) + 1, np.int64)
    const_start = np.zeros(len(programs) + 1, np.int64)
    code_start[1:] = np.cumsum([len(p.code) for p in programs])
    const_start[1:] = np.cumsum([len(p.consts) for p in programs])
    consts = [p.consts for p in programs]
    return PackedPrograms(np.concatenate([p.code for p in programs]),
                          np.concatenate([p.arg for p in programs]),
                          np.concatenate(consts) if const_start[-1] else np.zeros(0),
                          code_start, const_start, max(p.depth for p in programs), parts)


def individuals(packed: PackedPrograms, start: int, stop: int) -> PackedPrograms:
    """Individuals ``start:stop`` of a population (all their pathways), as a population of their own."""
    p0, p1 = start * packed.parts, stop * packed.parts
    c0, c1 = packed.code_start[p0], packed.code_start[p1]
    k0, k1 = packed.const_start[p0], packed.const_start[p1]
    return PackedPrograms(packed.code[c0:c1], packed.arg[c0:c1], packed.consts[k0:k1],
                          packed.code_start[p0:p1 + 1] - c0, packed.const_start[p0:p1 + 1] - k0,
                          packed.depth, packed.parts, None if packed.extras is None else packed.extras[start:stop])


def interleave(packs: Sequence[PackedPrograms]) -> PackedPrograms:
    """Join populations of single programs, one per pathway, into one population of
    individuals: program p of individual k comes from ``packs[p]``'s program k."""
    if len(packs) == 1:
        return packs[0]
    n = packs[0].n_programs
    if any(pk.n_programs != n or pk.parts != 1 or pk.extras is not None for pk in packs):
        raise ValueError("interleave() needs populations of the same size, one program per individual "
                         "and no per-individual parameters")
    code, arg, consts, code_len, const_len = [], [], [], [], []
    for k in range(n):
        for pk in packs:
            c0, c1 = pk.code_start[k], pk.code_start[k + 1]
            k0, k1 = pk.const_start[k], pk.const_start[k + 1]
            code.append(pk.code[c0:c1])
            arg.append(pk.arg[c0:c1])
            consts.append(pk.consts[k0:k1])
            code_len.append(c1 - c0)
            const_len.append(k1 - k0)
    return PackedPrograms(np.concatenate(code), np.concatenate(arg), np.concatenate(consts),
                          np.concatenate([[0], np.cumsum(code_len)]).astype(np.int64),
                          np.concatenate([[0], np.cumsum(const_len)]).astype(np.int64),
                          max(pk.depth for pk in packs), len(packs))


@njit(cache=True, fastmath=FASTMATH, nogil=True)
def run_program(code, arg, consts, pre, post, syn, trial, stack, out):
    """Evaluate one postfix program (already sliced) for every synapse; result into ``out``.

    pre (n_pre, B, n_in), post (n_post, B, n_out), syn (n_syn, B*n_out*n_in),
    trial (n_trial, B); B is a batch of independent networks (trials) sharing the
    rule. stack: float64 (depth, B*n_out*n_in) scratch; out: float64 (B*n_out*n_in,).
    Binary operators take their first operand from the top of the stack (see
    ``rules.compile_expr``, which emits reversed prefix order). Operators work on row
    views of the stack so that LLVM can vectorise their loops.
    """
    n_batch = pre.shape[1]
    n_in = pre.shape[2]
    n_out = post.shape[2]
    n = n_batch * n_out * n_in
    sp = 0
    for pc in range(code.shape[0]):
        op = code[pc]
        a = arg[pc]
        if op == OP_LOAD_PRE:
            k = 0
            for b in range(n_batch):
                for i in range(n_out):
                    for j in range(n_in):
                        stack[sp, k + j] = pre[a, b, j]
                    k += n_in
            sp += 1
        elif op == OP_LOAD_POST:
            k = 0
            for b in range(n_batch):
                for i in range(n_out):
                    v = post[a, b, i]
                    for j in range(n_in):
                        stack[sp, k + j] = v
                    k += n_in
            sp += 1
        elif op == OP_LOAD_SYN:
            for k in range(n):
                stack[sp, k] = syn[a, k]
            sp += 1
        elif op == OP_LOAD_TRIAL:
            m = n_out * n_in
            for b in range(n_batch):
                v = trial[a, b]
                for k in range(b * m, (b + 1) * m):
                    stack[sp, k] = v
            sp += 1
        elif op == OP_CONST:
            v = consts[a]
            for k in range(n):
                stack[sp, k] = v
            sp += 1
        elif op >= OP_MUL_VAR:  # superinstructions: update the top of the stack in place
            res = stack[sp - 1]
            if op == OP_MUL_CONST:
                v = consts[a]
                for k in range(n):
                    res[k] *= v
            else:
                c = consts[a >> 6] if op == OP_AXPB else 0.0
                kind = (a >> 4) & 3
                slot = a & 15
                if kind == SYN:
                    for k in range(n):
                        res[k] = c + syn[slot, k] * res[k]
                elif kind == PRE:
                    k = 0
                    for b in range(n_batch):
                        for i in range(n_out):
                            for j in range(n_in):
                                res[k + j] = c + pre[slot, b, j] * res[k + j]
                            k += n_in
                else:
                    m = n_out * n_in
                    for b in range(n_batch):
                        for i in range(n_out):
                            v = post[slot, b, i] if kind == POST else trial[slot, b]
                            for k in range(b * m + i * n_in, b * m + (i + 1) * n_in):
                                res[k] = c + v * res[k]
        elif op < 20:  # binary: first operand on top
            sp -= 1
            top = stack[sp]
            res = stack[sp - 1]
            if op == OP_ADD:
                for k in range(n):
                    res[k] = top[k] + res[k]
            elif op == OP_SUB:
                for k in range(n):
                    res[k] = top[k] - res[k]
            elif op == OP_MUL:
                for k in range(n):
                    res[k] = top[k] * res[k]
            else:  # OP_DIV, protected
                for k in range(n):
                    d = res[k]
                    res[k] = top[k] / d if abs(d) > DIV_EPS else 0.0
        else:
            res = stack[sp - 1]
            if op == OP_NEG:
                for k in range(n):
                    res[k] = -res[k]
            elif op == OP_SQUARE:
                for k in range(n):
                    res[k] = res[k] * res[k]
            elif op == OP_CUBE:
                for k in range(n):
                    v = res[k]
                    res[k] = v * v * v
            elif op == OP_TANH:
                for k in range(n):
                    res[k] = np.tanh(res[k])
            elif op == OP_EXP:
                for k in range(n):
                    res[k] = np.exp(min(res[k], EXP_MAX))
            elif op == OP_ABS:
                for k in range(n):
                    res[k] = abs(res[k])
            elif op == OP_SIGN:
                for k in range(n):
                    q = res[k]
                    res[k] = 1.0 if q > 0 else (-1.0 if q < 0 else 0.0)
    for k in range(n):
        out[k] = stack[0, k]


@njit(cache=True, fastmath=FASTMATH, nogil=True)
def run_program_at(code, arg, consts, c0, c1, k0, pre, post, syn, trial, stack):
    """One program (``code[c0:c1]``, its constants from ``consts[k0:]``) at a single synapse; returns
    its value. pre, post, syn, trial: 1-D arrays of slot values; stack: float64 (depth,) scratch.

    The same instructions and semantics as ``run_program``, for simulators that evaluate a rule at
    one synapse at a time (a spike's synapses, one by one): no slicing or array set-up per call,
    which costs more than the arithmetic there.
    """
    sp = 0
    for pc in range(c0, c1):
        op = code[pc]
        a = arg[pc]
        if op == OP_LOAD_PRE:
            stack[sp] = pre[a]
            sp += 1
        elif op == OP_LOAD_POST:
            stack[sp] = post[a]
            sp += 1
        elif op == OP_LOAD_SYN:
            stack[sp] = syn[a]
            sp += 1
        elif op == OP_LOAD_TRIAL:
            stack[sp] = trial[a]
            sp += 1
        elif op == OP_CONST:
            stack[sp] = consts[k0 + a]
            sp += 1
        elif op >= OP_MUL_VAR:
            if op == OP_MUL_CONST:
                stack[sp - 1] *= consts[k0 + a]
            else:
                c = consts[k0 + (a >> 6)] if op == OP_AXPB else 0.0
                kind = (a >> 4) & 3
                slot = a & 15
                if kind == SYN:
                    v = syn[slot]
                elif kind == PRE:
                    v = pre[slot]
                elif kind == POST:
                    v = post[slot]
                else:
                    v = trial[slot]
                stack[sp - 1] = c + v * stack[sp - 1]
        elif op < 20:
            sp -= 1
            top = stack[sp]
            r = stack[sp - 1]
            if op == OP_ADD:
                stack[sp - 1] = top + r
            elif op == OP_SUB:
                stack[sp - 1] = top - r
            elif op == OP_MUL:
                stack[sp - 1] = top * r
            else:
                stack[sp - 1] = top / r if abs(r) > DIV_EPS else 0.0
        else:
            v = stack[sp - 1]
            if op == OP_NEG:
                v = -v
            elif op == OP_SQUARE:
                v = v * v
            elif op == OP_CUBE:
                v = v * v * v
            elif op == OP_TANH:
                v = np.tanh(v)
            elif op == OP_EXP:
                v = np.exp(min(v, EXP_MAX))
            elif op == OP_ABS:
                v = abs(v)
            elif op == OP_SIGN:
                v = 1.0 if v > 0 else (-1.0 if v < 0 else 0.0)
            stack[sp - 1] = v
    return stack[0]


@njit(cache=True, fastmath=FASTMATH, nogil=True)
def _broadcast_variable(kind, slot, pre, post, syn, trial, row):
    """One variable laid out per synapse (b, i, j) into row."""
    n_batch, n_in, n_out = pre.shape[1], pre.shape[2], post.shape[2]
    m = n_out * n_in
    if kind == SYN:
        for k in range(n_batch * m):
            row[k] = syn[slot, k]
        return
    k = 0
    for b in range(n_batch):
        for i in range(n_out):
            for j in range(n_in):
                if kind == PRE:
                    row[k] = pre[slot, b, j]
                elif kind == POST:
                    row[k] = post[slot, b, i]
                else:
                    row[k] = trial[slot, b]
                k += 1


@njit(cache=True, fastmath=FASTMATH, nogil=True)
def run_program_tangents(code, arg, consts, pre, post, syn, trial, stack, tangent, var, out, grad):
    """``run_program`` in forward-mode differentiation: the rule's value into ``out`` and its
    derivatives with respect to x (pre slot 0), y (post slot 0) and w (syn slot 0) into grad
    (3, n), exactly (no finite differences). tangent: scratch (3, depth, n); var: scratch (n,).
    Where the VM clips (protected division, exp's argument) the derivative is that of the
    clipped function (0)."""
    n_batch = pre.shape[1]
    n_in = pre.shape[2]
    n_out = post.shape[2]
    n = n_batch * n_out * n_in
    sp = 0
    for pc in range(code.shape[0]):
        op = code[pc]
        a = arg[pc]
        if op <= OP_CONST:  # push a variable or a constant; its tangent is 1 along itself
            if op == OP_CONST:
                for k in range(n):
                    stack[sp, k] = consts[a]
            else:
                _broadcast_variable(op - OP_LOAD_PRE, a, pre, post, syn, trial, stack[sp])
            for d in range(3):
                t = 1.0 if (a == 0 and op == OP_LOAD_PRE + d) else 0.0
                for k in range(n):
                    tangent[d, sp, k] = t
            sp += 1
        elif op >= OP_MUL_VAR:  # top = c + v * top
            res = stack[sp - 1]
            if op == OP_MUL_CONST:
                v = consts[a]
                for k in range(n):
                    res[k] *= v
                for d in range(3):
                    for k in range(n):
                        tangent[d, sp - 1, k] *= v
            else:
                c = consts[a >> 6] if op == OP_AXPB else 0.0
                kind = (a >> 4) & 3
                slot = a & 15
                _broadcast_variable(kind, slot, pre, post, syn, trial, var)
                for d in range(3):
                    own = slot == 0 and kind == d  # d/dv (v * top) = top along v's own direction
                    t = tangent[d, sp - 1]
                    for k in range(n):
                        t[k] = var[k] * t[k] + (res[k] if own else 0.0)
                for k in range(n):
                    res[k] = c + var[k] * res[k]
        elif op < 20:  # binary: first operand on top
            sp -= 1
            top = stack[sp]
            res = stack[sp - 1]
            for d in range(3):
                tt = tangent[d, sp]
                tr = tangent[d, sp - 1]
                if op == OP_ADD:
                    for k in range(n):
                        tr[k] = tt[k] + tr[k]
                elif op == OP_SUB:
                    for k in range(n):
                        tr[k] = tt[k] - tr[k]
                elif op == OP_MUL:
                    for k in range(n):
                        tr[k] = tt[k] * res[k] + top[k] * tr[k]
                else:  # protected division top / res
                    for k in range(n):
                        q = res[k]
                        tr[k] = (tt[k] * q - top[k] * tr[k]) / (q * q) if abs(q) > DIV_EPS else 0.0
            if op == OP_ADD:
                for k in range(n):
                    res[k] = top[k] + res[k]
            elif op == OP_SUB:
                for k in range(n):
                    res[k] = top[k] - res[k]
            elif op == OP_MUL:
                for k in range(n):
                    res[k] = top[k] * res[k]
            else:
                for k in range(n):
                    q = res[k]
                    res[k] = top[k] / q if abs(q) > DIV_EPS else 0.0
        else:  # unary: derivative factor into var, then value
            res = stack[sp - 1]
            for k in range(n):
                v = res[k]
                if op == OP_NEG:
                    var[k] = -1.0
                    res[k] = -v
                elif op == OP_SQUARE:
                    var[k] = 2.0 * v
                    res[k] = v * v
                elif op == OP_CUBE:
                    var[k] = 3.0 * v * v
                    res[k] = v * v * v
                elif op == OP_TANH:
                    t = np.tanh(v)
                    var[k] = 1.0 - t * t
                    res[k] = t
                elif op == OP_EXP:
                    e = np.exp(min(v, EXP_MAX))
                    var[k] = e if v < EXP_MAX else 0.0
                    res[k] = e
                elif op == OP_ABS:
                    var[k] = 1.0 if v > 0 else (-1.0 if v < 0 else 0.0)
                    res[k] = abs(v)
                else:  # OP_SIGN: piecewise constant (derivative 0 away from 0)
                    var[k] = 0.0
                    res[k] = 1.0 if v > 0 else (-1.0 if v < 0 else 0.0)
            for d in range(3):
                for k in range(n):
                    tangent[d, sp - 1, k] *= var[k]
    for k in range(n):
        out[k] = stack[0, k]
        for d in range(3):
            grad[d, k] = tangent[d, 0, k]


@njit(cache=True, parallel=True)
def _run_packed(code, arg, consts, code_start, const_start, depth, pre, post, syn, trial):
    n_prog = code_start.shape[0] - 1
    n = pre.shape[1] * post.shape[2] * pre.shape[2]
    out = np.empty((n_prog, n))
    for p in prange(n_prog):
        stack = np.empty((depth, n))
        c0, c1 = code_start[p], code_start[p + 1]
        k0, k1 = const_start[p], const_start[p + 1]
        run_program(code[c0:c1], arg[c0:c1], consts[k0:k1], pre, post, syn, trial, stack, out[p])
    return out


def evaluate(packed: PackedPrograms, pre: np.ndarray, post: np.ndarray, syn: np.ndarray,
             trial: np.ndarray) -> np.ndarray:
    """Every packed program on the same variables -> float64 (n_programs, B * n_out * n_in).

    pre (n_pre, B, n_in), post (n_post, B, n_out), syn (n_syn, B*n_out*n_in), trial (n_trial, B).
    """
    pre, post, syn, trial = (np.ascontiguousarray(a, dtype=np.float64) for a in (pre, post, syn, trial))
    if pre.ndim != 3 or post.ndim != 3 or syn.ndim != 2 or trial.ndim != 2:
        raise ValueError("pre and post must be 3-D (slots, batch, units); syn and trial 2-D")
    n_batch, n_in, n_out = pre.shape[1], pre.shape[2], post.shape[2]
    if post.shape[1] != n_batch or trial.shape[1] != n_batch or syn.shape[1] != n_batch * n_out * n_in:
        raise ValueError(f"inconsistent shapes: pre {pre.shape}, post {post.shape}, syn {syn.shape}, "
                         f"trial {trial.shape}")
    return _run_packed(packed.code, packed.arg, packed.consts, packed.code_start,
                       packed.const_start, packed.depth, pre, post, syn, trial)


def evaluate_tangents(packed: PackedPrograms, pre: np.ndarray, post: np.ndarray, syn: np.ndarray,
                      trial: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every packed program's value (n_programs, n) and its derivatives in x, y, w (pre, post and
    syn slot 0) as (n_programs, 3, n), n = B * n_out * n_in; arrays as for ``evaluate``."""
    pre, post, syn, trial = (np.ascontiguousarray(a, dtype=np.float64) for a in (pre, post, syn, trial))
    n = pre.shape[1] * post.shape[2] * pre.shape[2]
    values = np.empty((packed.n_programs, n))
    grads = np.empty((packed.n_programs, 3, n))
    stack, tangent, var = np.empty((packed.depth, n)), np.empty((3, packed.depth, n)), np.empty(n)
    for p in range(packed.n_programs):
        c0, c1 = packed.code_start[p], packed.code_start[p + 1]
        k0, k1 = packed.const_start[p], packed.const_start[p + 1]
        run_program_tangents(packed.code[c0:c1], packed.arg[c0:c1], packed.consts[k0:k1], pre, post, syn, trial,
                             stack, tangent, var, values[p], grads[p])
    return values, grads
