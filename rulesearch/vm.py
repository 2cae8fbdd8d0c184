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
one array; the rate simulator and ``evaluate``), ``run_program`` (every value laid
out per synapse; the choice and spiking simulators, to be ported), ``run_program_at``
(one synapse) and ``run_program_tangents`` (forward-mode derivatives in x, y, w).
All give the same values (tested against each other and against sympy).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from numba import njit

from ._borrow import address, borrowed, floats, floats2d, ints, segment
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


# The row VM (``run_rows``): every value, the simulator's variables and the stack alike, is a row of
# one 2-D array ``mem``, addressed by its row index. Slicing a row view per instruction, or passing
# arrays to a helper, costs reference counting that at a hundred synapses outweighs the arithmetic:
# the helpers that are not inlined take addresses and lengths (``_borrow``), never arrays.
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


@njit(cache=True, fastmath=_BINARY_MATH, nogil=True)
def _run_run(op, c, a_at, b_at, n):
    """b[:n] = op(a[:n], b[:n]) for the n floats at addresses a_at and b_at (not overlapping)."""
    _vv(op, c, floats(a_at, n), floats(b_at, n), n)


@njit(cache=True, fastmath=_BINARY_MATH, nogil=True)
def _scalar_run(op, c, s, b_at, n):
    """b[:n] = op(s, b[:n]) for the n floats at address b_at."""
    _sv(op, c, s, floats(b_at, n), n)


@njit(cache=True, fastmath=_BINARY_MATH, nogil=True)
def _run_scalar(op, c, a_at, s, d_at, n):
    """d[:n] = op(a[:n], s) for the n floats at addresses a_at and d_at (not overlapping)."""
    _vs(op, c, floats(a_at, n), s, floats(d_at, n), n)


# The loops themselves, the operator chosen outside them so that they vectorise; inlined into the
# helpers above (one call per row) and into _run_blocks (one call for many short blocks).
@njit(cache=True, fastmath=_BINARY_MATH, nogil=True, inline="always")
def _vv(op, c, a, b, n):
    """b[:n] = op(a[:n], b[:n]) (views that do not overlap)."""
    if op == OP_MUL:
        for j in range(n):
            b[j] = a[j] * b[j]
    elif op == OP_ADD:
        for j in range(n):
            b[j] = a[j] + b[j]
    elif op == OP_SUB:
        for j in range(n):
            b[j] = a[j] - b[j]
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
    elif op == OP_ADD:
        for j in range(n):
            b[j] = s + b[j]
    elif op == OP_SUB:
        for j in range(n):
            b[j] = s - b[j]
    elif op == OP_AXPB:
        for j in range(n):
            b[j] = c + s * b[j]
    else:
        for j in range(n):
            q = b[j]
            b[j] = s / q if abs(q) > DIV_EPS else 0.0


@njit(cache=True, fastmath=_BINARY_MATH, nogil=True, inline="always")
def _vs(op, c, a, s, d, n):
    """d[:n] = op(a[:n], s) (views that do not overlap)."""
    if op == OP_MUL:
        for j in range(n):
            d[j] = a[j] * s
    elif op == OP_ADD:
        for j in range(n):
            d[j] = a[j] + s
    elif op == OP_SUB:
        for j in range(n):
            d[j] = a[j] - s
    elif op == OP_AXPB:
        for j in range(n):
            d[j] = c + a[j] * s
    else:
        ok = abs(s) > DIV_EPS
        for j in range(n):
            d[j] = a[j] / s if ok else 0.0


