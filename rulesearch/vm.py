"""The rule VM: compiled interpreters for postfix programs over all synapses at once.

Variables reach the VM as arrays the simulator fills each step, for a batch
of B independent networks (the trials of one evaluation) at once::

    pre   (n_pre_vars, B, n_in)            e.g. x_j
    post  (n_post_vars, B, n_out)          e.g. y_i
    syn   (n_syn_vars, B * n_out * n_in)   e.g. w_ij, row-major (b, i, j)
    trial (n_trial_vars, B)                e.g. r, rbar

Each instruction runs over every synapse before the next one starts, so the
cost of interpretation is paid per instruction, not per synapse. Entry points:
``run_rows`` (values kept compact per trial, input, output or synapse, in rows of
one array; ``evaluate``), ``compile_plan`` + ``run_plan`` (the same, translated once
per simulation, with the weight update fused in; the rate simulator), ``run_program`` (every value laid
out per synapse; the choice and spiking simulators, to be ported), ``run_program_at``
(one synapse) and ``run_program_tangents`` (forward-mode derivatives in x, y, w).
All give the same values (tested against each other and against sympy).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from numba import njit

from ._borrow import borrowed, floats, ints
from .threads import run_strided
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
# The VM divides exactly: with 'arcp' a division by a value repeated over a block becomes a
# multiplication by its reciprocal, one ulp away from the same division elsewhere, and the VM's
# entry points (whole rows, single synapses, with tangents) must agree to the last bit.
_BINARY_MATH = FASTMATH - {"arcp"}

# Shape classes of a value during evaluation: what it varies over. A value is stored compactly in its
# class's layout, so a subexpression of the postsynaptic activity alone (y*y) costs n_out operations
# per network, one of the presynaptic activity alone n_in, not n_out * n_in; a binary result's class
# is the union (bitwise or) of its operands'. Layouts, for B networks: BATCH (B,), PRE (B, n_in),
# POST (B, n_out), SYN (B, n_out, n_in), row-major.
CLS_BATCH, CLS_PRE, CLS_POST, CLS_SYN = 0, 1, 2, 3
MAX_STACK = 31  # the classes of the stack's entries are kept 2 bits each in one int64


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
    if max(p.depth for p in programs) > MAX_STACK:
        raise ValueError(f"a program needs a stack of {max(p.depth for p in programs)} entries; the VM "
                         f"keeps at most {MAX_STACK}")
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


# The row VM (``run_rows``, ``compile_plan`` + ``run_plan``): every value, the simulator's variables and
# the stack alike, is a row of one 2-D array ``mem``, addressed by its row index. A program is first
# translated into a plan (once per simulation): loads and constants become references to rows and
# immediate values rather than copies, each operation writes one stack row from its operands' rows,
# every value's class is resolved, and a simulator's weight update is fused into the last operation
# (w += eta * op(p * a, b)). Each step then runs the plan's few entries with no decoding left. Helpers
# that are not inlined take addresses and lengths (``_borrow``), never arrays: an array argument costs
# reference counting calls that at a hundred synapses outweigh the arithmetic.
@njit(cache=True, fastmath=_BINARY_MATH, nogil=True, inline="always")
def _f(op, c, x, y):
    """op(x, y), x the first operand; OP_AXPB: c + x * y; OP_DIV protected."""
    if op == OP_MUL:
        return x * y
    if op == OP_ADD:
        return x + y
    if op == OP_SUB:
        return x - y
    if op == OP_AXPB:
        return c + x * y
    return x / y if abs(y) > DIV_EPS else 0.0


# The loops themselves, the operator chosen outside them so that they vectorise; a subtraction is an
# addition of -1 times the second operand (exactly the same number), one loop fewer to compile. They
# work in place (b = op(a, b), b = op(s, b)): an output that may be the same memory as an input would
# send every call down LLVM's scalar loop after its run-time overlap check.
@njit(cache=True, fastmath=_BINARY_MATH, nogil=True, inline="always")
def _vv(op, c, a, b, n):
    """b[:n] = op(a[:n], b[:n]) (views that do not overlap)."""
    if op == OP_MUL:
        for j in range(n):
            b[j] = a[j] * b[j]
    elif op == OP_ADD or op == OP_SUB:
        sg = 1.0 if op == OP_ADD else -1.0
        for j in range(n):
            b[j] = a[j] + sg * b[j]
    elif op == OP_AXPB:
        for j in range(n):
            b[j] = c + a[j] * b[j]
    else:
        for j in range(n):
            q = b[j]
            b[j] = a[j] / q if abs(q) > DIV_EPS else 0.0


@njit(cache=True, fastmath=_BINARY_MATH, nogil=True, inline="always")
def _sv(op, c, s, b, n):
    """b[:n] = op(s, b[:n])."""
    if op == OP_MUL:
        for j in range(n):
            b[j] = s * b[j]
    elif op == OP_ADD or op == OP_SUB:
        sg = 1.0 if op == OP_ADD else -1.0
        for j in range(n):
            b[j] = s + sg * b[j]
    elif op == OP_AXPB:
        for j in range(n):
            b[j] = c + s * b[j]
    else:
        for j in range(n):
            q = b[j]
            b[j] = s / q if abs(q) > DIV_EPS else 0.0


@njit(cache=True, fastmath=_BINARY_MATH, nogil=True, inline="always")
def _vs(op, c, a, s, d, n):
    """d[:n] = op(a[:n], s) (d equal to a or not overlapping it)."""
    if op == OP_MUL:
        for j in range(n):
            d[j] = a[j] * s
    elif op == OP_ADD or op == OP_SUB:
        t = s if op == OP_ADD else -s
        for j in range(n):
            d[j] = a[j] + t
    elif op == OP_AXPB:
        for j in range(n):
            d[j] = c + a[j] * s
    else:
        ok = abs(s) > DIV_EPS
        for j in range(n):
            d[j] = a[j] / s if ok else 0.0


@njit(cache=True, fastmath=_BINARY_MATH, nogil=True, inline="always")
def _unary(op, v, n):
    """v[:n] = op(v[:n]) in place for a unary opcode (both interpreters)."""
    if op == OP_NEG:
        for k in range(n):
            v[k] = -v[k]
    elif op == OP_SQUARE:
        for k in range(n):
            q = v[k]
            v[k] = q * q
    elif op == OP_CUBE:
        for k in range(n):
            q = v[k]
            v[k] = q * q * q
    elif op == OP_TANH:
        for k in range(n):
            v[k] = np.tanh(v[k])
    elif op == OP_EXP:
        for k in range(n):
            v[k] = np.exp(min(v[k], EXP_MAX))
    elif op == OP_ABS:
        for k in range(n):
            v[k] = abs(v[k])
    elif op == OP_SIGN:
        for k in range(n):
            q = v[k]
            v[k] = 1.0 if q > 0 else (-1.0 if q < 0 else 0.0)


@njit(cache=True, fastmath=_BINARY_MATH, nogil=True, inline="always")
def _unary1(op, q):
    """op(q) for one value, as ``_unary`` computes it."""
    if op == OP_NEG:
        return -q
    if op == OP_SQUARE:
        return q * q
    if op == OP_CUBE:
        return q * q * q
    if op == OP_TANH:
        return np.tanh(q)
    if op == OP_EXP:
        return np.exp(min(q, EXP_MAX))
    if op == OP_ABS:
        return abs(q)
    return 1.0 if q > 0 else (-1.0 if q < 0 else 0.0)  # OP_SIGN


@njit(cache=True, fastmath=_BINARY_MATH, nogil=True, inline="always")
def _class_size(cls, n_batch, n_out, n_in):
    if cls == CLS_SYN:
        return n_batch * n_out * n_in
    if cls == CLS_PRE:
        return n_batch * n_in
    if cls == CLS_POST:
        return n_batch * n_out
    return n_batch


# Plans: one row of int64 columns and one of float64 columns per entry.
# An update entry writes the weights of row P_U plus eta * op(p * a, b * q) into row P_DST; q_cls < 0: no q.
P_KIND, P_OP, P_DST, P_CLS, P_A, P_A_CLS, P_B, P_B_CLS, P_P, P_P_CLS, P_Q, P_Q_CLS, P_U = range(13)  # rows < 0: immediates
F_A, F_B, F_P, F_C, F_Q = range(5)  # float columns: the immediates of a, b, p, OP_AXPB's constant, q
N_INT, N_FLOAT = 13, 5
K_UNARY, K_BINARY, K_UPDATE = 0, 1, 2
OP_COPY = -1  # plan only: dst = a


@njit(cache=True, nogil=True, inline="always")
def _is_run(row, cls):
    """Whether an operand varies within a block of synapses (a run) rather than being one value there."""
    return row >= 0 and (cls == CLS_SYN or cls == CLS_PRE)


@njit(cache=True, nogil=True)
def _producer(plan, k, row, stack_row):
    """The entry before k that last wrote ``row`` when it is a multiplication whose operands no later entry
    (before k) overwrites, so that the update at k can multiply them itself; else -1."""
    if row < stack_row:  # a variable or an immediate: nobody's product
        return -1
    j = k - 1
    while j >= 0 and plan[j, P_DST] != row:
        j -= 1
    if j < 0 or plan[j, P_KIND] != K_BINARY or plan[j, P_OP] != OP_MUL:
        return -1
    for i in range(j + 1, k):
        if plan[i, P_DST] == plan[j, P_A] or plan[i, P_DST] == plan[j, P_B]:
            return -1
    return j


@njit(cache=True, nogil=True)
def _drop(plan, imm, j, k):
    """Remove entry j (< k) from the plan's first k + 1 entries; returns the new index of entry k."""
    for i in range(j, k):  # element by element: a row assignment compiles a shape check and its message
        for c in range(N_INT):
            plan[i, c] = plan[i + 1, c]
        for c in range(N_FLOAT):
            imm[i, c] = imm[i + 1, c]
    return k - 1


