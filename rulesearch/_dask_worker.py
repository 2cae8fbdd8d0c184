"""What a Dask worker runs before any rulesearch task: its own Numba cache folder (parallel
writes to one cache crash) and one Numba thread per worker thread.

Numba fixes a kernel's cache folder when the kernel's module is imported, and a worker may have
imported rulesearch before this runs (a spawned worker re-imports the main script), so the
kernels already imported are pointed at the new folder too (none has been compiled yet)."""
from __future__ import annotations

import os
from pathlib import Path

from distributed.diagnostics.plugin import WorkerPlugin


class NumbaPerWorker(WorkerPlugin):
    name = "rulesearch-numba"

    def __init__(self, base: str):
        self.base = base

    def setup(self, worker):
        folder = Path(self.base) / str(worker.name).replace("/", "_").replace(":", "_")
        folder.mkdir(parents=True, exist_ok=True)
        os.environ["NUMBA_CACHE_DIR"] = str(folder)
        os.environ["NUMBA_NUM_THREADS"] = str(max(1, worker.state.nthreads))
        import numba
        numba.config.reload_config()
        worker.rulesearch_numba = {"cache_dir": str(folder), "kernels_moved": _move_caches()}


def _move_caches() -> int:
    """Re-enable caching of every imported rulesearch kernel not yet compiled, so that its cache
    is located under the current NUMBA_CACHE_DIR; returns how many were moved."""
    import sys

    from numba.core.dispatcher import Dispatcher
    moved = 0
    for name, module in list(sys.modules.items()):
        if not name.startswith("rulesearch.") or module is None:
            continue
        for obj in list(vars(module).values()):
            if isinstance(obj, Dispatcher) and not obj.overloads and getattr(obj, "_cache", None) is not None \
                    and type(obj._cache).__name__ == "FunctionCache":
                obj.enable_caching()
                moved += 1
    return moved
