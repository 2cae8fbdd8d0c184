"""The evaluator seam: packed population in, losses (or metrics) out.

A search only calls ``evaluator(packed) -> Evaluation``; the family filter calls
``evaluator.metrics(packed) -> {metric: (n_individuals,)}``. ``LocalEvaluator`` runs the task's
Numba simulator on this machine's threads; ``DaskEvaluator`` splits the population into chunks
of individuals and evaluates them on the workers of a Dask cluster (a ``LocalCluster`` of worker
processes, or a running scheduler), joining the losses in order. Every individual's loss depends
only on its own programs and the task, so the result never depends on how the population was
chunked or which worker ran which chunk.
"""
from __future__ import annotations

import logging
import os
import time
from concurrent.futures import CancelledError
from pathlib import Path
from typing import Callable

import numba
import numpy as np

from .tasks import Evaluation, Task, pack_rules
from .vm import PackedPrograms, individuals

EVALUATORS = ("local", "dask")
CHUNKS_PER_WORKER = 2  # chunks per worker thread and population: a slow chunk delays a generation less
CONNECT_TIMEOUT_S = 10
CHUNK_ATTEMPTS = 4  # rounds of resubmitting chunks lost with a worker before the cluster counts as lost


def available_workers() -> int:
    return numba.config.NUMBA_NUM_THREADS


class EvaluatorError(ValueError):
    """The evaluator cannot run or lost its cluster (the message says why and what to do)."""


class LocalEvaluator:
    """Evaluate populations on ``workers`` threads of this machine (default: all cores)."""

    name = "local"

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

    def metrics(self, packed: PackedPrograms) -> dict[str, np.ndarray]:
        """The simulator's metrics per individual (``Task.metrics``) on this machine's threads."""
        previous = numba.get_num_threads()
        numba.set_num_threads(self.workers)
        try:
            return self.task.metrics(packed)
        finally:
            numba.set_num_threads(previous)

    def describe(self) -> dict:
        return {"evaluator": "local", "workers": self.workers}

    def close(self) -> None:
        pass


# ---------------------------------------------------------------- Dask

def _evaluate_chunk(task: Task, packed: PackedPrograms) -> tuple[np.ndarray, np.ndarray]:
    """On a worker: the chunk's losses, with as many Numba threads as the worker has threads
    (more would compete with the machine's other worker processes)."""
    from distributed import get_worker
    numba.set_num_threads(max(1, min(get_worker().state.nthreads, numba.config.NUMBA_NUM_THREADS)))
    result = task.evaluate_packed(packed)
    return result.losses, result.blown


def _metrics_chunk(task: Task, packed: PackedPrograms) -> dict:
    """On a worker: the chunk's metrics (as ``_evaluate_chunk``)."""
    from distributed import get_worker
    numba.set_num_threads(max(1, min(get_worker().state.nthreads, numba.config.NUMBA_NUM_THREADS)))
    return task.metrics(packed)


def _default_cache() -> str:
    return str(Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "rulesearch" / "numba-workers")