@njit(cache=True, fastmath=_BINARY_MATH, nogil=True, inline="always")
def _rows_binary(op, c, mem, ar, ca, br, cb, n_batch, n_out, n_in):
    """mem[br] = op(mem[ar], mem[br]) for compact values of classes ca and cb (ar != br); returns the
    result's class. Output blocks are written last to first: a block never overwrites compact input
    of b not yet read (a lower class's element e sits at or before block e)."""
    cls = ca | cb
    if cls == CLS_SYN:
        n_blocks, size = n_batch * n_out, n_in
    elif cls == CLS_PRE:
        n_blocks, size = n_batch, n_in
    elif cls == CLS_POST:
        n_blocks, size = n_batch, n_out
    else:
        n_blocks, size = 1, n_batch
    if ca == cls and cb == cls:  # the common case: one pass over the whole row
        n = n_blocks * size
        _run_run(op, c, address(mem, ar, 0), address(mem, br, 0), n)
        return cls
    if n_blocks > 1:  # one call for all blocks: a call per block costs more than a block of a few synapses
        _run_blocks(op, c, mem.ctypes.data, mem.shape[0], mem.shape[1], ar, ca, br, cb, cls, n_blocks, size, n_out,
                    n_in)
        return cls
    for e in range(n_blocks - 1, -1, -1):
        batch = e // n_out if cls == CLS_SYN else e
        base = e * size
        a_run = ca == cls or ca == CLS_PRE  # else one value repeated over the block
        ao = base if ca == cls else batch * n_in
        if cb == cls:
            if a_run:
                _run_run(op, c, address(mem, ar, ao), address(mem, br, base), size)
            else:
                _scalar_run(op, c, mem[ar, e] if ca == CLS_POST else mem[ar, batch], address(mem, br, base), size)
        elif cb != CLS_PRE:  # b is one value over the block: read it, then overwrite
            sb = mem[br, e] if cb == CLS_POST else mem[br, batch]
            _run_scalar(op, c, address(mem, ar, ao), sb, address(mem, br, base), size)
        else:  # b a run of presynaptic values at another offset of its own row (n_out > 1: rare)
            bo = batch * n_in
            sa = 0.0 if a_run else (mem[ar, e] if ca == CLS_POST else mem[ar, batch])
            for j in range(size):
                mem[br, base + j] = _f(op, c, mem[ar, ao + j] if a_run else sa, mem[br, bo + j])
    return cls


@njit(cache=True, fastmath=_BINARY_MATH, nogil=True)
def _run_blocks(op, c, mem_at, n_rows, n_cols, ar, ca, br, cb, cls, n_blocks, size, n_out, n_in):
    """``_rows_binary`` over several blocks, one operand repeated over them (memory by address)."""
    mem = floats(mem_at, (n_rows, n_cols))
    for e in range(n_blocks - 1, -1, -1):
        batch = e // n_out if cls == CLS_SYN else e
        base = e * size
        a_run = ca == cls or ca == CLS_PRE
        ao = base if ca == cls else batch * n_in
        if cb == cls:
            if a_run:
                _vv(op, c, segment(mem, ar, ao, size), segment(mem, br, base, size), size)
            else:
                _sv(op, c, mem[ar, e] if ca == CLS_POST else mem[ar, batch], segment(mem, br, base, size), size)
        elif cb != CLS_PRE:
            sb = mem[br, e] if cb == CLS_POST else mem[br, batch]
            _vs(op, c, segment(mem, ar, ao, size), sb, segment(mem, br, base, size), size)
        else:
            bo = batch * n_in
            sa = 0.0 if a_run else (mem[ar, e] if ca == CLS_POST else mem[ar, batch])
            for j in range(size):
                mem[br, base + j] = _f(op, c, mem[ar, ao + j] if a_run else sa, mem[br, bo + j])


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
def _class_size(cls, n_batch, n_out, n_in):
    if cls == CLS_SYN:
        return n_batch * n_out * n_in
    if cls == CLS_PRE:
        return n_batch * n_in
    if cls == CLS_POST:
        return n_batch * n_out
    return n_batch


