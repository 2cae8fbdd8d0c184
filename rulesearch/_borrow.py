"""Borrowed array views for Numba hot loops: the same memory, without reference counting.

Every array that crosses a function boundary inside a Numba kernel (an inlined helper included)
has its reference count raised and lowered, an atomic operation each time. In a simulation's time
loop that calls the rule VM at every step, those pairs cost more than the rule's arithmetic on a
hundred synapses. A view made by ``numba.carray`` from the data pointer has no reference count, so
passing it around costs nothing. The caller must keep the owning array alive (use it after the
loop) for as long as the view is used.

Even a borrowed view costs something at a call that is not inlined: the callee calls the runtime's
incref on entry and decref on exit for every array argument (a call each, which returns at once
for a view). Hot helpers therefore take addresses (``address``) and rebuild their views inside
(``floats``, ``ints``, ``floats2d``): integers cross the call for free.
"""
from __future__ import annotations

import numba
from numba import njit, types
from numba.extending import intrinsic


@intrinsic
def _pointer_like(typingctx, address, like):
    """The integer ``address`` as a pointer to the element type of ``like``: an array, or a Numba
    number type given as a value (``numba.float64``)."""
    pointer = types.CPointer(like.dtype)

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], context.get_value_type(pointer))

    return pointer(address, like), codegen


@njit(inline="always")
def borrowed(array):
    """A C-contiguous view of ``array`` (which must be C-contiguous) that is not reference counted."""
    return numba.carray(_pointer_like(array.ctypes.data, array), array.shape)


@njit(inline="always")
def address(array, row, offset):
    """The address of ``array[row, offset]`` (array 2-D, C-contiguous) as an integer."""
    return array.ctypes.data + (row * array.shape[1] + offset) * array.itemsize


@njit(inline="always")
def segment(array, row, offset, n):
    """A borrowed 1-D view of ``array[row, offset:offset + n]`` (array 2-D, C-contiguous).

    Loops over such a view index from 0: Numba's wraparound of negative indices then folds away,
    whereas ``array[row, offset + j]`` with a run-time offset keeps LLVM from vectorising."""
    return numba.carray(_pointer_like(address(array, row, offset), array), n)


@njit(inline="always")
def floats(at, n):
    """A 1-D float64 view of n elements at address ``at`` (not reference counted)."""
    return numba.carray(_pointer_like(at, numba.float64), n)


@njit(inline="always")
def ints(at, n):
    """A 1-D int64 view of n elements at address ``at``."""
    return numba.carray(_pointer_like(at, numba.int64), n)


@njit(inline="always")
def floats2d(at, rows, cols):
    """A 2-D C-contiguous float64 view (rows, cols) at address ``at``."""
    return numba.carray(_pointer_like(at, numba.float64), (rows, cols))