@njit(cache=True, nogil=True)
def _fuse_products(plan, imm, k, stack_row):
    """Fold the multiplications that produce the update's (entry k's) operands into it: w += eta * op(p * a,
    b * q) in one pass instead of a pass per product (Oja's rule: x*y - w*y**2, the hand-written loop).
    The a side when p is 1 (any product); the b side when, on each side, one factor is a run and the
    other one value per block (the form the update's loop takes). Returns the update's new index."""
    if plan[k, P_P] < 0 and imm[k, F_P] == 1.0:
        j = _producer(plan, k, plan[k, P_A], stack_row)
        if j >= 0:
            ar, ac, ai, br, bc, bi = plan[j, P_A], plan[j, P_A_CLS], imm[j, F_A], plan[j, P_B], plan[j, P_B_CLS], imm[j, F_B]
            k = _drop(plan, imm, j, k)
            plan[k, P_P], plan[k, P_P_CLS], imm[k, F_P] = ar, ac, ai
            plan[k, P_A], plan[k, P_A_CLS], imm[k, F_A] = br, bc, bi
    # the b side only when the a side is a run times a value (x*y - w*y**2), the form with a loop for it
    a_side = _is_run(plan[k, P_P], plan[k, P_P_CLS]) != _is_run(plan[k, P_A], plan[k, P_A_CLS])
    j = _producer(plan, k, plan[k, P_B], stack_row) if a_side else -1
    if j >= 0 and _is_run(plan[j, P_A], plan[j, P_A_CLS]) != _is_run(plan[j, P_B], plan[j, P_B_CLS]):
        ar, ac, ai, br, bc, bi = plan[j, P_A], plan[j, P_A_CLS], imm[j, F_A], plan[j, P_B], plan[j, P_B_CLS], imm[j, F_B]
        k = _drop(plan, imm, j, k)
        if not _is_run(ar, ac):  # b the run, q the value
            ar, ac, ai, br, bc, bi = br, bc, bi, ar, ac, ai
        plan[k, P_B], plan[k, P_B_CLS], imm[k, F_B] = ar, ac, ai
        plan[k, P_Q], plan[k, P_Q_CLS], imm[k, F_Q] = br, bc, bi
    return k