@njit(cache=True, fastmath=_BINARY_MATH, nogil=True, inline="always")
def run_rows(code, arg, consts, mem, rows, n_batch, n_out, n_in):
    """Evaluate one postfix program (already sliced) for every synapse of B networks, leaving the
    result in ``mem[stack_row]`` in the compact layout of the class it returns (CLS_*).

    mem: float64 (rows, >= B*n_out*n_in) holding the variables and the stack: variable (kind, slot)
    in row ``rows[kind] + slot`` (kinds PRE, POST, SYN, TRIAL; compact layouts (B, n_in), (B, n_out),
    (B, n_out, n_in), (B,)), the stack in rows ``rows[4]`` onwards (program depth rows). rows: int64
    (5,), an array rather than constants so that one compiled version serves every simulator. All
    arrays C-contiguous. Binary operators take their first operand from the top of the stack
    (``rules.compile_expr`` emits reversed prefix order). Each instruction runs over a whole class
    before the next starts, so interpretation costs per instruction, not per synapse.
    """
    return _run_rows(code.ctypes.data, arg.ctypes.data, code.shape[0], consts.ctypes.data, consts.shape[0],
                     mem.ctypes.data, mem.shape[0], mem.shape[1], rows.ctypes.data, n_batch, n_out, n_in)


@njit(cache=True, fastmath=_BINARY_MATH, nogil=True)
def _run_rows(code_at, arg_at, n_code, consts_at, n_consts, mem_at, n_rows, n_cols, rows_at, n_batch, n_out, n_in):
    """run_rows on arrays given by address (``_borrow``: no reference counting at the call)."""
    code, arg, consts = ints(code_at, n_code), ints(arg_at, n_code), floats(consts_at, n_consts)
    mem, rows = floats2d(mem_at, n_rows, n_cols), ints(rows_at, 5)
    stack_row = rows[4]
    classes = 0  # 2 bits per stack entry
    sp = 0
    for pc in range(code.shape[0]):
        op = code[pc]
        a = arg[pc]
        if op <= OP_CONST:
            r = stack_row + sp
            if op == OP_CONST:
                cls = CLS_BATCH
                v = consts[a]
                for k in range(n_batch):
                    mem[r, k] = v
            else:
                kind = op - OP_LOAD_PRE
                cls = (kind + 1) & 3  # PRE, POST, SYN, TRIAL -> CLS_PRE, CLS_POST, CLS_SYN, CLS_BATCH
                m = _class_size(cls, n_batch, n_out, n_in)
                dst, src = segment(mem, r, 0, m), segment(mem, rows[kind] + a, 0, m)
                for k in range(m):
                    dst[k] = src[k]
            classes = (classes & ~(3 << (2 * sp))) | (cls << (2 * sp))
            sp += 1
        elif op == OP_MUL_CONST:  # top = const * top
            m = _class_size((classes >> (2 * (sp - 1))) & 3, n_batch, n_out, n_in)
            top = segment(mem, stack_row + sp - 1, 0, m)
            v = consts[a]
            for k in range(m):
                top[k] *= v
        elif op < 20 or op >= OP_MUL_VAR:
            if op < 20:  # binary: first operand on top
                sp -= 1
                ar, ca = stack_row + sp, (classes >> (2 * sp)) & 3
                bop, c = op, 0.0
            else:  # top = v * top, c + v * top for a variable v
                kind = (a >> 4) & 3
                ar, ca = rows[kind] + (a & 15), (kind + 1) & 3
                bop = OP_MUL if op == OP_MUL_VAR else OP_AXPB
                c = consts[a >> 6] if op == OP_AXPB else 0.0
            top = sp - 1
            cb = (classes >> (2 * top)) & 3
            cls = _rows_binary(bop, c, mem, ar, ca, stack_row + top, cb, n_batch, n_out, n_in)
            classes = (classes & ~(3 << (2 * top))) | (cls << (2 * top))
        else:
            m = _class_size((classes >> (2 * (sp - 1))) & 3, n_batch, n_out, n_in)
            _unary(op, segment(mem, stack_row + sp - 1, 0, m), m)
    return classes & 3


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
