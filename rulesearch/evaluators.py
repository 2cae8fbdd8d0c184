"""The evaluator seam: packed population in, losses out.

A search only calls ``evaluator(packed) -> Evaluation``. The local evaluator runs
the task's Numba simulator on this machine's threads; a distributed evaluator
ships the same arrays (``PackedPrograms`` and a picklable ``Task``) elsewhere.
"""
from __future__ import annotations

import os

import numba

from .tasks import Evaluation, Task
from .vm import PackedPrograms


def available_workers() -> int:
    return numba.config.NUMBA_NUM_THREADS


class LocalEvaluator:
    """Evaluate populations on ``workers`` threads of this machine (default: all cores)."""

    def __init__(self, task: Task, workers: int | None = None):
        limit = available_workers()
        if workers is not None and not 1 <= workers <= limit:
            raise ValueError(f"--workers {workers}: expected 1..{limit} (cores available: {os.cpu_count()})")
        self.task = task
        self.workers = workers or limit

    def __call__(self, packed: PackedPrograms) -> Evaluation:
        previous = numba.get_num_threads()
        numba.set_num_threads(self.workers)
        try:
            return self.task.evaluate_packed(packed)
        finally:
            numba.set_num_threads(previous)