@njit(cache=True, nogil=True)
def compile_plan(code, arg, consts, rows, w_row, u_row):
    """Translate one postfix program (already sliced) into a plan for ``run_plan``: (plan int64 (n, N_INT),
    imm float64 (n, N_FLOAT), the result's class). rows: as for ``run_rows``. w_row >= 0: the plan ends by
    writing the weights of row u_row plus eta times the result into row w_row (every synapse; two rows,
    see ``_update``), fused with the last operation and the multiplications that produce its operands;
    w_row < 0: the result is left in ``mem[rows[4]]``.

    Loads and constants emit nothing: the compile-time stack holds references (a row and its class, or
    an immediate value), and an operation writes its stack position's row from its operands' rows."""
    n_code = code.shape[0]
    stack_row = rows[4]
    plan = np.zeros((n_code + 2, N_INT), np.int64)
    imm = np.zeros((n_code + 2, N_FLOAT))
    s_row = np.zeros(MAX_STACK + 1, np.int64)
    s_cls = np.zeros(MAX_STACK + 1, np.int64)
    s_imm = np.zeros(MAX_STACK + 1)
    tail = n_code  # the instruction that becomes the fused update
    if w_row >= 0 and n_code >= 2:
        last = code[n_code - 1]
        if last == OP_ADD or last == OP_SUB or last == OP_MUL:
            tail = n_code - 2 if code[n_code - 2] == OP_MUL_VAR else n_code - 1
        elif last == OP_MUL_VAR or last == OP_AXPB:
            tail = n_code - 1
    sp = 0
    k = 0
    for pc in range(n_code):
        op = code[pc]
        a = arg[pc]
        if pc == tail:  # w += eta * op(p * a, b): the operands as they stand
            e = plan[k]
            e[P_KIND], e[P_DST], e[P_CLS], e[P_Q], e[P_Q_CLS], e[P_U] = K_UPDATE, w_row, CLS_SYN, -1, -1, u_row
            e[P_A], e[P_A_CLS], imm[k, F_A] = s_row[sp - 1], s_cls[sp - 1], s_imm[sp - 1]
            e[P_OP], e[P_P], e[P_P_CLS], imm[k, F_P] = OP_ADD, -1, CLS_BATCH, 1.0
            e[P_B], e[P_B_CLS], imm[k, F_B] = -1, CLS_BATCH, 0.0
            if op == OP_MUL_VAR or op == OP_AXPB:
                kind = (a >> 4) & 3
                e[P_P], e[P_P_CLS] = rows[kind] + (a & 15), (kind + 1) & 3
                if pc == n_code - 2:
                    e[P_OP] = code[pc + 1]
                    e[P_B], e[P_B_CLS], imm[k, F_B] = s_row[sp - 2], s_cls[sp - 2], s_imm[sp - 2]
                elif op == OP_AXPB:
                    imm[k, F_B] = consts[a >> 6]
            else:
                e[P_OP] = op
                e[P_B], e[P_B_CLS], imm[k, F_B] = s_row[sp - 2], s_cls[sp - 2], s_imm[sp - 2]
            k = _fuse_products(plan, imm, k, stack_row)
            return plan[:k + 1], imm[:k + 1], CLS_SYN
        if op == OP_CONST:
            s_row[sp], s_cls[sp], s_imm[sp] = -1, CLS_BATCH, consts[a]
            sp += 1
            continue
        if op <= OP_LOAD_TRIAL:
            kind = op - OP_LOAD_PRE
            s_row[sp], s_cls[sp], s_imm[sp] = rows[kind] + a, (kind + 1) & 3, 0.0
            sp += 1
            continue
        e = plan[k]
        if op < 20 or op >= OP_MUL_VAR:  # binary: dst (the second operand's position) = op(a, b)
            if op < 20:
                sp -= 1
                ar, ca, ai = s_row[sp], s_cls[sp], s_imm[sp]
                bop = op
            elif op == OP_MUL_CONST:
                ar, ca, ai = -1, CLS_BATCH, consts[a]
                bop = OP_MUL
            else:
                kind = (a >> 4) & 3
                ar, ca, ai = rows[kind] + (a & 15), (kind + 1) & 3, 0.0
                bop = OP_MUL if op == OP_MUL_VAR else OP_AXPB
                if op == OP_AXPB:
                    imm[k, F_C] = consts[a >> 6]
            top = sp - 1
            e[P_KIND], e[P_OP], e[P_DST], e[P_CLS] = K_BINARY, bop, stack_row + top, ca | s_cls[top]
            e[P_A], e[P_A_CLS], imm[k, F_A] = ar, ca, ai
            e[P_B], e[P_B_CLS], imm[k, F_B] = s_row[top], s_cls[top], s_imm[top]
        else:  # unary, dst = op(a)
            top = sp - 1
            e[P_KIND], e[P_OP], e[P_DST], e[P_CLS] = K_UNARY, op, stack_row + top, s_cls[top]
            e[P_A], e[P_A_CLS], imm[k, F_A] = s_row[top], s_cls[top], s_imm[top]
        s_row[top], s_cls[top], s_imm[top] = e[P_DST], e[P_CLS], 0.0
        k += 1
    cls = s_cls[0]
    if w_row >= 0 or s_row[0] != stack_row:  # the update of a result no operation fuses with, or the result
        e = plan[k]                           # still a reference: copied to the stack's first row
        e[P_A], e[P_A_CLS], imm[k, F_A] = s_row[0], cls, s_imm[0]
        if w_row >= 0:
            e[P_KIND], e[P_OP], e[P_DST], e[P_CLS], e[P_Q], e[P_Q_CLS] = K_UPDATE, OP_ADD, w_row, CLS_SYN, -1, -1
            e[P_U] = u_row
            e[P_P], e[P_P_CLS], imm[k, F_P] = -1, CLS_BATCH, 1.0
            e[P_B], e[P_B_CLS], imm[k, F_B] = -1, CLS_BATCH, 0.0
        else:
            e[P_KIND], e[P_OP], e[P_DST], e[P_CLS] = K_UNARY, OP_COPY, stack_row, cls
        k += 1
    return plan[:k], imm[:k], cls