class DaskEvaluator:
    """Evaluate populations on a Dask cluster: ``scheduler`` (an address such as
    ``tcp://host:8786``) or, without one, a ``LocalCluster`` of ``workers`` processes with one
    thread each. The task is sent to every worker once (``scatter``, broadcast); each worker
    compiles the kernels once (a warm-up evaluation) in its own Numba cache folder. Chunks lost with
    a worker are submitted again (``CHUNK_ATTEMPTS`` rounds). ``on_chunk(done, total)`` is called as
    chunks finish."""

    name = "dask"

    def __init__(self, task: Task, scheduler: str | None = None, workers: int | None = None,
                 on_chunk: Callable[[int, int], None] | None = None, cache_dir: str | None = None):
        try:
            from distributed import Client, LocalCluster
        except ImportError:
            raise EvaluatorError("--evaluator dask needs Dask's distributed scheduler: "
                                 "pip install 'rulesearch[dask]'") from None
        if workers is not None and workers < 1:
            raise ValueError(f"--workers {workers}: expected at least 1 worker process")
        self.task, self.scheduler, self.on_chunk = task, scheduler, on_chunk
        self._cluster = None
        # the client's own tracebacks while it tries to reconnect would bury the one line that says
        # what happened and what to do (EvaluatorError); they are silenced while rulesearch uses it
        self._logs = {n: logging.getLogger(n) for n in ["distributed"] + [
            n for n in logging.root.manager.loggerDict if n.startswith("distributed.")]}
        self._log_levels = {n: log.level for n, log in self._logs.items()}
        for log in self._logs.values():
            log.setLevel(logging.CRITICAL)
        if scheduler is None:
            self._cluster = LocalCluster(n_workers=workers or available_workers(), threads_per_worker=1,
                                         processes=True, dashboard_address=None, silence_logs=40)
            self.client = Client(self._cluster)
        else:
            try:
                self.client = Client(scheduler, timeout=CONNECT_TIMEOUT_S)
            except (OSError, TimeoutError, ValueError) as exc:
                self._restore_logs()
                raise EvaluatorError(f"--scheduler {scheduler}: cannot connect to a Dask scheduler there "
                                     f"({type(exc).__name__}: {exc})") from None
        try:
            from ._dask_worker import NumbaPerWorker
            self.client.register_plugin(NumbaPerWorker(cache_dir or _default_cache()))
            info = self.client.scheduler_info()["workers"]
            if not info:
                raise EvaluatorError(f"--scheduler {scheduler}: the scheduler has no workers")
            self.workers = sum(w["nthreads"] for w in info.values())
            self._task = self.client.scatter(task, broadcast=True)
            # warm-up: every worker compiles the kernels before the first generation
            probe = task.parse("; ".join(f"{n}: 0" for n in task.space.names) if task.space.multi else "0")
            warm = pack_rules([probe])
            self.client.gather([self.client.submit(_evaluate_chunk, self._task, warm, workers=[addr],
                                                   allow_other_workers=False, pure=False) for addr in info])
        except BaseException:
            self.close()
            raise

    def __call__(self, packed: PackedPrograms) -> Evaluation:
        parts = self._map(_evaluate_chunk, packed)
        return Evaluation(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))

    def metrics(self, packed: PackedPrograms) -> dict[str, np.ndarray]:
        """The simulator's metrics per individual, chunks on the cluster's workers, joined in order."""
        parts = self._map(_metrics_chunk, packed)
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def _map(self, fn, packed: PackedPrograms) -> list:
        """``fn(task, chunk)`` over chunks of individuals on the workers; the results in chunk order."""
        from concurrent.futures import CancelledError

        from distributed import KilledWorker, as_completed
        n = packed.n_individuals
        n_chunks = max(1, min(n, CHUNKS_PER_WORKER * self.workers))
        bounds = np.linspace(0, n, n_chunks + 1).round().astype(int)
        chunks = [individuals(packed, a, b) for a, b in zip(bounds[:-1], bounds[1:])]
        results: dict[int, tuple] = {}
        lost = (OSError, TimeoutError, CancelledError, KilledWorker)
        for attempt in range(CHUNK_ATTEMPTS):
            todo = [k for k in range(len(chunks)) if k not in results]
            try:
                futures = {self.client.submit(fn, self._task, chunks[k], pure=False, retries=2): k
                           for k in todo}
            except lost as exc:
                raise EvaluatorError(f"lost the Dask scheduler ({self.scheduler or 'the local cluster'}): "
                                     f"{type(exc).__name__}; the last checkpoint is intact: continue with --resume "
                                     "DIR (with --evaluator local or another --scheduler)") from None
            try:
                for future in as_completed(futures):
                    try:
                        results[futures[future]] = future.result()
                    except lost:  # the chunk's worker died, or its data went with it: computed again
                        continue
                    if self.on_chunk is not None:
                        self.on_chunk(len(results), len(chunks))
            except KeyboardInterrupt:  # a second Ctrl-C: no chunk of this generation is waited for
                self.client.cancel(list(futures))
                raise
            if len(results) == len(chunks):
                break
            self._recover(attempt)
        else:
            where = self.scheduler or "the local cluster"
            raise EvaluatorError(f"lost the Dask scheduler or its workers ({where}) during an evaluation "
                                 f"({len(chunks) - len(results)} chunk(s) failed {CHUNK_ATTEMPTS} times); the last "
                                 "checkpoint is intact: continue with --resume DIR (with --evaluator local or "
                                 "another --scheduler)")
        return [results[k] for k in range(len(chunks))]

    def _recover(self, attempt: int) -> None:
        """After failed chunks: give up at once if the scheduler is gone; else wait a moment and send
        the task again if no worker holds it any more."""
        if self.client.status != "running":
            raise EvaluatorError(f"lost the Dask scheduler ({self.scheduler or 'the local cluster'}) during an "
                                 "evaluation; the last checkpoint is intact: continue with --resume DIR (with "
                                 "--evaluator local or another --scheduler)")
        time.sleep(min(2.0 ** attempt, 10.0))
        try:
            try:
                held = self.client.who_has(self._task).get(self._task.key, ())
            except CancelledError:  # the scattered task went with the workers that held it
                held = ()
            if not held:
                self._task = self.client.scatter(self.task, broadcast=True)
        except Exception as exc:  # noqa: BLE001 - the scheduler does not answer
            raise EvaluatorError(f"lost the Dask scheduler ({self.scheduler or 'the local cluster'}) during an "
                                 f"evaluation ({type(exc).__name__}); the last checkpoint is intact: continue with "
                                 "--resume DIR (with --evaluator local or another --scheduler)") from None

    def describe(self) -> dict:
        return {"evaluator": "dask", "scheduler": self.scheduler, "workers": self.workers}

    def close(self) -> None:
        try:
            self.client.close()
        except Exception:  # noqa: BLE001 - a client whose scheduler is gone may fail to close
            pass
        if self._cluster is not None:
            self._cluster.close()
        self._restore_logs()

    def _restore_logs(self) -> None:
        for n, log in self._logs.items():
            log.setLevel(self._log_levels[n])


def make_evaluator(task: Task, evaluator: str = "local", workers: int | None = None, scheduler: str | None = None,
                   on_chunk: Callable[[int, int], None] | None = None):
    """The evaluator named ``evaluator`` ("local" or "dask") for ``task``."""
    if evaluator not in EVALUATORS:
        raise ValueError(f"Invalid evaluator {evaluator!r}. Valid options: {', '.join(EVALUATORS)}")
    if evaluator == "local":
        if scheduler is not None:
            raise ValueError("--scheduler is for --evaluator dask")
        return LocalEvaluator(task, workers)
    return DaskEvaluator(task, scheduler, workers, on_chunk)
