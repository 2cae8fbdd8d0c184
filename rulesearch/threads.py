"""Spread a population over threads without Numba's parallel compiler.

A ``prange`` kernel costs its first use several seconds of compilation (the parallel-loop
pipeline: about 5 s for the rate simulator, a third of its cold start). The work per individual
is already a compiled function that releases the GIL (``nogil=True``), so plain Python threads run
individuals side by side just as well: thread k takes individuals k, k + T, k + 2T, ... (strided,
since rules that blow up stop early and would unbalance contiguous blocks). The number of threads
is Numba's (``NUMBA_NUM_THREADS``, ``numba.set_num_threads``).
"""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import numba

_pool: ThreadPoolExecutor | None = None
_lock = threading.Lock()


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=numba.config.NUMBA_NUM_THREADS,
                                       thread_name_prefix="rulesearch")
        return _pool


def run_strided(kernel: Callable, n_items: int, *args) -> None:
    """Call ``kernel(first, step, *args)`` once per thread, ``first`` = 0..T-1 and ``step`` = T, so
    that the threads share items 0..n_items-1; T = min(numba.get_num_threads(), n_items). The
    kernel writes its results into arrays among ``args`` (disjoint items per thread)."""
    threads = 1 if n_items <= 1 else min(numba.get_num_threads(), n_items)  # (asking costs a microsecond)
    if threads == 1:
        kernel(0, 1, *args)
        return
    futures = [_executor().submit(kernel, k, threads, *args) for k in range(1, threads)]
    kernel(0, threads, *args)  # the calling thread takes a share too
    for f in futures:
        f.result()