@njit(cache=True, nogil=True)
def swap_rows(plan, r1, r2):
    """A copy of a plan with rows r1 and r2 exchanged wherever an entry names them (the plan of the
    next step when the weights alternate between two rows)."""
    out = plan.copy()
    for k in range(plan.shape[0]):
        for c in (P_DST, P_A, P_B, P_P, P_Q, P_U):
            v = plan[k, c]
            out[k, c] = r2 if v == r1 else (r1 if v == r2 else v)
    return out


@njit(cache=True, fastmath=_BINARY_MATH, nogil=True, inline="always")
def _row_at(mem_at, n_cols, row0_at, row):
    """The address of a row of the memory at mem_at (rows of n_cols floats), row 0 at row0_at: a
    simulator's inputs are read where they are, not copied in at every step."""
    return np.int64(row0_at) if row == 0 else mem_at + row * n_cols * 8  # (one integer type: uint64 and
    # int64 unify to float64)


@njit(cache=True, fastmath=_BINARY_MATH, nogil=True, inline="always")
def _operand(mem_at, n_cols, row0_at, row, ocls, value, cls, e, batch, n_in, size):
    """Operand ``row`` (class ocls) over block e of a value of class cls (blocks of ``size``; block e
    belongs to network ``batch``): a run (True, its address, 0.0) or one value (False, 0, the value);
    row < 0: ``value``."""
    if row < 0:
        return False, 0, value
    at = _row_at(mem_at, n_cols, row0_at, row)
    if ocls == cls:
        return True, at + e * size * 8, 0.0
    if ocls == CLS_PRE:  # within a synapse value: the network's inputs
        return True, at + batch * n_in * 8, 0.0
    return False, 0, floats(at, n_cols)[e if ocls == CLS_POST else batch]  # within a synapse value: neuron e


@njit(cache=True, fastmath=_BINARY_MATH, nogil=True)
def _binary(op, c, mem_at, n_cols, row0_at, dr, cls, ar, ca, ai, br, cb, bi, n_batch, n_out, n_in):
    """mem[dr] = op(a, b), a value of class cls from operands of classes ca and cb (rows ar and br, or
    immediates ai and bi; row 0 at row0_at); dr may be br, never ar. Blocks are written last to first: a
    block never overwrites compact input of b not yet read (a lower class's element e sits at or before
    block e)."""
    d_at = _row_at(mem_at, n_cols, row0_at, dr)
    if cls == CLS_SYN:
        n_blocks, size = n_batch * n_out, n_in
    elif cls == CLS_PRE:
        n_blocks, size = n_batch, n_in
    elif cls == CLS_POST:
        n_blocks, size = n_batch, n_out
    else:
        n_blocks, size = 1, n_batch
    if ca == cls and cb == cls and ar >= 0 and br >= 0:  # one pass over the whole row
        n_blocks, size = 1, n_blocks * size
    for e in range(n_blocks - 1, -1, -1):
        batch = e // n_out if cls == CLS_SYN else e
        a_run, ao, sa = _operand(mem_at, n_cols, row0_at, ar, ca, ai, cls, e, batch, n_in, size)
        b_run, bo, sb = _operand(mem_at, n_cols, row0_at, br, cb, bi, cls, e, batch, n_in, size)
        d = floats(d_at + e * size * 8, size)
        if b_run:
            if bo != d_at + e * size * 8:  # b elsewhere (a variable, or compact in this row): into d first
                b = floats(bo, size)
                for j in range(size):
                    d[j] = b[j]
            if a_run:
                _vv(op, c, floats(ao, size), d, size)
            else:
                _sv(op, c, sa, d, size)
        elif a_run:
            _vs(op, c, floats(ao, size), sb, d, size)
        else:
            v = _f(op, c, sa, sb)
            for j in range(size):
                d[j] = v


@njit(cache=True, fastmath=_BINARY_MATH, nogil=True)
def _unary_at(op, mem_at, n_cols, row0_at, dr, ar, ai, m):
    """mem[dr, :m] = op(a) for a row ar (may be dr; row 0 at row0_at) or an immediate ai (ar < 0); OP_COPY:
    a itself."""
    d = floats(_row_at(mem_at, n_cols, row0_at, dr), m)
    if ar < 0:
        for j in range(m):
            d[j] = ai
    elif ar != dr:
        src = floats(_row_at(mem_at, n_cols, row0_at, ar), m)
        for j in range(m):
            d[j] = src[j]
    if op != OP_COPY:
        _unary(op, d, m)


# The fused update's loops: w[j] = u[j] + eta * op(f, b), u the weights before the step and w after (two
# rows, so that an operand that is the weights themselves, as in x*y - w*y**2, does not alias the
# loop's output: LLVM's run-time overlap check would then send the loop down its scalar version), for
# a product f of a run and a value (fs), of two runs (ff) or a value alone (s), and b a run or a value
# (``_b``) or a run times a value (``_gt``); op chosen outside the loops so that they vectorise, a
# subtraction an addition of -1 times b.
@njit(cache=True, fastmath=_BINARY_MATH, nogil=True, inline="always")
def _update_fs(op, eta, u, w, z, f, s, b, n):
    dot, sq = 0.0, 0.0
    if op == OP_MUL:
        for j in range(n):
            v = u[j] + eta * (f[j] * s * b[j])
            w[j] = v
            dot += v * z[j]
            sq += v * v
    else:
        sg = 1.0 if op == OP_ADD else -1.0
        for j in range(n):
            v = u[j] + eta * (f[j] * s + sg * b[j])
            w[j] = v
            dot += v * z[j]
            sq += v * v
    return dot, sq


@njit(cache=True, fastmath=_BINARY_MATH, nogil=True, inline="always")
def _update_ff(op, eta, u, w, z, f, g, b, n):
    dot, sq = 0.0, 0.0
    if op == OP_MUL:
        for j in range(n):
            v = u[j] + eta * (f[j] * g[j] * b[j])
            w[j] = v
            dot += v * z[j]
            sq += v * v
    else:
        sg = 1.0 if op == OP_ADD else -1.0
        for j in range(n):
            v = u[j] + eta * (f[j] * g[j] + sg * b[j])
            w[j] = v
            dot += v * z[j]
            sq += v * v
    return dot, sq


@njit(cache=True, fastmath=_BINARY_MATH, nogil=True, inline="always")
def _update_s(op, eta, u, w, z, s, b, n):
    dot, sq = 0.0, 0.0
    if op == OP_MUL:
        for j in range(n):
            v = u[j] + eta * (s * b[j])
            w[j] = v
            dot += v * z[j]
            sq += v * v
    else:
        sg = 1.0 if op == OP_ADD else -1.0
        for j in range(n):
            v = u[j] + eta * (s + sg * b[j])
            w[j] = v
            dot += v * z[j]
            sq += v * v
    return dot, sq


@njit(cache=True, fastmath=_BINARY_MATH, nogil=True, inline="always")
def _update_fs_b(op, eta, u, w, z, f, s, b, n):
    dot, sq = 0.0, 0.0
    if op == OP_MUL:
        for j in range(n):
            v = u[j] + eta * (f[j] * s * b)
            w[j] = v
            dot += v * z[j]
            sq += v * v
    else:
        sg = 1.0 if op == OP_ADD else -1.0
        for j in range(n):
            v = u[j] + eta * (f[j] * s + sg * b)
            w[j] = v
            dot += v * z[j]
            sq += v * v
    return dot, sq


@njit(cache=True, fastmath=_BINARY_MATH, nogil=True, inline="always")
def _update_ff_b(op, eta, u, w, z, f, g, b, n):
    dot, sq = 0.0, 0.0
    if op == OP_MUL:
        for j in range(n):
            v = u[j] + eta * (f[j] * g[j] * b)
            w[j] = v
            dot += v * z[j]
            sq += v * v
    else:
        sg = 1.0 if op == OP_ADD else -1.0
        for j in range(n):
            v = u[j] + eta * (f[j] * g[j] + sg * b)
            w[j] = v
            dot += v * z[j]
            sq += v * v
    return dot, sq


@njit(cache=True, fastmath=_BINARY_MATH, nogil=True, inline="always")
def _update_fs_gt(op, eta, u, w, z, f, s, g, t, n):
    dot, sq = 0.0, 0.0
    if op == OP_MUL:
        for j in range(n):
            v = u[j] + eta * (f[j] * s * (g[j] * t))
            w[j] = v
            dot += v * z[j]
            sq += v * v
    else:
        sg = 1.0 if op == OP_ADD else -1.0
        for j in range(n):
            v = u[j] + eta * (f[j] * s + sg * g[j] * t)
            w[j] = v
            dot += v * z[j]
            sq += v * v
    return dot, sq


@njit(cache=True, fastmath=_BINARY_MATH, nogil=True, inline="always")
def _update(op, eta, mem_at, n_cols, row0_at, w_row, u_row, p_row, p_cls, pi, a_row, a_cls, ai, b_row, b_cls, bi,
            q_row, q_cls, qi, n_batch, n_out, n_in, z_at, dots_at):
    """mem[w_row] = mem[u_row] + eta * op(p * a, b * q) over the synapses of n_batch networks (op ADD, SUB or
    MUL; rows < 0: the immediates pi, ai, bi, qi; q_cls < 0: no q; with q, b is a run and q one value per
    block); u_row: the weights before the step (whose row operands may be), w_row another row; row 0 at
    row0_at.

    The same pass computes the next step's input to each output, the new weights times the inputs at z_at
    (B * n_in floats, a presynaptic value), into dots_at (B * n_out floats; block e's only after block e's
    operands are read: a per-output operand of block e is element e, so dots_at may be the output's row),
    and returns the sum of the new weights' squares (for the blow-up check): a simulator needs no pass of
    its own over the weights."""
    w_at, u_at = mem_at + w_row * n_cols * 8, mem_at + u_row * n_cols * 8
    dots = floats(dots_at, n_batch * n_out)
    squares = 0.0
    batch, i = 0, 0  # block e's network and neuron (no division per block)
    for e in range(n_batch * n_out):
        w, u = floats(w_at + e * n_in * 8, n_in), floats(u_at + e * n_in * 8, n_in)
        z = floats(z_at + batch * n_in * 8, n_in)
        p_run, po, ps = _operand(mem_at, n_cols, row0_at, p_row, p_cls, pi, CLS_SYN, e, batch, n_in, n_in)
        a_run, ao, a_s = _operand(mem_at, n_cols, row0_at, a_row, a_cls, ai, CLS_SYN, e, batch, n_in, n_in)
        b_run, bo, bs = _operand(mem_at, n_cols, row0_at, b_row, b_cls, bi, CLS_SYN, e, batch, n_in, n_in)
        if q_cls >= 0:  # b * q, b a run, and one of p, a a run
            qs = _operand(mem_at, n_cols, row0_at, q_row, q_cls, qi, CLS_SYN, e, batch, n_in, n_in)[2]
            f = floats(po if p_run else ao, n_in)  # one of p, a a run
            dot, sq = _update_fs_gt(op, eta, u, w, z, f, a_s if p_run else ps, floats(bo, n_in), qs, n_in)
        elif p_run and a_run:
            f, g = floats(po, n_in), floats(ao, n_in)
            if b_run:
                dot, sq = _update_ff(op, eta, u, w, z, f, g, floats(bo, n_in), n_in)
            else:
                dot, sq = _update_ff_b(op, eta, u, w, z, f, g, bs, n_in)
        elif p_run or a_run:
            f = floats(po if p_run else ao, n_in)
            s = a_s if p_run else ps
            if b_run:
                dot, sq = _update_fs(op, eta, u, w, z, f, s, floats(bo, n_in), n_in)
            else:
                dot, sq = _update_fs_b(op, eta, u, w, z, f, s, bs, n_in)
        elif b_run:  # the block's synapses differ through b alone
            dot, sq = _update_s(op, eta, u, w, z, ps * a_s, floats(bo, n_in), n_in)
        else:  # one value for the whole block
            d = eta * _f(op, 0.0, ps * a_s, bs)
            dot, sq = 0.0, 0.0
            for j in range(n_in):
                v = u[j] + d
                w[j] = v
                dot += v * z[j]
                sq += v * v
        dots[e] = dot
        squares += sq
        i += 1
        if i == n_out:
            batch, i = batch + 1, 0
    return squares


@njit(cache=True, fastmath=_BINARY_MATH, nogil=True)
def run_plan(plan_at, imm_at, n_plan, mem_at, n_cols, row0_at, n_batch, n_out, n_in, eta, z_at, dots_at):
    """Run a plan (``compile_plan``; arrays by address, ``_borrow``) on the memory at mem_at (rows of
    n_cols floats) for B = n_batch networks, its row 0 read from row0_at (mem_at itself, or a
    simulator's inputs where they are). A plan that ends with the weight update: eta its learning rate,
    z_at and dots_at as for ``_update`` (the next step's inputs and where their products with the new
    weights go); returns the sum of the new weights' squares (0 without an update)."""
    plan, imm = ints(plan_at, n_plan * N_INT), floats(imm_at, n_plan * N_FLOAT)
    squares = 0.0
    for k in range(n_plan):
        e, f = k * N_INT, k * N_FLOAT
        kind, op, dr, cls = plan[e + P_KIND], plan[e + P_OP], plan[e + P_DST], plan[e + P_CLS]
        if kind == K_BINARY:
            _binary(op, imm[f + F_C], mem_at, n_cols, row0_at, dr, cls, plan[e + P_A], plan[e + P_A_CLS], imm[f + F_A],
                    plan[e + P_B], plan[e + P_B_CLS], imm[f + F_B], n_batch, n_out, n_in)
        elif kind == K_UNARY:
            m = _class_size(cls, n_batch, n_out, n_in)
            if m == 1:  # one network's output (y*y): no call, no loops
                ar = plan[e + P_A]
                q = imm[f + F_A] if ar < 0 else floats(_row_at(mem_at, n_cols, row0_at, ar), 1)[0]
                floats(_row_at(mem_at, n_cols, row0_at, dr), 1)[0] = q if op == OP_COPY else _unary1(op, q)
            else:
                _unary_at(op, mem_at, n_cols, row0_at, dr, plan[e + P_A], imm[f + F_A], m)
        else:
            squares = _update(op, eta, mem_at, n_cols, row0_at, dr, plan[e + P_U], plan[e + P_P], plan[e + P_P_CLS], imm[f + F_P],
                    plan[e + P_A], plan[e + P_A_CLS], imm[f + F_A], plan[e + P_B], plan[e + P_B_CLS], imm[f + F_B],
                    plan[e + P_Q], plan[e + P_Q_CLS], imm[f + F_Q], n_batch, n_out, n_in, z_at, dots_at)
    return squares


@njit(cache=True, fastmath=_BINARY_MATH, nogil=True)
def run_rows(code, arg, consts, mem, rows, n_batch, n_out, n_in):
    """Evaluate one postfix program (already sliced) for every synapse of B networks, leaving the
    result in ``mem[rows[4]]`` in the compact layout of the class it returns (CLS_*).

    mem: float64 (rows, >= B*n_out*n_in) holding the variables and the stack: variable (kind, slot)
    in row ``rows[kind] + slot`` (kinds PRE, POST, SYN, TRIAL; compact layouts (B, n_in), (B, n_out),
    (B, n_out, n_in), (B,)), the stack in rows ``rows[4]`` onwards (program depth rows). rows: int64
    (5,). All arrays C-contiguous. Binary operators take their first operand from the top of the stack
    (``rules.compile_expr`` emits reversed prefix order). Each instruction runs over a whole class
    before the next starts, so interpretation costs per instruction, not per synapse. A simulator that
    runs the same program at every step compiles its plan once (``compile_plan``, ``run_plan``).
    """
    # (the same argument types as the rate simulator's calls, never literals: one compiled version each)
    none = n_batch - n_batch - 1
    plan, imm, cls = compile_plan(code, arg, consts, rows, none, none)
    at = np.int64(mem.ctypes.data)  # (row 0 and the update's addresses: int64, as the simulators pass them)
    run_plan(np.int64(plan.ctypes.data), np.int64(imm.ctypes.data), plan.shape[0], mem.ctypes.data, mem.shape[1],
             at, n_batch, n_out, n_in, 0.0, at, at)
    return cls + plan.size * 0 + imm.size * 0  # the plan lives to here: Numba frees an array after its last use


@njit(cache=True, fastmath=_BINARY_MATH, nogil=True)
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
            _unary(op, stack[sp - 1], n)
    for k in range(n):
        out[k] = stack[0, k]


@njit(cache=True, fastmath=_BINARY_MATH, nogil=True)
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


@njit(cache=True, fastmath=_BINARY_MATH, nogil=True)
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


@njit(cache=True, fastmath=_BINARY_MATH, nogil=True)
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


@njit(cache=True, nogil=True)
def _run_packed(first, step, code, arg, consts, code_start, const_start, depth, pre, post, syn, trial, out):
    """Programs first, first + step, ... (one thread's share) on the same variables, into out[p]."""
    n_pre, n_batch, n_in = pre.shape
    n_post, _, n_out = post.shape
    n_syn, n_trial = syn.shape[0], trial.shape[0]
    n = n_batch * n_out * n_in
    stack_row = n_pre + n_post + n_syn + n_trial
    rows = np.array([0, n_pre, n_pre + n_post, n_pre + n_post + n_syn, stack_row])
    mem = np.empty((stack_row + depth, n))
    for p in range(first, code_start.shape[0] - 1, step):
        for s in range(n_pre):
            for b in range(n_batch):
                for j in range(n_in):
                    mem[s, b * n_in + j] = pre[s, b, j]
        for s in range(n_post):
            for b in range(n_batch):
                for i in range(n_out):
                    mem[n_pre + s, b * n_out + i] = post[s, b, i]
        for s in range(n_syn):
            for k in range(n):
                mem[rows[2] + s, k] = syn[s, k]
        for s in range(n_trial):
            for b in range(n_batch):
                mem[rows[3] + s, b] = trial[s, b]
        c0, c1 = code_start[p], code_start[p + 1]
        k0, k1 = const_start[p], const_start[p + 1]
        # borrowed views, as the simulators pass: run_rows is compiled for one signature only
        cls = run_rows(borrowed(code[c0:c1]), borrowed(arg[c0:c1]), borrowed(consts[k0:k1]), borrowed(mem),
                       borrowed(rows), n_batch, n_out, n_in)
        broadcast_compact(cls, mem, stack_row, n_batch, n_out, n_in, out[p])


@njit(cache=True, fastmath=FASTMATH, nogil=True)
def broadcast_compact(cls, mem, row, n_batch, n_out, n_in, out):
    """The compact value ``mem[row]`` of class ``cls`` laid out per synapse (b, i, j) into out
    (B*n_out*n_in,)."""
    k = 0
    for b in range(n_batch):
        for i in range(n_out):
            for j in range(n_in):
                if cls == CLS_SYN:
                    out[k + j] = mem[row, k + j]
                elif cls == CLS_PRE:
                    out[k + j] = mem[row, b * n_in + j]
                elif cls == CLS_POST:
                    out[k + j] = mem[row, b * n_out + i]
                else:
                    out[k + j] = mem[row, b]
            k += n_in


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
    out = np.empty((packed.n_programs, n_batch * n_out * n_in))
    run_strided(_run_packed, packed.n_programs, packed.code, packed.arg, packed.consts, packed.code_start,
                packed.const_start, packed.depth, pre, post, syn, trial, out)
    return out


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
